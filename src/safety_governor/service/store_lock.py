"""One active governor per embedded store file: an exclusive ``flock`` on ``<store>.lock``.

A second service (dashboard, ``--no-tui`` or ``serve``) on the same file refuses to start with a
message naming the holder's pid, unless it starts read-only as a viewer. The kernel drops the
lock when the holder exits, however it exits (SIGKILL included), so a stale lock never blocks a
restart. Elasticsearch needs no lock: its create-only incident claim arbitrates.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import ConfigError


def lock_path(store_path: Path) -> Path:
    return store_path.with_name(store_path.name + ".lock")


class StoreLock:
    """The exclusive lock on one store file; ``close`` releases it.

    Raises ``ConfigError`` (one line, exit 2) when another process holds it.
    """

    def __init__(self, store_path: Path, *, role: str = "governor") -> None:
        self.path = lock_path(Path(store_path))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self.holder()
            os.close(self._fd)
            self._fd = None
            who = f"pid {holder.get('pid', '?')}" + (f" ({holder['role']} on {holder['host']}, since {holder['since']})"
                                                     if holder.get("host") else "")
            raise ConfigError(f"{store_path} is in use by another governor: {who}. Stop it first, or start "
                              "read-only as a viewer (--read-only)") from None
        os.ftruncate(self._fd, 0)
        os.write(self._fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "role": role,
                                       "since": datetime.now(UTC).isoformat(timespec="seconds")}).encode())

    def holder(self) -> dict[str, Any]:
        """What the holder wrote into the lock file (its pid, host, role and start)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def close(self) -> None:
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None


def lock_holder(store_path: Path) -> dict[str, Any] | None:
    """Who holds the store's lock (what it wrote: pid, host, role, since), or ``None`` when no
    governor runs on it. Probes with a shared lock taken and dropped at once."""
    path = lock_path(Path(store_path))
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            data = json.loads(path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            data = {}
        return data if isinstance(data, dict) else {}
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
