"""Embedded-store retention: telemetry older than LOG_RETENTION_HOURS goes in small batches, the
file stops growing once the window is full, and the -wal file is checkpointed back to empty."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from safety_governor.adapters.sqlite_retention import LogRetention
from safety_governor.adapters.store_sqlite import SQLiteStore
from safety_governor.config import Settings

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def lines(start: datetime, count: int, step_s: float = 1.0, tag: str = "a") -> list[dict]:
    return [{"id": f"{tag}-{n}", "timestamp": (start + timedelta(seconds=n * step_s)).isoformat(),
             "service": "api", "request": "GET /x", "response": 200, "bytes": 10, "message": "x" * 400}
            for n in range(count)]


def test_lines_older_than_the_retention_are_pruned_in_batches_and_newer_ones_stay(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "g.db")
    store.index_documents("logs", lines(NOW - timedelta(hours=3), 500, tag="old"))
    store.index_documents("logs", lines(NOW - timedelta(minutes=30), 300, tag="new"))
    retention = LogRetention(store, hours=1, batch=200, clock=lambda: NOW.timestamp())
    assert [retention.tick() for _ in range(4)] == [200, 200, 100, 0]  # full batches go on, then it waits
    assert store.count("logs") == 300 and store.get("logs", "new-0") is not None
    assert store.log_stats(service="api", window_minutes=60, now=NOW).total == 300
    store.close()


def test_zero_hours_keeps_every_line() -> None:
    store = SQLiteStore(":memory:")
    store.index_documents("logs", lines(NOW - timedelta(days=30), 50))
    assert LogRetention(store, hours=0, clock=lambda: NOW.timestamp()).tick() == 0
    assert store.count("logs") == 50


def test_with_retention_the_file_levels_off_while_traffic_keeps_coming_and_the_wal_is_truncated(
        tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    store = SQLiteStore(path)
    clock = {"now": NOW.timestamp()}
    retention = LogRetention(store, hours=1 / 60, batch=5000, interval=0, checkpoint_interval=0,
                             clock=lambda: clock["now"])
    sizes = []
    for minute in range(12):  # 12 minutes of 20 lines a second, one-minute retention
        start = datetime.fromtimestamp(clock["now"], UTC)
        store.index_documents("logs", lines(start, 1200, step_s=0.05, tag=f"m{minute}"))
        clock["now"] += 60
        while retention.tick():
            pass
        sizes.append(path.stat().st_size)
    assert store.count("logs") <= 1200 * 2
    assert sizes[-1] <= sizes[3] * 1.1  # flat after the window filled
    assert Path(str(path) + "-wal").stat().st_size == 0 and retention.checkpoints >= 12
    store.close()


def test_the_retention_setting_comes_from_the_environment() -> None:
    assert Settings.from_env({"LOG_RETENTION_HOURS": "6", "AGENT_CONCURRENCY": "8"}).log_retention_hours == 6
    assert Settings.from_env({}).log_retention_hours == 24 and Settings.from_env({}).agent_concurrency == 4
