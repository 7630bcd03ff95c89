#!/usr/bin/env python3
"""Benchmark of the agent-reply JSON extraction (``parsing.extract_json_object``) on hostile
replies at the size cap, against a plain 2 KB plan. Prints figures and the machine; exit 0 always
(figures, not tests).

The extraction is meant to be linear in the reply size: each case is timed at 50 KB and at
200 KB in the same run, and the ratio of the two times is printed (about 4 for linear work,
about 16 for quadratic). Before issue 10, 200 KB of ``{`` took 13.5 s (each brace was handed to
the JSON decoder, which scanned to the end).

Usage: python bench/bench_parsing.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable

from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe_machine  # noqa: E402

from safety_governor.parsing import MAX_REPLY_CHARS, ReplyParseError, extract_json_object  # noqa: E402

PLAN = json.dumps({"proposed_action": "rollback_last_deploy", "rationale": "r" * 1500,
                   "key_claims": ["a claim"] * 5, "confidence_initial": 7})

CASES: dict[str, Callable[[int], str]] = {
    "open braces {{{…": lambda n: "{" * n,
    "close braces }}}…": lambda n: "}" * n,
    "empty objects {}{}…": lambda n: "{}" * (n // 2),
    "unterminated nesting {\"a\":{\"a\":…": lambda n: '{"a":' * (n // 5),
    "quotes after a brace {\"{\"…": lambda n: '{"' * (n // 2),
    "unclosed fences ```…": lambda n: "```" * (n // 3),
    "prose then a plan": lambda n: "x " * ((n - len(PLAN)) // 2) + PLAN,
}


def best_of(text: str, repeat: int) -> tuple[float, str]:
    best, outcome = float("inf"), ""
    for _ in range(repeat):
        start = time.perf_counter()
        try:
            extract_json_object(text)
            outcome = "object"
        except ReplyParseError as exc:
            outcome = f"refused: {str(exc)[:48]}"
        best = min(best, time.perf_counter() - start)
    return best, outcome


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(describe_machine())
    plain, _ = best_of(PLAN, args.repeat)
    print(f"plain {len(PLAN)}-char plan: {plain * 1000:.3f} ms")
    small_n, big_n = MAX_REPLY_CHARS // 4, MAX_REPLY_CHARS
    print(f"{'case':38} {'50 KB ms':>10} {'200 KB ms':>10} {'ratio':>6}  outcome at 200 KB")
    for name, make in CASES.items():
        small, _ = best_of(make(small_n), args.repeat)
        big, outcome = best_of(make(big_n), args.repeat)
        ratio = big / small if small > 0 else float("nan")
        print(f"{name:38} {small * 1000:10.1f} {big * 1000:10.1f} {ratio:6.1f}  {outcome}")
    over, outcome = best_of("{" * (MAX_REPLY_CHARS + 1), args.repeat)
    print(f"over the cap ({MAX_REPLY_CHARS + 1} chars): {over * 1000:.3f} ms, {outcome}")
    print("target: every 200 KB case well under 1 s and a ratio near 4 (linear)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
