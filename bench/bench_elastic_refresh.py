#!/usr/bin/env python3
"""Benchmark of the Elasticsearch store's refresh policy against the local wire fake.

Runs one workload twice on ``FakeElasticsearch`` (tests/wire_fakes.py: near real-time search with
a periodic refresh, ``refresh=true`` forcing one, ``refresh=wait_for`` waiting for the next):

* the old policy, ``refresh=true`` on every small write;
* the current default: ``wait_for`` where the next search must see the write, nothing on claims.

The workload is what approval bookkeeping does: append an event, read the incident's events
back (a search); and claim incidents (a create read back by id). Printed per policy: forced
refreshes (on a cluster each makes a new small Lucene segment that merges must clean up later),
waited refreshes, and the client's latency per write (``wait_for`` waits up to one refresh
interval; the fake cannot measure the cluster-side cost of segments, only count them). Exit 0
always (figures, not tests).

Usage: python bench/bench_elastic_refresh.py [--events 40] [--claims 20] [--refresh-interval 1.0]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from elasticsearch import Elasticsearch  # noqa: E402
from machine import describe_machine  # noqa: E402
from wire_fakes import FakeElasticsearch  # noqa: E402

from safety_governor.adapters.store_elastic import ElasticStore  # noqa: E402
from safety_governor.models import Incident  # noqa: E402


def run(policy: str | None, events: int, claims: int, interval: float) -> dict[str, float]:
    with FakeElasticsearch(refresh_interval=interval) as es:
        store = ElasticStore(Elasticsearch(es.url, api_key="bench", max_retries=0), location=es.url,
                             refresh=policy)
        write_ms: list[float] = []
        stale = 0
        for n in range(events):
            started = time.perf_counter()
            event_id = store.append_event("workflow_events", {"kind": "reply_received", "incident_id": "inc-b",
                                                              "key": f"k{n}"})
            write_ms.append((time.perf_counter() - started) * 1000)
            if event_id not in {e["id"] for e in store.events("workflow_events", "inc-b")}:
                stale += 1  # the read after the write missed it
        claim_ms: list[float] = []
        for n in range(claims):
            started = time.perf_counter()
            store.claim_incident(Incident(id=f"inc-c{n}", service="a", severity="low", summary="s"), "bench")
            claim_ms.append((time.perf_counter() - started) * 1000)
        return {"forced": es.forced_refreshes, "waited": es.waited_refreshes, "stale": stale,
                "event_p50": statistics.median(write_ms), "event_max": max(write_ms),
                "claim_p50": statistics.median(claim_ms)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=40)
    parser.add_argument("--claims", type=int, default=20)
    parser.add_argument("--refresh-interval", type=float, default=1.0,
                        help="seconds between periodic refreshes (Elasticsearch's default: 1)")
    args = parser.parse_args()
    print(describe_machine())
    print(f"workload: {args.events} events (each read back by a search), {args.claims} claims; "
          f"refresh_interval {args.refresh_interval:g}s")
    rows = [("refresh=true on every write (before)", run("true", args.events, args.claims, args.refresh_interval)),
            ("wait_for where read next, none on claims (now)",
             run(None, args.events, args.claims, args.refresh_interval))]
    print(f"{'policy':<48} {'forced':>7} {'waited':>7} {'stale':>6} {'event p50':>10} {'event max':>10} "
          f"{'claim p50':>10}")
    for name, r in rows:
        print(f"{name:<48} {r['forced']:>7.0f} {r['waited']:>7.0f} {r['stale']:>6.0f} {r['event_p50']:>8.1f}ms "
              f"{r['event_max']:>8.1f}ms {r['claim_p50']:>8.1f}ms")
    before, now = rows[0][1], rows[1][1]
    print(f"forced refreshes (new segments): {before['forced']:.0f} -> {now['forced']:.0f}; "
          f"event write latency p50 x{now['event_p50'] / max(before['event_p50'], 1e-9):.1f} "
          f"(bounded by the refresh interval); claim p50 x{now['claim_p50'] / max(before['claim_p50'], 1e-9):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
