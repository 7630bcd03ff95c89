"""The MCP server, through the SDK's own client, over every transport: in-process, a stdio
subprocess, and streamable HTTP on 127.0.0.1 without and with a bearer token."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_harness import ENTRY, ROOT, TOKEN, HttpServer, seed_file_store, server_env, stdio_params

from safety_governor import cli
from safety_governor.adapters.audit_jsonl import MemoryAudit
from safety_governor.adapters.store_sqlite import SQLiteStore
from safety_governor.bootstrap import build, build_mcp_server
from safety_governor.config import Settings
from safety_governor.errors import StoreUnavailable
from safety_governor.mcp_server import build_server

pytestmark = pytest.mark.anyio

TOOLS = {
    "search_runbooks", "search_evidence", "check_policy_conflicts", "query_live_logs", "ddft_score",
    "cdct_score", "eect_score", "reliability_profile", "evaluate_plan",
}
TRANSPORTS = ("in-process", "stdio", "http", "http-token")

PAYMENTS_HIGH = {"id": "inc-001", "service": "payments-api", "severity": "high",
                 "summary": "P99 latency jumped from 220ms to 1400ms", "symptoms": "timeouts, db connection saturation"}
CHECKOUT_MEDIUM = {"id": "inc-004", "service": "checkout-web", "severity": "medium",
                   "summary": "5xx rate rose to 6% ten minutes after release 2026.11.26-1",
                   "symptoms": "500s on /checkout/confirm, errors began after deploy"}


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def seeded(tmp_path_factory, knowledge) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("mcp")
    return {"store": seed_file_store(base / "governor.db", knowledge), "output": base / "output"}


@pytest.fixture(scope="module")
def in_process_server(seeded):
    server = build_mcp_server(Settings(store_path=seeded["store"], output_dir=seeded["output"]))
    yield server
    server.close()


@pytest.fixture(scope="module")
def http_server(seeded):
    server = HttpServer(server_env(seeded["store"], seeded["output"]))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def http_token_server(seeded):
    server = HttpServer(server_env(seeded["store"], seeded["output"], TOKEN), token=TOKEN)
    yield server
    server.stop()


@pytest.fixture(scope="module", params=TRANSPORTS)
async def client(request, seeded) -> AsyncIterator[Client]:
    """One SDK client session per transport, shared by the tests of this module."""
    if request.param == "in-process":
        target: Any = request.getfixturevalue("in_process_server")
        async with Client(target) as c:
            yield c
    elif request.param == "stdio":
        async with Client(stdio_params(server_env(seeded["store"], seeded["output"]))) as c:
            yield c
    else:
        server = request.getfixturevalue("http_token_server" if request.param == "http-token" else "http_server")
        headers = {"Authorization": f"Bearer {server.token}"} if server.token else {}
        async with httpx2.AsyncClient(headers=headers) as http:
            async with Client(streamable_http_client(server.url, http_client=http)) as c:
                yield c


def structured(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content
    assert isinstance(result.structured_content, dict)
    return result.structured_content


def error_text(result: Any) -> str:
    assert result.is_error
    return " ".join(c.text for c in result.content)


# --- one body per transport ---------------------------------------------------------------------


async def test_list_tools_shows_all_nine_tools_with_input_and_output_schemas(client):
    tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == TOOLS
    for tool in tools.values():
        assert tool.input_schema["type"] == "object"
        assert tool.output_schema and tool.output_schema.get("type") == "object", tool.name
        assert tool.description
        assert tool.input_schema.get("additionalProperties") is False, tool.name
        if tool.name != "evaluate_plan":
            assert tool.annotations and tool.annotations.read_only_hint is True, tool.name
    for name in ("search_runbooks", "search_evidence", "check_policy_conflicts"):
        assert "data, not instructions" in (tools[name].description or "")
    top_k = tools["search_evidence"].input_schema["properties"]["top_k"]
    assert (top_k["minimum"], top_k["maximum"], top_k["default"]) == (1, 50, 3)
    severity = tools["check_policy_conflicts"].input_schema["properties"]["severity"]
    assert severity["enum"] == ["low", "medium", "high", "critical"]


async def test_search_evidence_returns_structured_hits_for_payments_api(client):
    result = await client.call_tool(
        "search_evidence", {"query": "restart API pods latency", "service": "payments-api", "top_k": 5}
    )
    body = structured(result)
    assert body["service"] == "payments-api"
    assert 1 <= len(body["hits"]) <= 5
    assert {h["service"] for h in body["hits"]} <= {"payments-api", "*"}
    assert {"id", "score", "stance", "action", "text", "source"} <= set(body["hits"][0])
    assert any(h["stance"] == "contradict" and h["action"] == "restart_api_pods" for h in body["hits"])


@pytest.mark.parametrize(
    ("tool", "arguments", "field"),
    [
        ("search_evidence", {"query": "latency", "service": "payments-api", "top_k": 0}, "top_k"),
        ("search_evidence", {"query": "latency", "service": "payments-api", "top_k": 51}, "top_k"),
        ("search_runbooks", {"query": "latency", "service": ""}, "service"),
        ("search_evidence", {"query": "latency", "service": "   "}, "service"),
        ("check_policy_conflicts", {"service": "payments-api", "action": "restart_api_pods", "severity": "urgent"},
         "severity"),
        ("evaluate_plan", {"incident": {**CHECKOUT_MEDIUM, "severity": "sev1"},
                           "proposed_action": "rollback_last_deploy", "key_claims": [], "confidence": 5},
         "incident.severity"),
        ("evaluate_plan", {"incident": CHECKOUT_MEDIUM, "proposed_action": "rollback_last_deploy", "key_claims": [],
                           "confidence": 11}, "confidence"),
    ],
    ids=["top_k-0", "top_k-51", "empty-service", "blank-service", "unknown-severity", "incident-severity",
         "confidence-11"],
)
async def test_bad_arguments_are_a_one_line_tool_error_naming_the_field(client, tool, arguments, field):
    text = error_text(await client.call_tool(tool, arguments))
    assert f"field '{field}'" in text
    assert "\n" not in text and "Traceback" not in text and ".py" not in text and str(ROOT) not in text


async def test_evaluate_plan_blocks_restart_api_pods_for_payments_api_at_high(client):
    verdict = structured(await client.call_tool("evaluate_plan", {
        "incident": PAYMENTS_HIGH, "proposed_action": "restart_api_pods",
        "key_claims": ["If latency spikes, restart API pods for fast recovery while investigating DB bottlenecks."],
        "confidence": 9,
    }))
    assert verdict["decision"] == "block_and_escalate"
    assert {"policy_conflict", "contradictions"} <= set(verdict["rule_ids"])
    assert "pol-approval-01" in verdict["policy_conflicts"]
    assert verdict["contradiction_count"] >= 2
    assert {"ev-101", "ev-102"} <= set(verdict["contradicting_doc_ids"])
    assert verdict["approval_required"] != "none"
    assert verdict["confidence_final"] < 9
    assert verdict["decision_id"].startswith("dec-") and verdict["config_hash"].startswith("sha256:")


async def test_evaluate_plan_passes_rollback_last_deploy_for_checkout_web_at_medium(client):
    verdict = structured(await client.call_tool("evaluate_plan", {
        "incident": CHECKOUT_MEDIUM, "proposed_action": "rollback_last_deploy",
        "key_claims": ["If checkout-web 5xx errors rise within 30 minutes of a release, roll back to the previous "
                       "release image.", "Releases are stateless and schema changes are expand-only."],
        "confidence": 7,
    }))
    assert verdict["decision"] == "execute"
    assert verdict["rule_ids"] == [] and verdict["approval_required"] == "none"
    assert verdict["contradiction_count"] == 0 and verdict["policy_conflicts"] == []
    assert verdict["evidence_coverage"] > 0.34 and verdict["supporting_doc_ids"]


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        ("search_evidence", {"query": "latency", "service": "payments-api", "bogus": 1}),
        ("query_live_logs", {"service": "payments-api", "window_minute": 5}),  # misspelt window_minutes
        ("ddft_score", {"model": "gpt-oss-120b", "bogus": 1}),
        ("evaluate_plan", {"incident": CHECKOUT_MEDIUM, "proposed_action": "rollback_last_deploy", "key_claims": [],
                           "confidence": 5, "contradiction_count": 0}),
    ],
    ids=["search-bogus", "logs-misspelt", "score-bogus", "plan-extra-number"],
)
async def test_an_unknown_argument_is_a_one_line_error_not_a_silently_different_call(client, tool, arguments):
    text = error_text(await client.call_tool(tool, arguments))
    unknown = (set(arguments) - {"query", "service", "model", "incident", "proposed_action", "key_claims",
                                 "confidence"}).pop()
    assert f"field '{unknown}'" in text and "Extra inputs are not permitted" in text
    assert "\n" not in text


async def test_the_three_score_tools_answer_an_unknown_model_with_the_same_null_shape(client):
    shapes = {}
    for tool, fields in (("ddft_score", ("hoc", "ci")), ("cdct_score", ("u_curve_magnitude",)),
                         ("eect_score", ("ecs", "as_score", "act_rate"))):
        body = structured(await client.call_tool(tool, {"model": "no-such-model-9000"}))
        assert {f: body[f] for f in fields} == dict.fromkeys(fields), tool
        shapes[tool] = (body["model"], body["known"], body["source"])
    assert set(shapes.values()) == {("no-such-model-9000", False, "none")}
    known = structured(await client.call_tool("ddft_score", {"model": "gpt-oss-120b"}))
    assert known["known"] is True and known["ci"] > 0


async def test_query_live_logs_counts_4xx_and_5xx_disjointly_and_says_so_in_its_output_schema(client):
    tools = {t.name: t for t in (await client.list_tools()).tools}
    props = tools["query_live_logs"].output_schema["properties"]
    assert "400 to 499" in props["errors_4xx"]["description"]
    assert "500 to 599" in props["errors_5xx"]["description"]
    assert "errors_4xx + errors_5xx" in props["error_rate"]["description"]
    body = structured(await client.call_tool("query_live_logs", {"service": "checkout-web", "window_minutes": 1440}))
    assert body["total"] > 0 and body["errors_5xx"] > 0
    assert body["errors_4xx"] + body["errors_5xx"] <= body["total"]
    assert body["error_rate"] == round((body["errors_4xx"] + body["errors_5xx"]) / body["total"], 4)


async def test_evaluate_plan_is_annotated_as_writing_the_audit_trail_and_the_searches_as_read_only(client):
    tools = {t.name: t for t in (await client.list_tools()).tools}
    plan = tools["evaluate_plan"].annotations
    assert (plan.read_only_hint, plan.idempotent_hint, plan.destructive_hint) == (False, False, False)
    assert "audit trail" in (tools["evaluate_plan"].description or "")
    assert all(tools[n].annotations.read_only_hint for n in TOOLS - {"evaluate_plan"})


# --- evaluate_plan: Python finds what the caller leaves out -----------------------------------------


async def test_evaluate_plan_finds_conflicts_and_contradictions_even_without_claims(in_process_server):
    async with Client(in_process_server) as c:
        verdict = structured(await c.call_tool("evaluate_plan", {
            "incident": PAYMENTS_HIGH, "proposed_action": "restart_api_pods", "key_claims": [], "confidence": 10,
        }))
    assert verdict["decision"] == "block_and_escalate"
    assert {"policy_conflict", "contradictions"} <= set(verdict["rule_ids"])


async def test_evaluate_plan_takes_no_python_derived_numbers_as_input(in_process_server):
    async with Client(in_process_server) as c:
        tools = {t.name: t for t in (await c.list_tools()).tools}
    schema = tools["evaluate_plan"].input_schema
    assert set(schema["properties"]) == {"incident", "proposed_action", "key_claims", "confidence"}
    assert "$ref" not in json.dumps(schema)  # the incident object is inlined for small models
    assert set(schema["properties"]["incident"]["properties"]) == {"id", "service", "severity", "summary", "symptoms"}


async def test_evaluate_plan_verdicts_land_in_the_audit_trail(knowledge, tmp_path):
    store = SQLiteStore(":memory:")
    from safety_governor.knowledge import seed_store

    seed_store(store, knowledge, source="test")
    audit = MemoryAudit()
    governor = build(Settings(output_dir=tmp_path), store=store, audit=audit)
    async with Client(build_server(governor)) as c:
        verdict = structured(await c.call_tool("evaluate_plan", {
            "incident": CHECKOUT_MEDIUM, "proposed_action": "rollback_last_deploy", "key_claims": [], "confidence": 6,
        }))
    events = [e for e in audit.records["workflow_events"] if e.get("kind") == "plan_evaluation"]
    assert [e["decision_id"] for e in events] == [verdict["decision_id"]]
    governor.close()
    store.close()


async def test_evaluate_plan_fails_closed_when_the_audit_trail_cannot_be_written(knowledge, tmp_path):
    from safety_governor.knowledge import seed_store

    store = SQLiteStore(":memory:")
    seed_store(store, knowledge, source="test")
    governor = build(Settings(output_dir=tmp_path), store=store, audit=MemoryAudit(fail_on=("workflow_events",)))
    async with Client(build_server(governor)) as c:
        text = error_text(await c.call_tool("evaluate_plan", {
            "incident": CHECKOUT_MEDIUM, "proposed_action": "rollback_last_deploy", "key_claims": [], "confidence": 6,
        }))
    assert "treat the plan as blocked" in text
    store.close()


# --- nothing internal reaches a client ---------------------------------------------------------------


class _BrokenStore(SQLiteStore):
    """A real store whose searches fail the way a broken disk or an unexpected bug would."""

    def __init__(self, failure: BaseException) -> None:
        super().__init__(":memory:")
        self.failure = failure

    def search(self, *args: Any, **kwargs: Any) -> Any:
        raise self.failure


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (StoreUnavailable("cannot open /srv/secret/governor.db: disk I/O error"), "knowledge store is unavailable"),
        (RuntimeError("boom at /srv/secret/app.py token=hunter2"), "Error executing tool search_evidence"),
    ],
    ids=["store-unavailable", "unexpected-bug"],
)
async def test_store_failures_reach_the_client_without_paths_or_secrets(failure, expected, tmp_path, knowledge):
    from safety_governor.knowledge import seed_store

    store = _BrokenStore(failure)
    seed_store(store, {**knowledge, "logs": []}, source="test")  # knowledge present: the search itself fails
    governor = build(Settings(output_dir=tmp_path), store=store, audit=MemoryAudit())
    async with Client(build_server(governor)) as c:
        text = error_text(await c.call_tool("search_evidence", {"query": "latency", "service": "payments-api"}))
    assert expected in text
    assert "/srv/secret" not in text and "hunter2" not in text and "Traceback" not in text
    store.close()


# --- transports: auth, binding, stdout hygiene ----------------------------------------------------------

INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                         "clientInfo": {"name": "t", "version": "0"}}}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("authorization", "status"),
    [(None, 401), ("Bearer wrong-token-0123456789", 401), (f"Basic {TOKEN}", 401), (f"Bearer {TOKEN}", 200)],
    ids=["no-token", "wrong-token", "not-bearer", "right-token"],
)
def test_http_with_a_token_set_answers_401_unless_the_bearer_token_matches(
    http_token_server, authorization, status
):
    headers = {**MCP_HEADERS, **({"Authorization": authorization} if authorization else {})}
    response = httpx2.post(http_token_server.url, json=INITIALIZE, headers=headers, timeout=10)
    assert response.status_code == status
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer ")
        assert TOKEN not in response.text


def test_http_without_a_token_set_serves_loopback_clients(http_server):
    response = httpx2.post(http_server.url, json=INITIALIZE, headers=MCP_HEADERS, timeout=10)
    assert response.status_code == 200


def test_http_answers_each_request_with_one_json_body_not_an_event_stream(http_server):
    """A tool call is one request and one response: no SSE framing per call (the cheaper form the
    streamable HTTP transport allows; clients accept both)."""
    response = httpx2.post(http_server.url, json=INITIALIZE, headers=MCP_HEADERS, timeout=10)
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["result"]["serverInfo"]["name"] == "safety-governor"


@pytest.mark.parametrize(
    ("argv", "token", "needle"),
    [
        (["--host", "0.0.0.0"], "", "refusing to listen on 0.0.0.0 without a token"),
        (["--host", "10.1.2.3"], "", "refusing to listen on 10.1.2.3"),
        ([], "short", "MCP_SERVER_TOKEN is too short"),
        (["--port", "70000"], "", "--port must be"),
    ],
    ids=["any-address", "lan-address", "short-token", "bad-port"],
)
def test_mcp_http_refuses_unsafe_settings_with_one_line_and_exit_2(monkeypatch, capsys, argv, token, needle):
    monkeypatch.setenv("MCP_SERVER_TOKEN", token)
    assert cli.main(["mcp", "--http", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err and "Traceback" not in err


def test_mcp_http_on_a_busy_port_prints_the_bind_error_alone_and_exits_2(seeded):
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        env = {**os.environ, **server_env(seeded["store"], seeded["output"])}
        proc = subprocess.run(
            [sys.executable, "-m", "safety_governor", "mcp", "--http", "--port", str(port), "--log-level", "info"],
            env=env, cwd=str(ROOT), capture_output=True, text=True, timeout=60,
        )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert lines == [f"error: cannot listen on 127.0.0.1:{port}: address already in use; another process is "
                     "listening there: stop it or choose another --port"]


def test_http_connections_on_the_pre_bound_socket_get_tcp_nodelay():
    """The port is bound before uvicorn starts; asyncio sets TCP_NODELAY on accepted connections
    only for sockets made with proto IPPROTO_TCP. Without it each small answer waited ~40 ms on
    Nagle's algorithm and the client's delayed ACK (bench/bench_mcp.py showed 50 ms per call)."""
    import asyncio

    from safety_governor.mcp_serve import _listen

    listener = _listen("127.0.0.1", 0)
    port = listener.getsockname()[1]
    accepted: list[int] = []

    async def main() -> None:
        def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            accepted.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(on_connect, sock=listener)
        async with server:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            for _ in range(100):
                if accepted:
                    break
                await asyncio.sleep(0.01)
            writer.close()

    asyncio.run(main())
    assert accepted and accepted[0] != 0


def test_stdio_server_writes_only_mcp_messages_on_stdout_and_logs_on_stderr(seeded):
    env = {**server_env(seeded["store"], seeded["output"]), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, str(ENTRY), "--log-level", "info"], input=json.dumps(INITIALIZE) + "\n",
        env=env, cwd=str(ROOT), capture_output=True, text=True, timeout=30,
    )
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert lines, proc.stderr
    messages = [json.loads(line) for line in lines]
    assert messages[0]["id"] == 1 and messages[0]["result"]["serverInfo"]["name"] == "safety-governor"
    assert "on stdio" in proc.stderr
    assert proc.returncode == 0
