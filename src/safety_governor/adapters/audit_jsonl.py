"""The audit trail: append-only, hash-chained JSONL files in ``output/`` (the seed's file names).

Each record is one line, appended whole and flushed before ``record`` returns; a failure raises
``AuditWriteError`` so the caller can refuse to execute. Values under secret-looking keys and
credential-shaped text are redacted, so a token never lands in the trail.

Every line carries ``seq``, ``prev_hash`` and ``hash`` (``audit_chain``); each file starts with
a genesis record naming the governor instance and the gate config hash. Several processes may
append to the same folder (the dashboard, ``approvals reply``, ``runbooks approve``): each append
holds an exclusive ``flock`` on the file and continues the chain from the file's real last line.

A torn last line (a crash or a full disk mid-write) is found at start and before any append
that sees the file changed: its bytes move to ``<stream>.jsonl.torn``, a warning is logged, and
an ``audit_torn_tail`` record in the chain says what was set aside. A file the chain cannot
continue (written before the chain existed, or with the other hash mode) is renamed aside, and
the new file's genesis names it: nothing is repaired silently.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..audit_chain import GENESIS_KIND, GENESIS_PREV, hash_alg, seal
from ..errors import AuditWriteError
from ..redaction import redact

STREAMS = ("agent_runs", "reliability_metrics", "tool_trace", "workflow_events")
_READ_CHUNK = 64 * 1024
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Head:
    """Where a file's chain ends: its inode and size when read, the last seq and hash."""

    ino: int
    size: int
    seq: int
    hash: str


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _last_line(fd: int, size: int) -> tuple[int, bytes]:
    """(offset, bytes) of the file's last line, its newline included when it has one."""
    buf, pos = b"", size
    while pos > 0:
        step = min(_READ_CHUNK, pos)
        pos -= step
        buf = os.pread(fd, step, pos) + buf
        cut = buf.rfind(b"\n", 0, len(buf) - 1)  # a trailing newline ends the last line
        if cut != -1:
            return pos + cut + 1, buf[cut + 1:]
    return 0, buf


def _first_line(fd: int) -> bytes:
    buf, pos = b"", 0
    while True:
        chunk = os.pread(fd, _READ_CHUNK, pos)
        buf += chunk
        if b"\n" in chunk or not chunk:
            return buf.split(b"\n", 1)[0]
        pos += len(chunk)


def _write_all(fd: int, data: bytes, start: int) -> None:
    """Append ``data`` whole or not at all: a failed write is cut back to ``start``."""
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view):]
    except OSError:
        try:
            os.ftruncate(fd, start)
        except OSError:
            pass  # the torn tail is found and set aside before the next append
        raise


