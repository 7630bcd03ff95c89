"""Operator subcommands of ``python -m safety_governor``: ``audit verify`` (and the guardrail
switches). Each calls one library function; expected failures print one line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .audit_chain import verify
from .bootstrap import audit_key
from .cli import EXIT_FAILED, EXIT_OK, _settings
from .errors import InputError


def cmd_audit(args: argparse.Namespace) -> int:
    """Check the hash chain of every audit file in DIR (default: the output folder)."""
    settings = _settings(args)
    target = Path(args.dir) if args.dir else settings.output_dir
    if not target.exists():
        raise InputError(f"{target}: no such file or folder")
    checks = verify(target, audit_key(settings))
    set_aside = sorted(p.name for p in target.glob("*.jsonl.*")) if target.is_dir() else []
    if args.json:
        print(json.dumps({"files": [{"file": c.path.name, "ok": c.ok, "records": c.records,
                                     "first_seq": c.first_seq, "last_seq": c.last_seq, "hash_alg": c.alg,
                                     "line": c.line, "seq": c.seq, "problem": c.problem} for c in checks],
                          "set_aside": set_aside}, indent=2))
    else:
        if not checks:
            print(f"{target}: no audit files (*.jsonl)")
        for check in checks:
            print(check.describe())
        for name in set_aside:
            print(f"note: {name} was set aside (a torn write or a chain that could not continue); "
                  "its new chain records why")
    return EXIT_OK if all(c.ok for c in checks) else EXIT_FAILED


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("audit", help="verify the hash chain of the audit trail: audit verify [DIR]",
                       description="Check every output/*.jsonl (or DIR, or one FILE): one line per file "
                                   "(records, first and last seq) or the first broken record (line, seq, what "
                                   "differs). Exit 1 on any break. With AUDIT_HMAC_KEY set the chains must be "
                                   "HMACs under that key. Example: python -m safety_governor audit verify output")
    p.add_argument("action", choices=("verify",))
    p.add_argument("dir", nargs="?", metavar="DIR", help="folder or file (default: the output folder)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_audit)
