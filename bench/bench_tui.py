#!/usr/bin/env python3
"""Benchmark the dashboard: CPU of the TUI process idle and busy, and frame build time.

* CPU and peak RSS: ``demo_rich_agentic.py`` runs in a pseudo-terminal (so it draws its real dashboard at
  the given size) and its user+system CPU time is read from ``/proc/<pid>/stat`` over the
  measurement window, after a warm-up. *idle* is steady telemetry and no faults
  (``--storyline none``); *busy* is the default storyline with the scripted on-call
  (``--autopilot``): detection, gating, approvals, execution, verification and learning. The
  headless service (``python -m safety_governor serve``) is measured beside it in the same
  conditions, so the cost of the view is the difference.
* Frames: one ``DashboardState`` with 1,000 incidents in the history is rendered the way
  ``Live`` does it (a terminal console with colours, writing to a buffer), at 80x24, 160x48
  and 240x70; median and 95th percentile.

Targets (issue 4): <= 5 % of one core idle, <= 15 ms per frame.
Usage: python bench/bench_tui.py [--seconds 30] [--warmup 5] [--width 160 --height 48] [--frames-only]
"""

from __future__ import annotations

import argparse
import fcntl
import io
import os
import pty
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from machine import describe_machine  # noqa: E402
from rich.console import Console  # noqa: E402