class JsonlAudit:
    """Args:
    output_dir: folder for ``<stream>.jsonl`` files (created if missing).
    fsync: also ``os.fsync`` decision-bearing streams (slower, survives power loss).
    instance: the governor instance named in each genesis record (default ``host:pid``).
    config_hash: the gate config hash named in each genesis record.
    hmac_key: when given (``AUDIT_HMAC_KEY``), the chain's hashes are HMAC-SHA256 under it.
    """

    def __init__(self, output_dir: Path, *, fsync: bool = False, instance: str | None = None,
                 config_hash: str | None = None, hmac_key: bytes | str | None = None) -> None:
        self.output_dir = Path(output_dir)
        self.fsync = fsync
        self.instance = instance or f"{socket.gethostname()}:{os.getpid()}"
        self.config_hash = config_hash or "unknown"
        self._key = hmac_key.encode("utf-8") if isinstance(hmac_key, str) else hmac_key
        self.alg = hash_alg(self._key)
        self.warnings: list[str] = []
        self._heads: dict[str, _Head] = {}
        self._aside: dict[str, dict[str, str]] = {}  # stream -> the file renamed aside, for its next genesis
        self._lock = threading.Lock()
        self.recover()

    def path(self, stream: str) -> Path:
        return self.output_dir / f"{stream}.jsonl"

    def recover(self) -> list[str]:
        """Check the end of every existing audit file now (at start): torn tails are set aside
        and recorded. Returns the warnings; a file that cannot be read fails at its next write."""
        for stream in STREAMS:
            if self.path(stream).is_file():
                with self._lock:
                    try:
                        self._append(stream, [])
                    except OSError as exc:
                        self._warn(f"cannot check {self.path(stream)}: {exc.strerror}")
        return list(self.warnings)

    def record(self, stream: str, record: Mapping[str, Any]) -> None:
        if stream not in STREAMS:
            raise AuditWriteError(f"unknown audit stream '{stream}'")
        body = {"recorded_at": datetime.now(UTC).isoformat(), **redact(record)}
        with self._lock:
            try:
                self.output_dir.mkdir(parents=True, exist_ok=True)
                self._append(stream, [body])
            except OSError as exc:
                raise AuditWriteError(f"cannot write the {stream} audit trail: {exc.strerror or exc}") from exc

    # --- the chain -----------------------------------------------------------------------

    def _append(self, stream: str, bodies: list[dict[str, Any]]) -> None:
        path = self.path(stream)
        for _ in range(5):
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                st = os.fstat(fd)
                if not path.exists() or os.stat(path).st_ino != st.st_ino:
                    continue  # renamed aside by another writer while we waited: open the new file
                head = self._heads.get(stream)
                notes: list[dict[str, Any]] = []
                if head is None or (head.ino, head.size) != (st.st_ino, st.st_size):
                    loaded = self._load_head(stream, fd, st.st_ino, notes)
                    if loaded is None:
                        continue  # renamed aside: start a new file
                    head = loaded
                pending = [*notes, *bodies]
                if not pending:
                    self._heads[stream] = head
                    return
                if head.seq == 0:
                    pending.insert(0, self._genesis(stream))
                seq, prev, lines = head.seq, head.hash, []
                for body in pending:
                    seq += 1
                    sealed = seal(body, seq=seq, prev_hash=prev, key=self._key)
                    prev = sealed["hash"]
                    lines.append(json.dumps(sealed, sort_keys=True, ensure_ascii=False) + "\n")
                data = "".join(lines).encode("utf-8")
                _write_all(fd, data, head.size)
                if self.fsync and stream != "tool_trace":
                    os.fsync(fd)
                self._heads[stream] = _Head(st.st_ino, head.size + len(data), seq, prev)
                return
            finally:
                os.close(fd)  # releases the flock
        raise OSError(f"{path} keeps being replaced while appending")

    def _genesis(self, stream: str) -> dict[str, Any]:
        return {"kind": GENESIS_KIND, "stream": stream, "governor_instance": self.instance,
                "config_hash": self.config_hash, "hash_alg": self.alg,
                "recorded_at": datetime.now(UTC).isoformat(), **self._aside.pop(stream, {})}

    def _load_head(self, stream: str, fd: int, ino: int, notes: list[dict[str, Any]]) -> _Head | None:
        """Read where the file's chain ends, setting a torn last line aside first (with a note
        for the chain). ``None`` when the file was renamed aside and a new one must start."""
        path = self.path(stream)
        size = os.fstat(fd).st_size
        while size:
            start, last = _last_line(fd, size)
            record = _parse(last)
            if record is not None:
                break
            self._set_torn_aside(stream, last, start, fd, notes)
            size = start
        if not size:
            return _Head(ino, 0, 0, GENESIS_PREV)
        genesis = _parse(_first_line(fd))
        why = None
        if genesis is None or genesis.get("kind") != GENESIS_KIND or "hash" not in genesis:
            why = "no hash chain (written before the chain existed, or replaced)"
        elif genesis.get("hash_alg") != self.alg:
            why = f"its chain uses {genesis.get('hash_alg')} and this governor {self.alg}"
        elif not isinstance(record.get("seq"), int) or not isinstance(record.get("hash"), str):
            why = "its last line is not a chained record"
        if why is not None:
            aside = path.with_name(f"{path.name}.{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}.unchained")
            os.rename(path, aside)
            self._aside[stream] = {"previous_file": aside.name, "previous_file_reason": why}
            self._warn(f"{path.name}: {why}; renamed to {aside.name}, a new chain starts")
            return None
        if not last.endswith(b"\n"):  # whole but unterminated: end it so the next line stays apart
            _write_all(fd, b"\n", size)
            size += 1
        return _Head(ino, size, int(record["seq"]), str(record["hash"]))

    def _set_torn_aside(self, stream: str, torn: bytes, start: int, fd: int, notes: list[dict[str, Any]]) -> None:
        path = self.path(stream)
        torn_path = path.with_name(path.name + ".torn")
        with open(torn_path, "ab") as fh:
            fh.write(torn if torn.endswith(b"\n") else torn + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.ftruncate(fd, start)
        notes.append({"kind": "audit_torn_tail", "moved_to": torn_path.name, "bytes": len(torn),
                      "sha256": hashlib.sha256(torn).hexdigest(), "at_offset": start,
                      "recorded_at": datetime.now(UTC).isoformat()})
        self._warn(f"{path.name}: a torn last line ({len(torn)} bytes at offset {start}) moved to "
                   f"{torn_path.name}; the chain continues from the last whole record")

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        log.warning("audit: %s", message)


class MemoryAudit:
    """An in-memory audit sink (replays and tests); ``fail_on`` makes a stream fail to write."""

    def __init__(self, fail_on: tuple[str, ...] = ()) -> None:
        self.records: dict[str, list[dict[str, Any]]] = {s: [] for s in STREAMS}
        self.fail_on = fail_on
        self._lock = threading.Lock()

    def record(self, stream: str, record: Mapping[str, Any]) -> None:
        if stream not in STREAMS:
            raise AuditWriteError(f"unknown audit stream '{stream}'")
        if stream in self.fail_on:
            raise AuditWriteError(f"cannot write the {stream} audit trail: simulated failure")
        with self._lock:
            self.records[stream].append(json.loads(json.dumps(redact(record), default=str)))


class TeeAudit:
    """Writes to several sinks; fails if any of them fails."""

    def __init__(self, *sinks: Any) -> None:
        self.sinks = sinks

    def record(self, stream: str, record: Mapping[str, Any]) -> None:
        for sink in self.sinks:
            sink.record(stream, record)
