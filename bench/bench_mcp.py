#!/usr/bin/env python3
"""Benchmark of MCP tool calls: ``search_evidence`` latency on a 100k-evidence store, direct
(no MCP), in-process MCP, stdio and streamable HTTP (with a bearer token). Prints figures and
the targets; exit 0 always (figures, not tests).

Targets (issue 3), absolute (they hold on a machine like the one they were set on; the figures
print the machine): HTTP p50 <= 15 ms, stdio p50 <= 10 ms. What carries across machines is each
transport's overhead as a share of the direct call on the same workload, printed next to the
absolute figures, and the "transport only" workload (``cdct_score``, a table lookup of a few
microseconds), whose p50 is the transport's own cost per call.

Every call goes through ``MCPToolPort``, the path the agents use (sync-facing port, background
event loop, the SDK's ``mcp.Client``). Each call asks a different query (seeded), so the store's
search cache does not answer for SQLite; warm-up queries are separate from measured ones.

Usage: python bench/bench_mcp.py [--evidence 100000] [--calls 300] [--warmup 30] [--fresh]
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import WORDS, generate, pct  # noqa: E402  (the shared 100k-doc generator)
from machine import describe_machine  # noqa: E402

from safety_governor.adapters.audit_jsonl import JsonlAudit  # noqa: E402
from safety_governor.adapters.store_sqlite import SQLiteStore  # noqa: E402
from safety_governor.bootstrap import build  # noqa: E402
from safety_governor.config import DEFAULT_DATA_DIR, Settings  # noqa: E402
from safety_governor.knowledge import load_knowledge_file  # noqa: E402
from safety_governor.mcp_client import MCPToolPort  # noqa: E402
from safety_governor.mcp_server import build_server  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
TOKEN = "bench-token-" + "0123456789abcdef"
TARGETS = {"mcp-http": "p50 ≤ 15 ms", "mcp-stdio": "p50 ≤ 10 ms"}


def _remove(db: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)


def prepare_store(db: Path, n_evidence: int, fresh: bool) -> tuple[int, float | None]:
    """Reuse ``db`` when it already holds ``n_evidence`` generated docs; else build it."""
    if fresh:
        _remove(db)
    store = SQLiteStore(db)
    if store.count("evidence", {"source": "bench"}) < n_evidence:
        store.close()
        _remove(db)
        store = SQLiteStore(db)
        print(f"generating {n_evidence:,} evidence docs in {db} …", file=sys.stderr)
        knowledge = load_knowledge_file(DEFAULT_DATA_DIR / "sample_data.json")
        seconds: float | None = generate(store, knowledge, n_evidence, 0, random.Random(7))
    else:
        seconds = None
    try:
        return store.count("evidence"), seconds
    finally:
        store.close()


def synthetic_queries(n: int, services: list[str], rng: random.Random) -> list[dict[str, Any]]:
    """Worst case: 3-6 words of the generator's 50-word vocabulary, so each query matches a
    large share of the service's documents and BM25 ranks thousands of them."""
    return [{"query": " ".join(rng.sample(WORDS, rng.randint(3, 6))), "service": rng.choice(services), "top_k": 3}
            for _ in range(n)]


def agent_queries(
    n: int, knowledge: dict[str, Any], services: list[str], rng: random.Random
) -> list[dict[str, Any]]:
    """What the agents send: runbook sentences (the offline agent's claims) and incident
    summaries, each asked for a service; (query, service) pairs are distinct, so no cache hit."""
    texts = [s.strip() for r in knowledge["runbooks"] for s in r["body"].split(". ") if len(s.strip()) > 8]
    texts += [f"{i['summary']} {i.get('symptoms', '')}" for i in knowledge["incidents"]]
    pairs = [(t, svc) for t in texts for svc in services]
    rng.shuffle(pairs)
    return [{"query": t, "service": svc, "top_k": 3} for t, svc in pairs[:n]]


