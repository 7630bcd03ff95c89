"""Helpers for the MCP tests: a seeded store file, and real MCP servers as subprocesses
(stdio through the ``mcp/`` entry, streamable HTTP through ``python -m safety_governor mcp``)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mcp import StdioServerParameters

from safety_governor.adapters.store_sqlite import SQLiteStore
from safety_governor.knowledge import seed_store

ROOT = Path(__file__).resolve().parents[1]
ENTRY = ROOT / "mcp" / "reliability_framework_mcp_server.py"
TOKEN = "test-token-0123456789abcdef"


def seed_file_store(path: Path, knowledge: dict[str, Any]) -> Path:
    store = SQLiteStore(path)
    try:
        seed_store(store, knowledge, source="test")
    finally:
        store.close()
    return path


def server_env(store_path: Path, output_dir: Path, token: str | None = None) -> dict[str, str]:
    """What a server subprocess needs: the store and output settings, and the token (blank: none).

    Blank values also shadow anything a developer's ``.env`` might set.
    """
    return {
        "GOVERNOR_STORE_PATH": str(store_path),
        "GOVERNOR_OUTPUT_DIR": str(output_dir),
        "MCP_SERVER_TOKEN": token or "",
        "ELASTIC_URL": "",
        "CDCT_API_URL": "",
        "DDFT_API_URL": "",
        "EECT_API_URL": "",
    }


def stdio_params(env: dict[str, str]) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=[str(ENTRY)], env=env, cwd=str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class HttpServer:
    """``python -m safety_governor mcp --http`` on a free loopback port, ready when it accepts."""

    def __init__(self, env: dict[str, str], *, token: str | None = None) -> None:
        self.port = free_port()
        self.token = token
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        full_env = {**os.environ, **env}
        # The server's log goes to a file, not a pipe nobody drains.
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "safety_governor", "mcp", "--http", "--port", str(self.port)],
            env=full_env, cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=self.log, text=True,
        )
        deadline = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"MCP HTTP server exited early: {self.log.read()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("MCP HTTP server did not start within 20 s") from None
                time.sleep(0.05)

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
        return self.proc.returncode