from safety_governor.tui.dashboard import Dashboard  # noqa: E402
from safety_governor.tui.state import (  # noqa: E402
    DashboardState,
    IncidentView,
    Integration,
    LogLine,
    Metrics,
    Reasoning,
    ServiceRate,
    TelemetryView,
    ThreadEntry,
    WorkerView,
)
from safety_governor.tui.theme import THEME  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14 and 15 of stat)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure_cpu(args: list[str], seconds: float, warmup: float, width: int, height: int,
                command: tuple[str, ...] = ("demo_rich_agentic.py",)) -> dict[str, float]:
    """CPU share of one core used by the dashboard process in a pty of ``width`` x ``height``
    (``command``: the headless service instead, ``-m safety_governor serve``), and its peak RSS."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))
    out = tempfile.mkdtemp(prefix="bench-tui-")
    env = {**os.environ, "GOVERNOR_OUTPUT_DIR": out, "TERM": "xterm-256color", "COLUMNS": str(width),
           "LINES": str(height)}
    script = [str(ROOT / command[0]), *command[1:]] if command[0].endswith(".py") else list(command)
    proc = subprocess.Popen([sys.executable, *script, *args,
                             "--duration", str(warmup + seconds + 5)],
                            stdin=slave, stdout=slave, stderr=slave, cwd=ROOT, env=env, start_new_session=True)
    os.close(slave)
    written = [0]
    done = threading.Event()

    def drain() -> None:  # the terminal must be read, or the dashboard would block writing
        while not done.is_set():
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    written[0] += len(os.read(master, 65536))
                except OSError:
                    return

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        time.sleep(warmup)
        cpu0, bytes0, t0 = cpu_seconds(proc.pid), written[0], time.monotonic()
        time.sleep(seconds)
        cpu1, bytes1, t1 = cpu_seconds(proc.pid), written[0], time.monotonic()
        peak = peak_rss_mb(proc.pid)
    finally:
        try:
            os.write(master, b"q")
            if command[0] != "demo_rich_agentic.py":
                proc.send_signal(signal.SIGTERM)  # serve drains and exits 0
            proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait(5)
        done.set()
        reader.join(2)
        os.close(master)
        shutil.rmtree(out, ignore_errors=True)  # the run's store and audit trail (about 5 MB)
    wall = t1 - t0
    return {"cpu_pct": 100 * (cpu1 - cpu0) / wall, "wall_s": wall, "terminal_kib_per_s": (bytes1 - bytes0) / 1024 / wall,
            "exit": float(proc.returncode), "peak_rss_mb": peak}


def history(n: int) -> DashboardState:
    now = datetime.now(UTC)
    blocked = Reasoning(
        proposed_action="restart_api_pods", rationale="", retrieved=("rbk-api-01", "rbk-api-03", "rbk-api-04"),
        supporting=2, contradicting=4, coverage=1.0, policy_conflicts=("pol-approval-01",),
        rules=(("policy_conflict", "Policy conflict: blocked by pol-approval-01"),
               ("contradictions", "4 grounded documents contradict the proposed action: ev-101, ev-102, ev-105")),
        cautions=(), decision="block_and_escalate", approval_required="force_override", confidence_initial=7.1,
        confidence_final=1.0, context_mode="full_context", tool_calls=6)
    thread = tuple(ThreadEntry(now, "governor" if i % 2 else "oncall",
                               "[SRE-1] payments-api · high · 5xx spike\ngate BLOCKED restart_api_pods" if i == 0
                               else "APPROVE refused: the incident is critical", "request" if i == 0 else "reply",
                               None if i == 0 else "refused") for i in range(6))
    states = ("RESOLVED", "REJECTED", "ESCALATED", "RESOLVED", "PENDING_APPROVAL")
    incidents = tuple(
        IncidentView(id=f"inc-{i:05d}", service=("payments-api", "checkout-web", "auth-service")[i % 3],
                     severity=("medium", "high", "critical")[i % 3], state=states[i % 5] if i < n - 5 else "VERIFYING",
                     summary=f"5xx spike: {i % 60}% of POST /api/v1/checkout failing (503/500)", detected_at=now,
                     updated_at=now, ticket=f"SRE-{101 + i}", reasoning=blocked, thread=thread,
                     preview="[dry-run] would run restart_api_pods on payments-api", outcome="verified")
        for i in range(n))
    telemetry = TelemetryView(processed=1_234_567, per_second=26, error_rate=0.12,
                              series=tuple((i % 23) / 80 for i in range(120)),
                              services=tuple(ServiceRate(f"service-{i}", 100, i / 50) for i in range(9)),
                              recent=tuple(LogLine(now, "payments-api", "/api/v1/checkout", 503 if i % 3 else 200)
                                           for i in range(40)))
    return DashboardState(
        mode="fast", started_at=now - timedelta(hours=3), now=now, flags=("autopilot",),
        integrations=tuple(Integration(r, n, True, "detail") for r, n in
                           (("store", "sqlite"), ("tickets", "local"), ("agent", "offline/gpt-oss-120b"),
                            ("approvals", "local-inbox"), ("executor", "dry_run"))),
        telemetry=telemetry, incidents=incidents, selected=incidents[n // 2].id, follow=False,
        metrics=Metrics(detected=n, unsafe_blocked=n // 3, auto_executed=n // 3, resolved=n // 2),
        workers=tuple(WorkerView(w) for w in ("traffic", "logs", "audit", "agent", "slack")),
        activity=tuple(f"12:00:{i % 60:02d} agent  SRE-{i} something happened" for i in range(200)))


def measure_frames(state: DashboardState, width: int, height: int, repeat: int = 60) -> dict[str, float]:
    console = Console(file=io.StringIO(), width=width, height=height, force_terminal=True, color_system="truecolor",
                      theme=THEME, legacy_windows=False)
    times = []
    for _ in range(repeat):
        console.file = io.StringIO()
        start = time.perf_counter()
        console.print(Dashboard(state), height=height)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {"median_ms": times[len(times) // 2], "p95_ms": times[int(len(times) * 0.95) - 1]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--height", type=int, default=48)
    parser.add_argument("--frames-only", action="store_true")
    parser.add_argument("--idle-only", action="store_true", help="skip the busy runs")
    args = parser.parse_args()

    print(describe_machine())
    state = history(1000)
    print("frame build, 1,000 incidents in the history (target <= 15 ms):")
    for width, height in ((80, 24), (160, 48), (240, 70)):
        f = measure_frames(state, width, height)
        print(f"  {width:>3}x{height:<3} median {f['median_ms']:5.1f} ms   p95 {f['p95_ms']:5.1f} ms")
    if args.frames_only:
        return 0
    print(f"CPU of the TUI process in a {args.width}x{args.height} pty over {args.seconds:g} s "
          f"(after {args.warmup:g} s warm-up; target idle <= 5 % of one core):")
    serve = ("-m", "safety_governor", "serve")
    runs = (("idle", ["--storyline", "none"], ("demo_rich_agentic.py",)),
            ("idle, service only (serve)", ["--storyline", "none"], serve),
            ("busy", ["--autopilot"], ("demo_rich_agentic.py",)),
            ("busy, service only (serve)", ["--autopilot"], serve))
    for name, flags, command in runs:
        if args.idle_only and "busy" in name:
            continue
        r = measure_cpu(flags, args.seconds, args.warmup, args.width, args.height, command)
        print(f"  {name:<27} {r['cpu_pct']:5.1f} % of one core   terminal output {r['terminal_kib_per_s']:6.1f} "
              f"KiB/s   peak RSS {r['peak_rss_mb']:5.1f} MB   exit {int(r['exit'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