def measure(
    call: Callable[[str, dict[str, Any]], Any], tool: str, warm: list[dict[str, Any]], timed: list[dict[str, Any]]
) -> list[float]:
    for args in warm:
        call(tool, args)
    timings = []
    for args in timed:
        t = time.perf_counter()
        call(tool, args)
        timings.append((time.perf_counter() - t) * 1000)
    return timings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_http(env: dict[str, str], port: int, log: Any) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-m", "safety_governor", "mcp", "--http", "--port", str(port)],
                            env={**os.environ, **env}, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise SystemExit(f"the MCP HTTP server exited early:\n{log.read()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("the MCP HTTP server did not start within 30 s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evidence", type=int, default=100_000)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--fresh", action="store_true", help="regenerate bench/out/mcp_bench.db")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    db = OUT / "mcp_bench.db"
    n_docs, seed_seconds = prepare_store(db, args.evidence, args.fresh)

    knowledge = load_knowledge_file(DEFAULT_DATA_DIR / "sample_data.json")
    services = sorted({d["service"] for d in knowledge["runbooks"]})
    rng = random.Random(11)
    settings = Settings(store_path=db, output_dir=OUT / "mcp-audit")
    env = {"GOVERNOR_STORE_PATH": str(db), "GOVERNOR_OUTPUT_DIR": str(OUT / "mcp-audit"), "ELASTIC_URL": ""}
    audit = JsonlAudit(OUT / "mcp-audit")
    # One disjoint slice of each workload per transport: every transport sees fresh queries.
    n = args.warmup + args.calls
    transports = ("direct (no MCP)", "mcp-inprocess", "mcp-stdio", "mcp-http")
    synthetic = synthetic_queries(n * len(transports), services, rng)
    # The generator's services (the sample's nine plus svc-000…): about 2,000 documents each.
    all_services = services + [f"svc-{i:03d}" for i in range(40)]
    shaped = agent_queries(n * len(transports), knowledge, all_services, rng)
    if len(shaped) < n * len(transports):
        raise SystemExit(f"--calls/--warmup too large for the agent-shaped workload ({len(shaped)} queries)")
    lookups = [{"model": "gpt-oss-120b"}] * n
    workloads = {name: {"synthetic": ("search_evidence", synthetic[k * n:(k + 1) * n]),
                        "agent-shaped": ("search_evidence", shaped[k * n:(k + 1) * n]),
                        "transport only": ("cdct_score", lookups)}
                 for k, name in enumerate(transports)}
    results: dict[tuple[str, str], list[float]] = {}

    def run(name: str, call: Callable[[str, dict[str, Any]], Any]) -> None:
        for workload, (tool, qs) in workloads[name].items():
            results[name, workload] = measure(call, tool, qs[:args.warmup], qs[args.warmup:])

    governor = build(settings, audit=audit)
    try:
        run("direct (no MCP)", lambda tool, a: getattr(governor.tools, tool)(**a))
        server = build_server(governor)
        with MCPToolPort.in_process(server, audit=audit) as port:
            run("mcp-inprocess", port.call)
    finally:
        governor.close()

    with MCPToolPort.stdio(sys.executable, ["-m", "safety_governor", "mcp"], env=env, cwd=str(ROOT),
                           audit=audit) as port:
        run("mcp-stdio", port.call)

    with tempfile.TemporaryFile(mode="w+") as log:
        port_no = free_port()
        proc = start_http({**env, "MCP_SERVER_TOKEN": TOKEN}, port_no, log)
        try:
            with MCPToolPort.http(f"http://127.0.0.1:{port_no}/mcp", token=TOKEN, audit=audit) as port:
                run("mcp-http", port.call)
        finally:
            proc.terminate()
            proc.wait(10)

    print(describe_machine())
    print(f"store: {n_docs:,} evidence docs ({db}); seeding "
          + (f"{seed_seconds:.1f} s" if seed_seconds is not None else "reused"))
    print(f"search_evidence, top_k=3: {args.calls} calls per transport and workload after {args.warmup} "
          "warm-up calls, a different query each call; client = MCPToolPort")
    header = (f"{'transport':<16} {'workload':<15} {'p50 ms':>7} {'p99 ms':>7} {'mean ms':>7} {'+MCP p50':>8} "
              f"{'÷ direct':>8}  target")
    print(header)
    print("-" * len(header))
    for (name, workload), timings in results.items():
        p50 = statistics.median(timings)
        direct = statistics.median(results["direct (no MCP)", workload])
        overhead = p50 - direct
        target = TARGETS.get(name, "") if workload != "transport only" else ""
        if target:
            target += " (met)" if p50 <= float(target.split("≤")[1].split()[0]) else " (missed)"
        extra = f"{overhead:>+8.2f}" if name != "direct (no MCP)" else f"{'':>8}"
        # The share only means something where the direct call does real work (a search).
        share = f"{overhead / direct:>+8.0%}" if name != "direct (no MCP)" and workload != "transport only" \
            else f"{'':>8}"
        print(f"{name:<16} {workload:<15} {p50:>7.2f} {pct(timings, 0.99):>7.2f} {statistics.fmean(timings):>7.2f} "
              f"{extra} {share}  {target}")
    print("+MCP p50: the transport's p50 minus the direct call's p50 on the same workload; ÷ direct: that "
          "overhead as a share of the direct call's p50 (comparable across machines)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
