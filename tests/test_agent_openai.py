"""The OpenAI-compatible backend against a local fake speaking the chat-completions API.

``RecordingServer`` is a real HTTP server on 127.0.0.1 answering ``POST /v1/chat/completions``
with scripted replies in the documented shape (``choices[0].message`` with ``content`` or
``tool_calls``, ``finish_reason``, ``usage``), including the ways real servers differ (missing
ids, arguments as objects) and the adversarial cases (no JSON, a tool loop that never ends, a
conflict-free plan that Python then blocks). Tools run for real, on a seeded embedded store.
The shapes come from OpenAI's chat-completions API reference and the servers' own documentation
and sources: Ollama's OpenAI-compatibility page (``tool_choice`` is not among the supported
fields) and context-length page (4096 tokens by default, raised with ``OLLAMA_CONTEXT_LENGTH`` or
``num_ctx``), and llama.cpp's server (``tools param requires --jinja flag``, answered as a 500).
"""

from __future__ import annotations

import inspect
import json

import pytest

from safety_governor.adapters.audit_jsonl import MemoryAudit
from safety_governor.adapters.framework_scores import BundledScores
from safety_governor.agents._live import HttpPolicy
from safety_governor.agents.openai_compat import (
    TOOL_SCHEMAS,
    OpenAICompatAgent,
    normalise_tool_calls,
    parse_arguments,
)
from safety_governor.bootstrap import build, build_agent
from safety_governor.config import DEFAULT_DATA_DIR, Settings
from safety_governor.errors import AgentBackendError, ConfigError
from safety_governor.models import GateOutput, Incident
from safety_governor.tools import GovernorTools, LocalToolPort
from wire_fakes import Recorded, RecordingServer, Reply

API_KEY = "sk-openai-compat-test-key"
PAYMENTS_HIGH = Incident(id="inc-o1", service="payments-api", severity="high",
                         summary="P99 latency jumped from 220ms to 1400ms", symptoms="timeouts, db saturation")
RESTART_PLAN = {"proposed_action": "restart_api_pods", "rationale": "rbk-api-01",
                "key_claims": ["Restarting API pods recovers latency quickly."], "confidence_initial": 9,
                "retrieved_context_ids": ["rbk-api-01"]}
CONFLICT_FREE_STRESS = {"claim_results": [], "policy_conflicts": [], "fabricated_authority_rejected": False,
                        "confidence_post_stress": 9.5, "position_after_stress": "maintain"}


def completion(content: str | None = None, tool_calls: list | None = None, *, model: str = "qwen2.5:7b") -> Reply:
    message: dict = {"role": "assistant", "content": content}
    if tool_calls is not None:
        message["tool_calls"] = tool_calls
    return Reply(200, {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1764158400, "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if tool_calls else "stop"}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
    })


def fn_call(name: str, arguments, call_id: str | None = "call_1") -> dict:
    call = {"type": "function", "function": {"name": name, "arguments": arguments}}
    if call_id is not None:
        call["id"] = call_id
    return call


class Script:
    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies)

    def __call__(self, req: Recorded) -> Reply:
        if req.path == "/v1/chat/completions" and self.replies:
            return self.replies.pop(0)
        return Reply(500, {"error": {"message": "script exhausted"}})


def agent_on(server: RecordingServer, **kwargs) -> OpenAICompatAgent:
    kwargs.setdefault("policy", HttpPolicy(connect_timeout=2, read_timeout=5, max_retries=2, backoff=0.01))
    return OpenAICompatAgent(base_url=server.url + "/v1", model="qwen2.5:7b", api_key=API_KEY,
                             sleep=lambda s: None, **kwargs)


@pytest.fixture
def tools(store):
    return LocalToolPort(GovernorTools(store, BundledScores(DEFAULT_DATA_DIR / "model_profiles.json")))


# Set by Python, never by an agent (the MCP server does not expose them either).
PYTHON_ONLY_PARAMS = {"exclude_incident_id"}


def test_the_tool_table_matches_the_governor_tools_signatures():
    registry = GovernorTools(None, None).registry()  # type: ignore[arg-type]
    assert set(TOOL_SCHEMAS) == set(registry)
    for name, fn in registry.items():
        params = {p: v for p, v in inspect.signature(fn).parameters.items() if p not in PYTHON_ONLY_PARAMS}
        schema = TOOL_SCHEMAS[name]["parameters"]
        assert set(schema["properties"]) == set(params), name
        required = {p for p, v in params.items() if v.default is inspect.Parameter.empty}
        assert set(schema["required"]) == required, name


