#!/usr/bin/env python3
"""Soak benchmark: a long-running ``serve`` keeps its embedded store bounded, and its memory flat.

Runs ``python -m safety_governor serve`` (fast mode, steady traffic without faults:
``--storyline none``) with accelerated traffic (``--rate``, default 400 requests
a second, about 17x the dashboard's 24) and a short retention (``LOG_RETENTION_HOURS``, default
0.08 h = 288 s), for ``--seconds`` (600). Every ``--every`` seconds it samples the store file,
its ``-wal`` file and the process's RSS (``/proc/<pid>/status``: all of it, and the anonymous
part, since the store's memory-mapped pages count in RSS too) and prints a row. The file grows
while the retention window fills, then levels off: the last third of the run must grow by less
than 10 % of what the first third grew. Then SIGTERM: the service drains and must exit 0.

Usage: python bench/bench_soak.py [--seconds 600] [--rate 400] [--retention-hours 0.08] [--every 30]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from machine import describe_machine  # noqa: E402


def rss_mb(pid: int) -> tuple[float, float]:
    """(RSS, its anonymous part) in MB; the rest is file pages, mostly the store's memory map."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "RssAnon"):
            values[name] = int(rest.split()[0]) / 1024
    return values.get("VmRSS", 0.0), values.get("RssAnon", 0.0)


def size_mb(path: Path) -> float:
    try:
        return path.stat().st_size / 1e6
    except FileNotFoundError:
        return 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--rate", type=float, default=400.0, help="simulated requests per second")
    parser.add_argument("--retention-hours", type=float, default=0.08)
    parser.add_argument("--every", type=float, default=30.0, help="seconds between samples")
    args = parser.parse_args()
    print(describe_machine())
    out = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    db = out / "governor.db"
    env = {**os.environ, "GOVERNOR_OUTPUT_DIR": str(out), "LOG_RETENTION_HOURS": str(args.retention_hours)}
    env.pop("GOVERNOR_STORE_PATH", None)
    proc = subprocess.Popen([sys.executable, "-m", "safety_governor", "serve", "--storyline", "none",
                             "--rate", str(args.rate)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    print(f"serve pid {proc.pid}: {args.rate:g} req/s, retention {args.retention_hours:g} h "
          f"({args.retention_hours * 3600:.0f} s), {args.seconds:.0f} s; store {db}")
    print(f"{'t (s)':>6} {'db MB':>8} {'wal MB':>7} {'RSS MB':>7} {'anon MB':>8}")
    samples: list[tuple[float, float, float, float, float]] = []
    start = time.monotonic()
    try:
        while True:
            t = time.monotonic() - start
            if proc.poll() is not None:
                print(f"serve exited early ({proc.returncode}): {proc.stderr.read() if proc.stderr else ''}")
                return 1
            row = (t, size_mb(db), size_mb(db.with_name(db.name + "-wal")), *rss_mb(proc.pid))
            samples.append(row)
            print(f"{row[0]:6.0f} {row[1]:8.1f} {row[2]:7.1f} {row[3]:7.1f} {row[4]:8.1f}", flush=True)
            if t >= args.seconds:
                break
            time.sleep(min(args.every, max(0.0, args.seconds - t)))
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        code = proc.wait(120)
    third = len(samples) // 3
    first_growth = samples[third][1] - samples[0][1]
    last_growth = samples[-1][1] - samples[-third - 1][1]
    levelled = last_growth < 0.1 * max(first_growth, 0.01)
    rss = [s[3] for s in samples[1:]]
    anon = [s[4] for s in samples[1:]]
    print(f"store: grew {first_growth:.1f} MB in the first third, {last_growth:+.1f} MB in the last third: "
          f"{'levelled off' if levelled else 'STILL GROWING'}; -wal at most {max(s[2] for s in samples):.1f} MB")
    print(f"RSS: {min(rss):.0f}-{max(rss):.0f} MB over the run (start {rss[0]:.0f}, end {rss[-1]:.0f}), of which "
          f"anonymous {min(anon):.0f}-{max(anon):.0f} MB (start {anon[0]:.0f}, end {anon[-1]:.0f}; the rest is the "
          f"store's memory-mapped file pages); SIGTERM exit code {code}")
    return 0 if levelled and code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
