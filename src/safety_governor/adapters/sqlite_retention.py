"""Keeping a long-running embedded store bounded: telemetry retention and WAL checkpoints.

Log lines older than the retention are deleted in small batches, each its own short transaction,
so the write lock is never held for long (the traffic and the service keep writing between
batches). Deleted pages go to SQLite's free list and are reused by new lines, so the file stops
growing once the retention window is full; no VACUUM (which would rewrite the whole file under
an exclusive lock) is needed. A periodic ``wal_checkpoint(TRUNCATE)`` keeps the ``-wal`` file
small even when readers rarely leave a gap for the automatic checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .store_sqlite import SQLiteStore

PRUNE_SQL = "DELETE FROM logs WHERE rowid IN (SELECT rowid FROM logs WHERE ts < ? ORDER BY ts LIMIT ?)"


class LogRetention:
    """Prunes ``logs`` older than ``hours`` from ``store``, one batch per due ``tick``.

    Args:
        store: the embedded store (a file; an in-memory store has nothing to bound).
        hours: the retention; 0 keeps everything (only the checkpoints run).
        batch: rows deleted per transaction at most.
        interval: seconds between batches while nothing is left to prune (a full batch is
            followed by the next one on the next tick).
        checkpoint_interval: seconds between ``wal_checkpoint(TRUNCATE)``.
        clock: epoch seconds (injected in tests).
    """

    def __init__(self, store: SQLiteStore, hours: float, *, batch: int = 2000, interval: float = 5.0,
                 checkpoint_interval: float = 30.0, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.hours = hours
        self.batch = batch
        self.interval = interval
        self.checkpoint_interval = checkpoint_interval
        self.clock = clock
        self.pruned = 0
        self.checkpoints = 0
        now = clock()
        self._next_prune = now
        self._next_checkpoint = now + checkpoint_interval

    def prune_batch(self, now: float) -> int:
        """Delete up to ``batch`` lines older than the retention; returns how many."""
        cutoff_ms = int((now - self.hours * 3600) * 1000)
        with self.store.atomic():
            deleted = self.store._conn().execute(PRUNE_SQL, (cutoff_ms, self.batch)).rowcount
        self.pruned += max(0, deleted)
        return max(0, deleted)

    def checkpoint(self) -> tuple[int, int, int]:
        """``PRAGMA wal_checkpoint(TRUNCATE)``: (busy, wal pages, pages checkpointed)."""
        row = self.store._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        self.checkpoints += 1
        return (int(row[0]), int(row[1]), int(row[2])) if row else (0, 0, 0)

    def tick(self) -> int:
        """Do what is due: at most one prune batch, and the checkpoint. Returns lines pruned."""
        now = self.clock()
        deleted = 0
        if self.hours > 0 and now >= self._next_prune:
            deleted = self.prune_batch(now)
            self._next_prune = now if deleted >= self.batch else now + self.interval
        if now >= self._next_checkpoint:
            self.checkpoint()
            self._next_checkpoint = now + self.checkpoint_interval
        return deleted
