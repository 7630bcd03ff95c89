"""Shared fixtures: a real embedded store seeded from data/, and a wired governor over it."""

from __future__ import annotations

from pathlib import Path

import pytest

from safety_governor.adapters.audit_jsonl import MemoryAudit
from safety_governor.adapters.store_sqlite import SQLiteStore
from safety_governor.bootstrap import Governor, build
from safety_governor.config import DEFAULT_DATA_DIR, Settings
from safety_governor.knowledge import load_knowledge_file, seed_store

SAMPLE_DATA = DEFAULT_DATA_DIR / "sample_data.json"


@pytest.fixture(scope="session")
def knowledge() -> dict:
    return load_knowledge_file(SAMPLE_DATA)


@pytest.fixture
def store(knowledge):
    s = SQLiteStore(":memory:")
    seed_store(s, knowledge, source="test")
    yield s
    s.close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(output_dir=tmp_path / "output", store_path=tmp_path / "output" / "governor.db")


@pytest.fixture
def audit() -> MemoryAudit:
    return MemoryAudit()


@pytest.fixture
def governor(settings, store, audit) -> Governor:
    return build(settings, store=store, audit=audit)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
