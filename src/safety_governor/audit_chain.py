"""The hash chain of the audit files, and its verification (``audit verify``).

Every line of an audit file is one JSON record carrying ``seq`` (1, 2, 3… per file, no gaps),
``prev_hash`` (the previous record's ``hash``; 64 zeros for the first) and ``hash``: SHA-256
over the canonical JSON of the record without ``hash`` (sorted keys, no blanks, UTF-8), which
includes ``prev_hash``. The first record of a file is its genesis (``kind: audit_genesis``)
naming the stream, the governor instance, the gate config hash and the hash algorithm.

With ``AUDIT_HMAC_KEY`` set the hashes are HMAC-SHA256 under that key (``hash_alg:
hmac-sha256``): without the key nobody can recompute a valid chain after changing a record.
Plain SHA-256 detects accidents and edits by someone who does not rewrite every later record;
it does not stop someone who can write the file and recomputes the chain from the edit onwards.
Neither mode can see records cut from the end of a file (the chain then just ends earlier).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GENESIS_PREV = "0" * 64
GENESIS_KIND = "audit_genesis"
SHA256 = "sha256"
HMAC_SHA256 = "hmac-sha256"
CHAIN_FIELDS = ("seq", "prev_hash", "hash")


def canonical(record: Mapping[str, Any]) -> bytes:
    """The bytes the hash covers: sorted keys, no blanks, UTF-8."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str).encode("utf-8")


def record_hash(record: Mapping[str, Any], key: bytes | None = None) -> str:
    """The ``hash`` of a record: over every field but ``hash`` itself (so ``prev_hash`` and
    ``seq`` are covered); HMAC-SHA256 under ``key`` when one is given."""
    payload = canonical({k: v for k, v in record.items() if k != "hash"})
    if key:
        return hmac.new(key, payload, hashlib.sha256).hexdigest()
    return hashlib.sha256(payload).hexdigest()


def hash_alg(key: bytes | None) -> str:
    return HMAC_SHA256 if key else SHA256


def seal(body: Mapping[str, Any], *, seq: int, prev_hash: str, key: bytes | None) -> dict[str, Any]:
    """``body`` with its chain fields: what is written as one line."""
    record = {**json.loads(json.dumps(dict(body), default=str)), "seq": seq, "prev_hash": prev_hash}
    record["hash"] = record_hash(record, key)
    return record


@dataclass(frozen=True)
class FileCheck:
    """The verdict on one audit file: OK with its extent, or the first broken record."""

    path: Path
    records: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    alg: str | None = None
    line: int | None = None  # the first broken line (1-based); None when the chain holds
    seq: Any = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def describe(self) -> str:
        name = self.path.name
        if self.ok:
            if not self.records:
                return f"{name}: empty, OK"
            return f"{name}: {self.records} records, seq {self.first_seq}-{self.last_seq}, {self.alg}, OK"
        where = f"line {self.line}" + (f" (seq {self.seq})" if self.seq is not None else "")
        return f"{name}: BROKEN at {where}: {self.problem}"


def check_lines(path: Path, lines: Iterable[bytes], key: bytes | None) -> FileCheck:
    """Walk the chain of one file; stop at the first record that breaks it."""
    expected_seq, prev_hash, alg, first = 1, GENESIS_PREV, None, None
    count = 0
    for number, raw in enumerate(lines, start=1):

        def broken(problem: str, seq: Any = None, number: int = number) -> FileCheck:
            return FileCheck(path, count, first, expected_seq - 1 if count else None, alg, number, seq, problem)

        try:
            record = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            torn = not raw.endswith(b"\n")
            return broken("cut off (no newline, not JSON): a torn or truncated write" if torn
                          else "not a JSON record")
        if not isinstance(record, dict):
            return broken("not a JSON object")
        seq = record.get("seq")
        missing = [f for f in CHAIN_FIELDS if f not in record]
        if missing:
            return broken(f"no {', '.join(missing)}: not a chained record", seq)
        if number == 1:
            if record.get("kind") != GENESIS_KIND:
                return broken(f"the file does not start with its genesis record (kind {record.get('kind')!r})", seq)
            alg = record.get("hash_alg")
            if alg == HMAC_SHA256 and not key:
                return broken("keyed chain (hmac-sha256): set AUDIT_HMAC_KEY to verify it", seq)
            if alg == SHA256 and key:
                return broken("unkeyed sha256 chain while AUDIT_HMAC_KEY is set: anyone who can write "
                              "the file could have recomputed it", seq)
            if alg not in (SHA256, HMAC_SHA256):
                return broken(f"unknown hash_alg {alg!r}", seq)
        if seq != expected_seq:
            return broken(f"seq {seq} where {expected_seq} was expected: a record was removed, moved or "
                          "repeated here", seq)
        if record["prev_hash"] != prev_hash:
            return broken(f"prev_hash {str(record['prev_hash'])[:12]}… is not the hash of the record before "
                          f"it ({prev_hash[:12]}…): a record before it was removed, changed or moved", seq)
        computed = record_hash(record, key)
        if not hmac.compare_digest(str(record["hash"]), computed):
            return broken(f"hash {str(record['hash'])[:12]}… does not match the record's content "
                          f"({computed[:12]}…): the record was changed after it was written", seq)
        count += 1
        first = first if first is not None else seq
        prev_hash = record["hash"]
        expected_seq += 1
    return FileCheck(path, count, first, expected_seq - 1 if count else None, alg)


def check_file(path: Path, key: bytes | None = None) -> FileCheck:
    try:
        with open(path, "rb") as fh:
            return check_lines(path, fh, key)
    except OSError as exc:
        return FileCheck(path, problem=f"cannot read: {exc.strerror}")


def verify(target: Path, key: bytes | None = None) -> list[FileCheck]:
    """Check one file, or every ``*.jsonl`` in a folder (sorted by name)."""
    if target.is_dir():
        return [check_file(p, key) for p in sorted(target.glob("*.jsonl"))]
    return [check_file(target, key)]


def status_line(folder: Path, key: bytes | None = None, warnings: Iterable[str] = ()) -> tuple[bool, str]:
    """(ok, one line) for a status panel: the first broken file, else the count checked, with
    any warning of the writer (a torn line set aside) appended. A break is shown, never repaired."""
    checks = verify(folder, key) if folder.is_dir() else []
    broken = [c for c in checks if not c.ok]
    notes = "; ".join(warnings)
    if broken:
        return False, broken[0].describe() + (f" (+{len(broken) - 1} more)" if len(broken) > 1 else "")
    records = sum(c.records for c in checks)
    text = f"chain OK: {len(checks)} files, {records} records" if checks else "chain OK: no files yet"
    return True, text + (f"; {notes}" if notes else "")
