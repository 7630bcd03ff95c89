"""Missing knowledge is not permission (DESIGN principle 7), over the MCP surface.

A fresh clone has no ``output/governor.db``: the stdio server seeds its empty embedded store from
``data/`` (and says so on stderr), so ``check_policy_conflicts`` finds the seed's policies. A store
that has no policies answers the policy and search tools with a tool error, never
``conflict: false`` or no hits.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from mcp import Client, ClientSession
from mcp.client.stdio import stdio_client

from mcp_harness import ENTRY, ROOT, server_env, stdio_params
from safety_governor.adapters.audit_jsonl import MemoryAudit
from safety_governor.adapters.store_sqlite import SQLiteStore
from safety_governor.bootstrap import build
from safety_governor.config import Settings
from safety_governor.knowledge import seed_store
from safety_governor.mcp_server import build_server
from safety_governor.models import Incident

pytestmark = pytest.mark.anyio

INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                         "clientInfo": {"name": "t", "version": "0"}}}


async def test_the_stdio_server_on_a_fresh_clone_seeds_its_empty_store_and_finds_the_seed_policy(tmp_path):
    store_path = tmp_path / "fresh" / "governor.db"
    assert not store_path.exists()
    params = stdio_params({**server_env(store_path, tmp_path / "out"), "PATH": "/usr/bin:/bin"})
    with (tmp_path / "stderr.txt").open("w+", encoding="utf-8") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            result = await session.call_tool("check_policy_conflicts", {
                "service": "payments-api", "action": "restart_api_pods", "severity": "high"})
        errlog.seek(0)
        stderr = errlog.read()
    assert not result.is_error, result.content
    assert result.structured_content is not None and result.structured_content["conflict"] is True
    assert [c["id"] for c in result.structured_content["conflicts"]] == ["pol-approval-01"]
    assert "was empty; seeded it from" in stderr and "policies" in stderr
    # Seeded once: a second start finds knowledge and says nothing about seeding.
    again = subprocess.run(
        [sys.executable, str(ENTRY)], input=json.dumps(INITIALIZE) + "\n",
        env={**server_env(store_path, tmp_path / "out"), "PATH": "/usr/bin:/bin"}, cwd=str(ROOT),
        capture_output=True, text=True, timeout=60,
    )
    assert again.returncode == 0 and "seeded" not in again.stderr


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        ("check_policy_conflicts", {"service": "payments-api", "action": "restart_api_pods", "severity": "high"}),
        ("search_runbooks", {"query": "latency", "service": "payments-api"}),
        ("search_evidence", {"query": "restart", "service": "payments-api"}),
    ],
)
async def test_a_store_without_policies_answers_with_a_tool_error_not_no_conflict(tool, arguments, tmp_path,
                                                                                 knowledge):
    store = SQLiteStore(":memory:")
    seed_store(store, {**knowledge, "policies": []}, source="test")
    governor = build(Settings(output_dir=tmp_path), store=store, audit=MemoryAudit())
    try:
        async with Client(build_server(governor)) as client:
            result = await client.call_tool(tool, arguments)
        assert result.is_error
        text = " ".join(c.text for c in result.content)
        assert "knowledge unavailable" in text and "policies" in text
    finally:
        store.close()


def test_the_gate_blocks_on_knowledge_unavailable_when_the_store_has_no_policies(tmp_path, knowledge):
    store = SQLiteStore(":memory:")
    seed_store(store, {**knowledge, "policies": []}, source="test")
    governor = build(Settings(output_dir=tmp_path), store=store, audit=MemoryAudit())
    try:
        incident = Incident(id="inc-k", service="checkout-web", severity="medium", summary="5xx after a deploy",
                            symptoms="errors began after deploy")
        record = governor.pipeline.run(incident)
        assert "knowledge_unavailable" in record.gate.rule_ids
        assert not record.executed
        assert "the policies index is empty" in " ".join(r.message for r in record.gate.reasons)
    finally:
        store.close()
