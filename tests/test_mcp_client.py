"""``MCPToolPort``: the agents' tool port over an MCP client session (in-process, stdio, HTTP),
and the offline agent giving the same gate decision through it as through direct calls."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from mcp_harness import ENTRY, ROOT, TOKEN, HttpServer, free_port, seed_file_store, server_env

from safety_governor.adapters.audit_jsonl import MemoryAudit
from safety_governor.bootstrap import build, build_mcp_server, in_process_port
from safety_governor.config import Settings
from safety_governor.errors import ConfigError, ToolCallError
from safety_governor.mcp_client import MCPToolPort
from safety_governor.models import Incident
from safety_governor.ports import ToolPort

TRANSPORTS = ("mcp-inprocess", "mcp-stdio", "mcp-http")


@pytest.fixture(scope="module")
def seeded(tmp_path_factory, knowledge) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("mcp-port")
    return {"store": seed_file_store(base / "governor.db", knowledge), "output": base / "output"}


@pytest.fixture(scope="module")
def http_token_server(seeded):
    server = HttpServer(server_env(seeded["store"], seeded["output"], TOKEN), token=TOKEN)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def shared_audit() -> MemoryAudit:
    return MemoryAudit()


@pytest.fixture(scope="module", params=TRANSPORTS)
def port(request, seeded, shared_audit):
    """One port per transport, all recording into the same in-memory audit trail."""
    if request.param == "mcp-inprocess":
        server = build_mcp_server(Settings(store_path=seeded["store"], output_dir=seeded["output"]))
        p = MCPToolPort.in_process(server, audit=shared_audit)
    elif request.param == "mcp-stdio":
        server = None
        p = MCPToolPort.stdio(sys.executable, [str(ENTRY)], env=server_env(seeded["store"], seeded["output"]),
                              cwd=str(ROOT), audit=shared_audit)
    else:
        server = None
        http = request.getfixturevalue("http_token_server")
        p = MCPToolPort.http(http.url, token=TOKEN, audit=shared_audit)
    yield p
    p.close()
    if server is not None:
        server.close()


def test_each_call_lands_in_the_tool_trace_with_arguments_result_ids_duration_and_transport(port, shared_audit):
    arguments = {"query": "restart API pods latency", "service": "payments-api", "top_k": 3}
    result = port.call("search_evidence", arguments)
    ids = [h["id"] for h in result["hits"]]
    assert ids
    trace = shared_audit.records["tool_trace"][-1]
    assert trace["tool"] == "search_evidence" and trace["arguments"] == arguments
    assert trace["result_ids"] == ids
    assert trace["transport"] == port.transport and trace["ok"] is True
    assert trace["duration_ms"] >= 0


def test_a_bad_argument_raises_tool_call_error_and_is_traced_as_failed(port, shared_audit):
    with pytest.raises(ToolCallError, match="field 'top_k'"):
        port.call("search_evidence", {"query": "latency", "service": "payments-api", "top_k": 51})
    trace = shared_audit.records["tool_trace"][-1]
    assert trace["ok"] is False and "top_k" in trace["error"] and trace["transport"] == port.transport


def test_evaluate_plan_through_the_port_traces_the_decision_id(port, shared_audit):
    verdict = port.call("evaluate_plan", {
        "incident": {"id": "inc-001", "service": "payments-api", "severity": "high", "summary": "latency"},
        "proposed_action": "restart_api_pods", "key_claims": [], "confidence": 8,
    })
    assert verdict["decision"] == "block_and_escalate"
    assert verdict["decision_id"] in shared_audit.records["tool_trace"][-1]["result_ids"]


def test_an_unreachable_http_server_fails_at_construction_with_a_tool_call_error():
    with pytest.raises(ToolCallError, match="cannot open an MCP session"):
        MCPToolPort.http(f"http://127.0.0.1:{free_port()}/mcp", timeout=5)


def test_a_closed_port_refuses_calls(governor):
    port: ToolPort = in_process_port(governor)  # mypy checks MCPToolPort against the ToolPort protocol
    assert isinstance(port, MCPToolPort)
    port.close()
    port.close()  # idempotent
    with pytest.raises(ToolCallError, match="closed"):
        port.call("search_runbooks", {"query": "latency", "service": "payments-api"})


def test_the_offline_agent_gets_the_same_gate_decision_through_mcp_as_through_direct_calls(
    settings, store, knowledge
):
    local = build(settings, store=store, audit=MemoryAudit())
    audit = MemoryAudit()
    via_mcp = build(settings, store=store, audit=audit, tool_transport="mcp-inprocess")
    try:
        assert via_mcp.tool_port.transport == "mcp-inprocess"
        for raw in knowledge["incidents"][:4]:
            incident = Incident.model_validate(raw)
            a, b = local.pipeline.assess(incident), via_mcp.pipeline.assess(incident)
            assert b.gate.model_dump(exclude={"decision_id"}) == a.gate.model_dump(exclude={"decision_id"})
            assert b.stress.model_dump(exclude={"live_logs"}) == a.stress.model_dump(exclude={"live_logs"})
            assert b.plan == a.plan and b.tool_calls == a.tool_calls
        transports = {t["transport"] for t in audit.records["tool_trace"]}
        assert transports == {"mcp-inprocess"}
    finally:
        via_mcp.close()
        local.close()


def test_build_with_mcp_inprocess_writes_tool_trace_jsonl_and_closes_the_session(settings, store):
    governor = build(settings, store=store, tool_transport="mcp-inprocess")
    governor.pipeline.assess(Incident(id="inc-x", service="checkout-web", severity="medium",
                                      summary="5xx spike after deploy"))
    port = governor.tool_port
    governor.close()
    genesis, *calls = [json.loads(line) for line in (settings.output_dir / "tool_trace.jsonl").read_text().splitlines()]
    assert genesis["kind"] == "audit_genesis"
    assert calls and all(call["transport"] == "mcp-inprocess" for call in calls)
    with pytest.raises(ToolCallError):
        port.call("search_runbooks", {"query": "latency", "service": "payments-api"})


def test_build_rejects_an_unknown_tool_transport(settings, store):
    with pytest.raises(ConfigError, match="tool transport"):
        build(settings, store=store, tool_transport="carrier-pigeon")


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="counts open file descriptors via /proc")
def test_many_in_process_calls_reuse_worker_threads_and_store_connections(seeded):
    """A file store opens one connection per thread; the port must not get a new thread per call."""
    server = build_mcp_server(Settings(store_path=seeded["store"], output_dir=seeded["output"]))
    try:
        with MCPToolPort.in_process(server) as port:
            port.call("search_evidence", {"query": "latency", "service": "payments-api"})
            before = len(list(Path("/proc/self/fd").iterdir()))
            for i in range(60):
                port.call("search_evidence", {"query": f"latency {i}", "service": "payments-api"})
            after = len(list(Path("/proc/self/fd").iterdir()))
        assert after - before <= 2
    finally:
        server.close()