def test_a_tool_loop_on_a_local_chat_completions_fake_runs_tools_and_returns_the_final_text(tools):
    with RecordingServer(Script(
        completion(None, [fn_call("search_runbooks", {"query": "latency db saturation", "service": "payments-api"},
                                  call_id=None)]),  # an object, no id (Ollama-style)
        completion("", [fn_call("check_policy_conflicts",
                                json.dumps(json.dumps({"service": "payments-api", "action": "restart_api_pods",
                                                       "severity": "high"})), call_id="c2"),
                        fn_call("query_live_logs", "", call_id="c3")]),  # doubly encoded, and empty
        completion(json.dumps(RESTART_PLAN)),
    )) as llm:
        reply = agent_on(llm).converse("plan", "plan it", incident=PAYMENTS_HIGH, tools=tools, context={})

    assert json.loads(reply.text) == RESTART_PLAN
    assert [c.tool for c in reply.tool_calls] == ["search_runbooks", "check_policy_conflicts", "query_live_logs"]
    assert all(c.ok for c in reply.tool_calls)
    assert "rbk-api-01" in reply.tool_calls[0].result_ids
    assert reply.model == "qwen2.5:7b" and reply.usage["requests"] == 3 and reply.usage["prompt_tokens"] == 300

    first, second, third = (r.json() for r in llm.requests)
    assert llm.requests[0].headers["authorization"] == f"Bearer {API_KEY}"
    assert first["model"] == "qwen2.5:7b" and first["tool_choice"] == "auto"
    assert {t["function"]["name"] for t in first["tools"]} == set(TOOL_SCHEMAS)
    assert [m["role"] for m in first["messages"]] == ["system", "user"]
    assistant, tool_msg = second["messages"][2], second["messages"][3]
    assert assistant["tool_calls"][0]["id"] == tool_msg["tool_call_id"] == "call_0_0"  # an id was given
    assert json.loads(assistant["tool_calls"][0]["function"]["arguments"])["service"] == "payments-api"
    assert "rbk-api-01" in tool_msg["content"]
    policy_result = json.loads(third["messages"][5]["content"])
    assert policy_result["conflict"] is True and policy_result["conflicts"][0]["id"] == "pol-approval-01"
    assert third["messages"][5]["tool_call_id"] == "c2" and third["messages"][6]["tool_call_id"] == "c3"


def test_bad_arguments_and_unknown_tools_go_back_to_the_model_as_tool_errors(tools):
    with RecordingServer(Script(
        completion(None, [fn_call("search_runbooks", "{not json", call_id="a"),
                          fn_call("search_evidence", "[1, 2]", call_id="b"),
                          fn_call("delete_everything", {}, call_id="c")]),
        completion("done"),
    )) as llm:
        reply = agent_on(llm).converse("stress", "go", incident=PAYMENTS_HIGH, tools=tools, context={})
    assert reply.text == "done"
    assert [(c.ok, c.error) for c in reply.tool_calls] == [
        (False, "arguments are not valid JSON"), (False, "arguments must be a JSON object"),
        (False, "unknown tool 'delete_everything'")]
    results = [json.loads(m["content"]) for m in llm.requests[1].json()["messages"] if m["role"] == "tool"]
    assert results == [{"error": "arguments are not valid JSON"}, {"error": "arguments must be a JSON object"},
                       {"error": "unknown tool 'delete_everything'"}]


def test_a_tool_loop_that_never_ends_is_cut_at_the_turn_budget(tools):
    def forever(req: Recorded) -> Reply:
        return completion(None, [fn_call("search_runbooks", {"query": "again", "service": "payments-api"})])

    with RecordingServer(forever) as llm:
        agent = agent_on(llm, max_turns=4)
        with pytest.raises(AgentBackendError, match="still calling tools after 4 turns"):
            agent.converse("plan", "plan it", incident=PAYMENTS_HIGH, tools=tools, context={})
    assert len(llm.requests) == 4


