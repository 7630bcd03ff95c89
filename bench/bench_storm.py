#!/usr/bin/env python3
"""Benchmark the incident service under a storm: 50 incidents at once, an agent that thinks.

* **Storm**: ``--incidents`` (50) incidents are put on the service's board at once; the agent is
  the offline agent behind a fixed latency L per phase (``LatencyAgent``, L = 2 s: a live agent's
  think time without the network). The figure is the time until every incident has a gate
  decision, with ``AGENT_CONCURRENCY`` = C (default 4), against the target
  ``2 × ⌈N / C⌉ × L + 5 s`` (two agent phases, plan and stress, per incident). The same storm with
  C = 1 (the seed's one agent thread, less its verification sleep) is run for the ratio unless
  ``--no-baseline``.
* **Decision while another incident verifies**: one incident is executed and verified against a
  10 s window with no traffic (so its watch lasts the whole window); a second incident arrives
  meanwhile. Its detection-to-decision time must not include the window.

Usage: python bench/bench_storm.py [--incidents 50] [--latency 2] [--concurrency 4] [--no-baseline]
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from machine import describe_machine  # noqa: E402

from safety_governor.adapters.audit_jsonl import MemoryAudit  # noqa: E402
from safety_governor.adapters.inbox_local import LocalInbox  # noqa: E402
from safety_governor.adapters.store_sqlite import SQLiteStore  # noqa: E402
from safety_governor.adapters.tickets_local import LocalTickets  # noqa: E402
from safety_governor.agents.offline import OfflineAgent  # noqa: E402
from safety_governor.agents.scripted import LatencyAgent  # noqa: E402
from safety_governor.approvals import ApprovalPolicy  # noqa: E402
from safety_governor.bootstrap import build  # noqa: E402
from safety_governor.config import Settings  # noqa: E402
from safety_governor.knowledge import load_knowledge_file, seed_store  # noqa: E402
from safety_governor.models import Incident  # noqa: E402
from safety_governor.service.agent import AgentWorker  # noqa: E402
from safety_governor.service.board import Board, Counters, Pauser, WorkItem  # noqa: E402
from safety_governor.service.events import EventBus  # noqa: E402
from safety_governor.service.worker import WorkerConfig, WorkerContext  # noqa: E402

TEMPLATES = (
    Incident(id="t1", service="payments-api", severity="high", pattern="5xx_spike",
             summary="5xx spike: 45% of POST /api/v1/checkout failing (503/500)",
             symptoms="HTTP 503 x6, 500 x4 on POST /api/v1/checkout; timeout latency"),
    Incident(id="t2", service="checkout-web", severity="medium", pattern="5xx_spike",
             summary="5xx spike: 21% of POST /checkout/confirm failing (500), right after release 2026.11.26-2 deploy",
             symptoms="HTTP 500 x9 on POST /checkout/confirm; errors began after release 2026.11.26-2 deploy"),
    Incident(id="t3", service="auth-service", severity="critical", pattern="credential_reset_spike",
             summary="Credential reset spike: POST /auth/reset-password at 10x normal volume with 429/500 responses",
             symptoms="HTTP 429 x40, 500 x9 on POST /auth/reset-password; traffic from few IPs"),
)


def service(workdir: Path, *, latency: float, concurrency: int, window: float = 10.0) -> tuple[WorkerContext, object]:
    store = SQLiteStore(workdir / f"storm-{time.monotonic_ns()}.db")
    knowledge = load_knowledge_file(ROOT / "data" / "sample_data.json")
    seed_store(store, {**knowledge, "logs": [], "incidents": []}, source="bench")
    agent = LatencyAgent(OfflineAgent(), latency)
    governor = build(Settings(output_dir=workdir), store=store, audit=MemoryAudit(), agent=agent,
                     tool_transport="mcp-inprocess")
    bus, stop = EventBus(), threading.Event()
    config = WorkerConfig(hold_seconds=0.0, verify_window_seconds=window, verify_poll_seconds=1.0,
                          agent_concurrency=concurrency)
    ctx = WorkerContext(store=store, tickets=LocalTickets(), channel=LocalInbox(), bus=bus, board=Board(),
                        counters=Counters(), pauser=Pauser(bus, stop, enabled=False, timeout=1), stop=stop,
                        config=config, owner="bench", audit=governor.audit, actions=governor.actions)  # type: ignore[attr-defined]
    return ctx, governor


def add(ctx: WorkerContext, governor: object, incident: Incident) -> WorkItem:
    item = WorkItem(incident=incident, pipeline=governor.pipeline,  # type: ignore[attr-defined]
                    approvals=ApprovalPolicy.of(("oncall",), ("oncall",)), baseline_error_rate=0.0)
    ctx.store.claim_incident(incident, ctx.owner)
    ctx.board.add(item)
    return item


def storm(workdir: Path, *, incidents: int, latency: float, concurrency: int) -> float:
    """Seconds until every one of ``incidents`` simultaneous incidents has a gate decision."""
    ctx, governor = service(workdir, latency=latency, concurrency=concurrency)
    items = [add(ctx, governor, TEMPLATES[n % len(TEMPLATES)].model_copy(update={"id": f"inc-storm-{n:03d}"}))
             for n in range(incidents)]
    worker = AgentWorker(ctx)
    start = time.monotonic()
    worker.start()
    last = -1
    try:
        while (decided := sum(1 for i in items if i.assessment is not None)) < incidents:
            if decided != last and sys.stderr.isatty():
                print(f"\r  C={concurrency}: {decided}/{incidents} decided, {time.monotonic() - start:5.1f}s",
                      end="", file=sys.stderr, flush=True)
                last = decided
            time.sleep(0.05)
        return time.monotonic() - start
    finally:
        if sys.stderr.isatty():
            print("\r" + " " * 60 + "\r", end="", file=sys.stderr, flush=True)
        ctx.stop.set()
        worker.join(30)
        governor.close()  # type: ignore[attr-defined]


def decision_while_verifying(workdir: Path, *, latency: float, window: float) -> tuple[float, bool]:
    """Detection-to-decision seconds of an incident that arrives while another one is verifying,
    and whether the other one was still inside its window at that decision."""
    ctx, governor = service(workdir, latency=latency, concurrency=4, window=window)
    first = add(ctx, governor, TEMPLATES[1].model_copy(update={"id": "inc-verifying"}))
    worker = AgentWorker(ctx)
    worker.start()
    try:
        while first.state != "VERIFYING":
            time.sleep(0.02)
        second = add(ctx, governor, TEMPLATES[0].model_copy(update={"id": "inc-arrives"}))
        ctx.board.wake()
        arrived = time.monotonic()
        while second.assessment is None:
            time.sleep(0.02)
        return time.monotonic() - arrived, first.state == "VERIFYING"
    finally:
        ctx.stop.set()
        worker.join(30)
        governor.close()  # type: ignore[attr-defined]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--incidents", type=int, default=50)
    parser.add_argument("--latency", type=float, default=2.0, help="seconds per agent phase (L)")
    parser.add_argument("--concurrency", type=int, default=int(os.environ.get("AGENT_CONCURRENCY") or 4))
    parser.add_argument("--window", type=float, default=10.0, help="verification window (seconds)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the C = 1 run")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the service's activity log; the figures are the output
    n, lat, c = args.incidents, args.latency, args.concurrency
    print(describe_machine())
    with tempfile.TemporaryDirectory(prefix="bench-storm-") as tmp:
        workdir = Path(tmp)
        target = 2 * math.ceil(n / c) * lat + 5
        took = storm(workdir, incidents=n, latency=lat, concurrency=c)
        print(f"storm: {n} incidents, L = {lat:g} s per phase, AGENT_CONCURRENCY = {c}: all decided in {took:.1f} s "
              f"(target <= 2 x ceil({n}/{c}) x {lat:g} + 5 = {target:.0f} s: {'met' if took <= target else 'MISSED'})")
        if not args.no_baseline:
            one = storm(workdir, incidents=n, latency=lat, concurrency=1)
            print(f"storm with AGENT_CONCURRENCY = 1: {one:.1f} s; concurrency {c} is {one / took:.1f}x faster")
        latency, still = decision_while_verifying(workdir, latency=lat, window=args.window)
        print(f"decision while another incident verifies ({args.window:g} s window): {latency:.1f} s from arrival "
              f"to decision (2 phases = {2 * lat:g} s); the other was {'still' if still else 'no longer'} verifying "
              f"({'the window is not included' if latency < args.window and still else 'CHECK'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
