"""The audit trail: append-only JSONL files in ``output/`` (the seed's file names).

Each record is one line, appended and flushed before ``record`` returns; a failure raises
``AuditWriteError`` so the caller can refuse to execute. Values under secret-looking keys are
redacted, so a token passed as a tool argument never lands in the trail.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import AuditWriteError
from ..redaction import redact

STREAMS = ("agent_runs", "reliability_metrics", "tool_trace", "workflow_events")
class JsonlAudit:
    """Args:
    output_dir: folder for ``<stream>.jsonl`` files (created if missing).
    fsync: also ``os.fsync`` decision-bearing streams (slower, survives power loss).
    """

    def __init__(self, output_dir: Path, *, fsync: bool = False) -> None:
        self.output_dir = Path(output_dir)
        self.fsync = fsync
        self._lock = threading.Lock()

    def path(self, stream: str) -> Path:
        return self.output_dir / f"{stream}.jsonl"

    def record(self, stream: str, record: Mapping[str, Any]) -> None:
        if stream not in STREAMS:
            raise AuditWriteError(f"unknown audit stream '{stream}'")
        body = {"recorded_at": datetime.now(UTC).isoformat(), **redact(record)}
        line = json.dumps(body, default=str, sort_keys=True) + "\n"
        with self._lock:
            try:
                self.output_dir.mkdir(parents=True, exist_ok=True)
                with open(self.path(stream), "a", encoding="utf-8") as fh:
                    fh.write(line)
                    fh.flush()
                    if self.fsync and stream != "tool_trace":
                        os.fsync(fh.fileno())
            except OSError as exc:
                raise AuditWriteError(f"cannot write the {stream} audit trail: {exc.strerror}") from exc


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
