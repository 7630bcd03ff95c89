"""A damaged store file (overwritten, truncated) is one line naming the file, what is wrong and
what to do, exit 2: in the CLI, the dashboard and the MCP server (a real subprocess each)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mcp_harness import ENTRY, ROOT, free_port, seed_file_store, server_env

from safety_governor.adapters.store_sqlite import SQLiteStore
from safety_governor.errors import StoreCorrupt


def _not_a_database(tmp_path: Path, knowledge: dict) -> Path:
    path = tmp_path / "governor.db"
    path.write_bytes(b"this was a log file, not a database\n" * 200)
    return path


def _truncated(tmp_path: Path, knowledge: dict) -> Path:
    path = seed_file_store(tmp_path / "governor.db", knowledge)
    size = path.stat().st_size
    with path.open("r+b") as fh:
        fh.truncate(size // 3)
    return path


DAMAGE = {"not-a-database": (_not_a_database, "file is not a database"),
          "truncated": (_truncated, "database disk image is malformed")}

COMMANDS = {
    "cli-approvals": [sys.executable, "-m", "safety_governor", "approvals", "list"],
    "cli-runbooks": [sys.executable, "-m", "safety_governor", "runbooks", "review"],
    "dashboard": [sys.executable, str(ROOT / "demo_rich_agentic.py"), "--no-tui", "--autopilot"],
    "mcp-stdio": [sys.executable, str(ENTRY)],
    "mcp-http": [sys.executable, "-m", "safety_governor", "mcp", "--http", "--port", str(free_port())],
}


@pytest.mark.parametrize("damage", DAMAGE)
@pytest.mark.parametrize("command", COMMANDS)
def test_a_damaged_store_file_is_one_line_naming_the_file_and_the_fix_with_exit_2(
    tmp_path, knowledge, damage, command
):
    make, what = DAMAGE[damage]
    path = make(tmp_path, knowledge)
    env = {**os.environ, **server_env(path, tmp_path / "output"), "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(COMMANDS[command], env=env, cwd=str(ROOT), capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip() and "on stdio" not in line]
    assert len(lines) == 1, proc.stderr
    assert lines[0] == (f"error: {path}: the store file is damaged ({what}); move it aside (mv {path} "
                        f"{path}.damaged) and run `python -m safety_governor seed` to rebuild it")


def test_damage_first_read_after_opening_is_reported_the_same_way(tmp_path, knowledge):
    """The file opens (its first pages are intact), and a later query reads a damaged page."""
    path = seed_file_store(tmp_path / "governor.db", knowledge)
    store = SQLiteStore(path)
    try:
        pages = store._execute("PRAGMA page_count")[0][0]
        assert pages > 8
        with path.open("r+b") as fh:  # overwrite every page but the first (schema) one
            page_size = store._execute("PRAGMA page_size")[0][0]
            fh.seek(page_size)
            fh.write(b"\xff" * page_size * (pages - 1))
    finally:
        store.close()
    with pytest.raises(StoreCorrupt, match=rf"^{path}: the store file is damaged"):
        reopened = SQLiteStore(path)
        try:
            reopened.search("evidence", "restart api pods", filters={"service": "payments-api"})
        finally:
            reopened.close()