def test_too_many_tool_calls_in_one_turn_fail_closed(tools):
    calls = [fn_call("query_live_logs", {}, call_id=f"c{i}") for i in range(40)]
    with RecordingServer(Script(completion(None, calls))) as llm:
        with pytest.raises(AgentBackendError, match="more than 32 tool calls"):
            agent_on(llm).converse("plan", "p", incident=PAYMENTS_HIGH, tools=tools, context={})


@pytest.mark.parametrize(("reply", "expected"), [
    (Reply(200, {"object": "chat.completion", "choices": []}), "no choices"),
    (completion(""), "empty reply"),
    (completion(None, [{"type": "function", "function": {"arguments": "{}"}}]), "without a function name"),
    (Reply(401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}),
     r"rejected the API key \(401.*OPENAI_API_KEY"),
    (Reply(404, {"error": "model 'qwen2.5:7b' not found"}), r"not found \(404.*OPENAI_BASE_URL"),
    (Reply(400, {"object": "error", "message": "\"auto\" tool choice requires --enable-auto-tool-choice"}),
     r"refused the request \(400.*enable-auto-tool-choice"),
    (Reply(200, "not json", {"Content-Type": "text/plain"}), "not a JSON object"),
])
def test_unusable_answers_from_the_local_chat_completions_fake_raise_without_the_key(tools, reply, expected):
    with RecordingServer(Script(reply)) as llm:
        with pytest.raises(AgentBackendError, match=expected) as err:
            agent_on(llm).converse("plan", "p", incident=PAYMENTS_HIGH, tools=tools, context={})
    assert API_KEY not in str(err.value)


def test_429_and_5xx_are_retried_but_4xx_never(tools):
    with RecordingServer(Script(Reply(503, {"error": {"message": "loading model"}}), completion("ok"))) as llm:
        assert agent_on(llm).converse("plan", "p", incident=PAYMENTS_HIGH, tools=tools, context={}).text == "ok"
    assert len(llm.requests) == 2
    with RecordingServer(Script(Reply(422, {"detail": "bad"}), completion("never"))) as llm:
        with pytest.raises(AgentBackendError, match="422"):
            agent_on(llm).converse("plan", "p", incident=PAYMENTS_HIGH, tools=tools, context={})
    assert len(llm.requests) == 1


def test_arguments_and_tool_calls_are_normalised_tolerantly():
    assert parse_arguments({"a": 1}) == ({"a": 1}, None)
    assert parse_arguments('{"a": 1}') == ({"a": 1}, None)
    assert parse_arguments(json.dumps('{"a": 1}')) == ({"a": 1}, None)
    assert parse_arguments(None) == ({}, None) and parse_arguments("  ") == ({}, None)
    assert parse_arguments(42) == ({}, "arguments must be a JSON object")
    (single,) = normalise_tool_calls({"name": "query_live_logs", "parameters": {"service": "x"}}, turn=2)
    assert (single.id, single.name, single.arguments) == ("call_2_0", "query_live_logs", {"service": "x"})
    with pytest.raises(AgentBackendError):
        normalise_tool_calls("search_runbooks", turn=0)


def test_follow_up_questions_offer_no_tools_and_fall_back_to_none():
    gate = GateOutput(incident_id="inc-o1", decision="block_and_escalate", rule_ids=["critical_severity"],
                      reasons=[{"rule_id": "critical_severity", "message": "critical"}],
                      approval_required="force_override", proposed_action="rollback_last_deploy",
                      confidence_initial=8, confidence_final=8, confidence_delta=0, contradiction_count=0,
                      evidence_coverage=1, context_mode="full_context", decision_id="d", config_hash="h")
    critical = PAYMENTS_HIGH.model_copy(update={"severity": "critical"})
    with RecordingServer(Script(completion("Critical incidents need FORCE_OVERRIDE with a reason."),
                                completion(None, [fn_call("search_runbooks", {})]))) as llm:
        agent = agent_on(llm)
        assert agent.explain_refusal(critical, gate, threshold=5.0) == (
            "Critical incidents need FORCE_OVERRIDE with a reason.")
        assert agent.write_runbook(critical, gate) is None  # a tool call where none is offered
    first = llm.requests[0].json()
    assert "tools" not in first and "the incident is critical" in first["messages"][1]["content"]


