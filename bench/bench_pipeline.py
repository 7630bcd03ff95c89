#!/usr/bin/env python3
"""Benchmark of the governor core: gate latency, offline pipeline latency on a large store,
seeding time and peak RSS. Prints figures and the targets; exit 0 always (figures, not tests).

Targets (issue 2), absolute, so they hold only on a machine like the one they were set on (the
figures print the machine): gate p50 <= 50 us; pipeline p50 <= 30 ms with 100k evidence docs and
1M log rows; peak RSS <= 400 MB.

Usage: python bench/bench_pipeline.py [--evidence 100000] [--logs 1000000] [--runs 200] [--keep]
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe_machine  # noqa: E402

from safety_governor.adapters.audit_jsonl import JsonlAudit  # noqa: E402
from safety_governor.adapters.store_sqlite import SQLiteStore  # noqa: E402
from safety_governor.bootstrap import build  # noqa: E402
from safety_governor.config import DEFAULT_DATA_DIR, Settings, load_gate_policy  # noqa: E402
from safety_governor.gate import decide  # noqa: E402
from safety_governor.knowledge import load_knowledge_file, seed_store  # noqa: E402
from safety_governor.catalogue import ActionCatalogue  # noqa: E402
from safety_governor.models import CompressOutput, GateFacts, Incident, PlanOutput, StressOutput  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
WORDS = ("latency pool saturation restart pods rollback deploy queue lag worker partition cache "
         "timeout connection database replica failover throttle circuit breaker certificate dns "
         "memory leak cpu spike disk pressure rate limit retry storm backlog consumer index shard "
         "config flag traffic region cdn origin nginx upstream gateway session token").split()
STANCES = ("support", "contradict", "neutral")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def generate(store: SQLiteStore, knowledge: dict, n_evidence: int, n_logs: int, rng: random.Random) -> float:
    services = sorted({d["service"] for d in knowledge["runbooks"]}) + [f"svc-{i:03d}" for i in range(40)]
    actions = sorted({d["recommended_action"] for d in knowledge["runbooks"]})
    started = time.perf_counter()
    seed_store(store, knowledge, source="bench")
    batch = []
    for i in range(n_evidence):
        batch.append({"id": f"bev-{i}", "service": rng.choice(services), "stance": rng.choice(STANCES),
                      "action": rng.choice(actions), "source": "bench",
                      "text": " ".join(rng.choices(WORDS, k=14))})
        if len(batch) == 5000:
            store.index_documents("evidence", batch)
            batch = []
    if batch:
        store.index_documents("evidence", batch)
    now = datetime.now(UTC)
    batch = []
    for i in range(n_logs):
        batch.append({"id": f"blog-{i}", "timestamp": (now - timedelta(seconds=rng.random() * 86400)).isoformat(),
                      "service": rng.choice(services), "request": f"/api/{rng.choice(WORDS)}",
                      "response": rng.choice(("200",) * 30 + ("404", "500", "503")), "bytes": rng.randint(100, 9000)})
        if len(batch) == 20000:
            store.index_documents("logs", batch)
            batch = []
    if batch:
        store.index_documents("logs", batch)
    return time.perf_counter() - started


def bench_gate(runs: int) -> list[float]:
    policy = load_gate_policy()
    plan = PlanOutput(proposed_action="restart_api_pods", key_claims=["a", "b"], confidence_initial=8)
    stress = StressOutput(contradiction_count=2, contradicting_doc_ids=["a", "b"], evidence_coverage=0.5,
                          policy_conflicts=["pol-1"], supporting_doc_ids=["c"])
    compress = CompressOutput(context_mode="full_context", output_contract_valid=True)
    incident = Incident(id="i", service="payments-api", severity="high", summary="s")
    # What the pipeline hands the gate: the catalogue's entry for the action on this service.
    facts = GateFacts(action=ActionCatalogue.load(DEFAULT_DATA_DIR / "actions.json").facts(
        plan.proposed_action, incident.service))
    timings = []
    for _ in range(runs):
        t = time.perf_counter()
        decide(plan, stress, compress, incident, policy, facts)
        timings.append((time.perf_counter() - t) * 1e6)
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evidence", type=int, default=100_000)
    parser.add_argument("--logs", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--keep", action="store_true", help="reuse bench/out/bench.db if present")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    db = OUT / "bench.db"
    rng = random.Random(7)
    knowledge = load_knowledge_file(DEFAULT_DATA_DIR / "sample_data.json")
    if db.exists() and not args.keep:
        for suffix in ("", "-wal", "-shm"):
            Path(str(db) + suffix).unlink(missing_ok=True)
    store = SQLiteStore(db)
    seed_seconds = None
    if not args.keep or store.count("evidence") < args.evidence:
        print(f"generating {args.evidence:,} evidence docs and {args.logs:,} log rows…", file=sys.stderr)
        seed_seconds = generate(store, knowledge, args.evidence, args.logs, rng)
    gate_us = bench_gate(20_000)

    settings = Settings(output_dir=OUT, store_path=db)
    governor = build(settings, store=store, audit=JsonlAudit(OUT / "audit"))
    incidents = [Incident.model_validate(d) for d in knowledge["incidents"]]
    for inc in incidents:  # warm-up
        governor.pipeline.assess(inc)
    def timed_runs(cold: bool) -> list[float]:
        timings = []
        for i in range(args.runs):
            inc = incidents[i % len(incidents)]
            if cold:
                store.clear_cache()  # every search hits SQLite: the per-incident worst case
            t = time.perf_counter()
            a = governor.pipeline.assess(inc)
            governor.pipeline.record_decision(a)
            timings.append((time.perf_counter() - t) * 1000)
        return timings

    pipeline_ms = timed_runs(cold=True)
    warm_ms = timed_runs(cold=False)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(describe_machine())
    print(f"store: {store.count('evidence'):,} evidence docs, {store.count('logs'):,} log rows ({db})")
    rows = [
        ("gate decision p50", f"{statistics.median(gate_us):.1f} µs", "≤ 50 µs"),
        ("gate decision p99", f"{pct(gate_us, 0.99):.1f} µs", ""),
        ("pipeline per incident p50 (cold)", f"{statistics.median(pipeline_ms):.1f} ms", "≤ 30 ms"),
        ("pipeline per incident p99", f"{pct(pipeline_ms, 0.99):.1f} ms", ""),
        ("pipeline, search cache warm p50", f"{statistics.median(warm_ms):.1f} ms", ""),
        ("seeding time", f"{seed_seconds:.1f} s" if seed_seconds is not None else "reused", ""),
        ("peak RSS", f"{rss_mb:.0f} MB", "≤ 400 MB"),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>12}  {target}")
    store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