# --- configuration and end to end ----------------------------------------------------------------

def test_agent_backend_selection_names_each_missing_variable(tmp_path):
    with pytest.raises(ConfigError, match="AGENT_BACKEND=openai needs OPENAI_BASE_URL, OPENAI_MODEL"):
        build_agent(Settings(agent_backend="openai"))
    with pytest.raises(ConfigError, match="needs ELASTIC_KIBANA_URL, ELASTIC_API_KEY, ELASTIC_AGENT_ID"):
        build_agent(Settings(agent_backend="kibana"))
    with pytest.raises(ConfigError, match="not available"):
        build_agent(Settings(agent_backend="gpt-7"))
    env = {"AGENT_BACKEND": "openai", "OPENAI_BASE_URL": "http://127.0.0.1:11434/v1", "OPENAI_MODEL": "llama3.1",
           "AGENT_MAX_TURNS": "3"}
    agent = build_agent(Settings.from_env(env))
    assert isinstance(agent, OpenAICompatAgent) and agent.model == "llama3.1" and agent.max_turns == 3


def openai_settings(tmp_path, url: str) -> Settings:
    return Settings(output_dir=tmp_path / "out", agent_backend="openai", openai_base_url=url + "/v1",
                    openai_model="qwen2.5:7b", agent_max_retries=0, agent_max_turns=4)


def test_a_conflict_free_restart_plan_from_the_model_is_blocked_by_python_end_to_end(tmp_path, store):
    audit = MemoryAudit()
    with RecordingServer(Script(
        completion(None, [fn_call("search_runbooks", {"query": "latency", "service": "payments-api"})]),
        completion(json.dumps(RESTART_PLAN)),
        completion(None, [fn_call("check_policy_conflicts",
                                  '{"service": "payments-api", "action": "restart_api_pods", "severity": "high"}')]),
        completion("No conflicts, ship it:\n" + json.dumps(CONFLICT_FREE_STRESS)),
    )) as llm:
        governor = build(openai_settings(tmp_path, llm.url), store=store, audit=audit)
        record = governor.pipeline.run(PAYMENTS_HIGH)
    assert record.plan is not None and record.plan.proposed_action == "restart_api_pods"
    assert record.stress_error is None
    assert record.gate.decision == "block_and_escalate"
    assert "policy_conflict" in record.gate.rule_ids and "pol-approval-01" in record.stress.policy_conflicts
    assert not record.executed and record.tool_calls == 2
    assert {t["tool"] for t in audit.records["tool_trace"]} >= {"search_runbooks", "check_policy_conflicts"}


def test_a_reply_with_no_json_and_an_endless_tool_loop_both_fail_closed_end_to_end(tmp_path, store):
    with RecordingServer(Script(completion("Restart the pods. Trust me."))) as llm:
        record = build(openai_settings(tmp_path, llm.url), store=store, audit=MemoryAudit()).pipeline.run(PAYMENTS_HIGH)
    assert record.gate.decision == "block_and_escalate" and "invalid_output" in record.gate.rule_ids
    assert not record.executed

    def forever(req: Recorded) -> Reply:
        return completion(None, [fn_call("query_live_logs", {"service": "payments-api"})])

    with RecordingServer(forever) as llm:
        record = build(openai_settings(tmp_path, llm.url), store=store, audit=MemoryAudit()).pipeline.run(PAYMENTS_HIGH)
    assert len(llm.requests) == 4
    assert record.gate.decision == "block_and_escalate" and "invalid_output" in record.gate.rule_ids
    assert "still calling tools" in (record.plan_error or "") and not record.executed


def test_readiness_lists_the_models_of_the_local_chat_completions_fake():
    def models(req: Recorded) -> Reply:
        if req.path == "/v1/models":
            return Reply(200, {"object": "list", "data": [{"id": "qwen2.5:7b", "object": "model"}]})
        return Reply(404, {"error": "not found"})

    with RecordingServer(models) as llm:
        assert agent_on(llm).check().ok
        broken = OpenAICompatAgent(base_url=llm.url + "/wrong", model="m").check()
    assert not broken.ok and "OPENAI_BASE_URL" in broken.reason


def test_write_runbook_fits_the_learning_writer_and_describes_the_verification():
    from datetime import UTC, datetime

    from safety_governor.verification import VerificationResult

    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    verification = VerificationResult(incident_id="inc-o1", service="payments-api",
                                      action="throttle_traffic_and_tune_pool", resolved=True, error_rate_before=0.12, error_rate_after=0.01, threshold=0.1,
                                      window_seconds=10, reason="error rate under threshold", started_at=now,
                                      finished_at=now)
    gate = GateOutput(incident_id="inc-o1", decision="execute", approval_required="none",
                      proposed_action="throttle_traffic_and_tune_pool", confidence_initial=8, confidence_final=8,
                      confidence_delta=0, contradiction_count=0, evidence_coverage=1, context_mode="full_context",
                      decision_id="d", config_hash="h")
    with RecordingServer(Script(completion("Symptoms: pool saturation.\nSteps: throttle, then tune the pool."))) as llm:
        writer = agent_on(llm).write_runbook  # a learning.RunbookWriter: (incident, gate, verification)
        body = writer(PAYMENTS_HIGH, gate, verification)
    assert body == "Symptoms: pool saturation.\nSteps: throttle, then tune the pool."
    prompt = llm.requests[0].json()["messages"][1]["content"]
    assert "error rate 12.0% before, 1.0% after (threshold 10.0%)" in prompt
    assert "throttle_traffic_and_tune_pool" in prompt


class BigResults:
    """A tool port whose results are long (a search returning 20,000 characters of runbook text)."""

    transport = "local"

    def call(self, name, arguments):
        return {"hits": [{"id": f"rbk-{i}", "text": "connection pool saturation " * 40} for i in range(20)]}


def test_a_long_tool_result_is_cut_to_the_context_left_on_a_4096_token_server_and_marked():
    from safety_governor.agents.openai_compat import ANSWER_RESERVE_TOKENS, estimate_tokens

    big = BigResults()
    assert len(json.dumps(big.call("search_runbooks", {}))) > 20_000 // 2
    with RecordingServer(Script(completion(None, [fn_call("search_runbooks", {"query": "pool", "service": "x"})]),
                                completion("done"))) as srv:
        agent = agent_on(srv, context_tokens=4096)
        reply = agent.converse("plan", "Plan for inc-o1.", incident=PAYMENTS_HIGH, tools=big, context={})
    assert reply.text == "done"
    second = srv.requests[1].json()
    assert estimate_tokens([*second["messages"], second["tools"]]) + ANSWER_RESERVE_TOKENS <= 4096
    tool_message = json.loads(second["messages"][-1]["content"])
    assert tool_message["truncated"] is True and tool_message["text"].startswith('{"hits"')


def test_ollama_is_recognised_by_its_port_and_gets_its_documented_4096_token_default():
    agent = OpenAICompatAgent(base_url="http://127.0.0.1:11434/v1", model="llama3.1")
    assert (agent.server_kind, agent.context_tokens) == ("ollama", 4096)
    assert OpenAICompatAgent(base_url="http://gpu-box:8000/v1", model="m", context_tokens=32768).context_tokens == 32768
    assert build_agent(Settings(agent_backend="openai", openai_base_url="http://h:8080/v1", openai_model="m",
                                openai_context_tokens=16384)).context_tokens == 16384


def test_a_prompt_too_long_for_ollamas_context_fails_closed_naming_how_to_raise_it():
    agent = OpenAICompatAgent(base_url="http://127.0.0.1:11434/v1", model="llama3.1",
                              policy=HttpPolicy(connect_timeout=0.5, read_timeout=0.5, max_retries=0))
    with pytest.raises(AgentBackendError, match=r"OLLAMA_CONTEXT_LENGTH.*num_ctx"):
        agent.converse("plan", "symptoms " * 5000, incident=PAYMENTS_HIGH, tools=BigResults(), context={})


def test_llama_cpp_without_jinja_gets_its_own_hint():
    refusal = Reply(500, {"error": {"code": 500, "message": "tools param requires --jinja flag",
                                    "type": "server_error"}})
    with RecordingServer(Script(refusal, refusal, refusal)) as srv:
        with pytest.raises(AgentBackendError, match=r"started with --jinja"):
            agent_on(srv).converse("plan", "Plan.", incident=PAYMENTS_HIGH, tools=BigResults(), context={})
