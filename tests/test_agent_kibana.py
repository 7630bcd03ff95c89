"""The Kibana Agent Builder backend against a local fake speaking the converse API.

``RecordingServer`` is a real HTTP server on 127.0.0.1; it answers ``POST
/api/agent_builder/converse`` with scripted replies in the documented shape (``conversation_id``,
``steps``, ``model_usage``, ``response.message``) and Kibana's error envelope
(``{statusCode, error, message}``). End-to-end tests run the whole pipeline through
``bootstrap.build`` with a seeded in-memory embedded store and this backend.
"""

from __future__ import annotations

import json
import time

import pytest

from safety_governor.adapters.audit_jsonl import MemoryAudit
from safety_governor.agents._live import HttpPolicy
from safety_governor.agents.kibana import KibanaAgent
from safety_governor.approvals import ApprovalPolicy
from safety_governor.bootstrap import build
from safety_governor.config import Settings
from safety_governor.errors import AgentBackendError
from safety_governor.models import GateOutput, Incident
from kibana_wire import FakeKibana
from wire_fakes import Recorded, RecordingServer, Reply

API_KEY = "kibana-test-api-key-0123456789"
PAYMENTS_HIGH = Incident(id="inc-k1", service="payments-api", severity="high",
                         summary="P99 latency jumped from 220ms to 1400ms", symptoms="timeouts, db saturation")
RESTART_PLAN = {"proposed_action": "restart_api_pods", "rationale": "rbk-api-01 says restart is fastest",
                "key_claims": ["Restarting API pods recovers latency quickly."], "confidence_initial": 9,
                "retrieved_context_ids": ["rbk-api-01"]}
CONFLICT_FREE_STRESS = {"claim_results": [{"claim": "Restarting API pods recovers latency quickly.",
                                           "supporting_doc_ids": ["ev-100"], "contradicting_doc_ids": []}],
                        "policy_conflicts": [], "fabricated_authority_rejected": False,
                        "confidence_post_stress": 9.5, "position_after_stress": "maintain"}


def converse_reply(message: str, *, conversation_id: str = "conv-1", steps: list | None = None,
                   model: str | None = None, status: str = "completed") -> Reply:
    usage = {"connector_id": "my-connector", "llm_calls": 2, "input_tokens": 1200, "output_tokens": 80}
    if model:
        usage["model"] = model
    return Reply(200, {
        "conversation_id": conversation_id, "round_id": "round-1", "status": status,
        "steps": steps or [], "started_at": "2026-11-26T12:00:00.000Z", "time_to_first_token": 900,
        "time_to_last_token": 2100, "model_usage": usage, "response": {"message": message},
    })


def kibana_error(status: int, message: str) -> Reply:
    reasons = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
               429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}
    return Reply(status, {"statusCode": status, "error": reasons.get(status, "Error"), "message": message})


# What a load balancer in front of Kibana answers: the request never reached Kibana.
PROXY_502 = Reply(502, "<html><body><h1>502 Bad Gateway</h1></body></html>", {"Content-Type": "text/html"})
PROXY_503 = Reply(503, "upstream connect error or disconnect/reset before headers", {"Content-Type": "text/plain"})


class Script:
    """Scripted replies, in order; records nothing itself (the server does)."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies)

    def __call__(self, req: Recorded) -> Reply:
        if req.path.endswith("/converse") and self.replies:
            return self.replies.pop(0)
        return kibana_error(500, "script exhausted")


def agent_on(server: RecordingServer, **kwargs) -> KibanaAgent:
    kwargs.setdefault("policy", HttpPolicy(connect_timeout=2, read_timeout=5, max_retries=2, backoff=0.01))
    return KibanaAgent(kibana_url=server.url, api_key=API_KEY, agent_id="sre-governor", model="gpt-oss-120b",
                       sleep=lambda s: None, **kwargs)


def ask(agent: KibanaAgent, phase: str = "plan", incident: Incident = PAYMENTS_HIGH):
    # Kibana runs the agent's tools itself: the tool port is not used.
    return agent.converse(phase, f"prompt for {phase}", incident=incident, tools=None,  # type: ignore[arg-type]
                          context={})


def test_converse_on_a_local_kibana_fake_sends_api_key_xsrf_and_only_known_body_fields():
    with RecordingServer(Script(converse_reply("ok"))) as kb:
        reply = ask(agent_on(kb, connector_id="my-connector"))
    (req,) = kb.requests
    assert req.method == "POST" and req.path == "/api/agent_builder/converse"
    assert req.headers["authorization"] == f"ApiKey {API_KEY}"
    assert req.headers["kbn-xsrf"] == "true"
    assert req.headers["content-type"] == "application/json"
    assert req.json() == {"input": "prompt for plan", "agent_id": "sre-governor", "connector_id": "my-connector"}
    assert reply.text == "ok"


def test_one_conversation_per_incident_is_reused_across_phases():
    other = Incident(id="inc-k2", service="billing-batch", severity="medium", summary="queue lag")
    with RecordingServer(Script(converse_reply("p1", conversation_id="conv-A"),
                                converse_reply("p2", conversation_id="conv-B"),
                                converse_reply("s1", conversation_id="conv-A"))) as kb:
        agent = agent_on(kb)
        ask(agent, "plan")
        ask(agent, "plan", other)
        ask(agent, "stress")
    bodies = [r.json() for r in kb.requests]
    assert "conversation_id" not in bodies[0] and "conversation_id" not in bodies[1]
    assert bodies[2]["conversation_id"] == "conv-A"
    assert agent.conversation_id("inc-k2") == "conv-B"


def test_a_vanished_conversation_is_started_afresh_once():
    with RecordingServer(Script(converse_reply("p", conversation_id="conv-old"),
                                kibana_error(404, "Conversation conv-old not found"),
                                converse_reply("s", conversation_id="conv-new"))) as kb:
        agent = agent_on(kb)
        ask(agent, "plan")
        assert ask(agent, "stress").text == "s"
    assert kb.requests[1].json()["conversation_id"] == "conv-old"
    assert "conversation_id" not in kb.requests[2].json()
    assert agent.conversation_id(PAYMENTS_HIGH.id) == "conv-new"


def test_tool_call_steps_become_tool_calls_and_the_audit_tool_trace():
    steps = [
        {"type": "reasoning", "reasoning": "I will search the runbooks."},
        {"type": "tool_call", "tool_call_id": "tooluse_1", "tool_id": "governor.search_runbooks",
         "params": {"query": "latency", "service": "payments-api"},
         "progression": [{"message": "Searching"}],
         "results": [{"tool_result_id": "r1", "type": "other",
                      "data": {"hits": [{"id": "rbk-api-01"}, {"id": "rbk-api-02"}]}}]},
        {"type": "tool_call", "tool_call_id": "tooluse_2", "tool_id": "platform.core.execute_esql",
         "params": {"query": "FROM kibana_sample_data_logs | LIMIT 5"},
         "results": [{"type": "query", "data": {"esql": "FROM kibana_sample_data_logs | LIMIT 5"}},
                     {"type": "tabular_data", "data": {"source": "esql", "query": "FROM x", "columns": [],
                                                       "values": [[1], [2], [3]]}}]},
        {"type": "tool_call", "tool_call_id": "tooluse_3", "tool_id": "platform.core.search",
         "params": {"query": "what"}, "results": [{"type": "error",
                                                   "data": {"message": "Could not figure out which index to use"}}]},
        {"type": "update_todos", "todos": []},  # a newer step type: ignored
    ]
    audit = MemoryAudit()
    with RecordingServer(Script(converse_reply("{}", steps=steps))) as kb:
        reply = ask(agent_on(kb, audit=audit))
    assert [c.tool for c in reply.tool_calls] == ["governor.search_runbooks", "platform.core.execute_esql",
                                                  "platform.core.search"]
    first, second, third = reply.tool_calls
    assert first.result_ids == ["rbk-api-01", "rbk-api-02"] and first.ok and first.transport == "kibana"
    assert second.arguments == {"query": "FROM kibana_sample_data_logs | LIMIT 5"}
    assert not third.ok and third.error == "Could not figure out which index to use"
    trace = audit.records["tool_trace"]
    assert [t["tool_call_id"] for t in trace] == ["tooluse_1", "tooluse_2", "tooluse_3"]
    assert trace[1]["result_summary"] == "query; tabular_data: 3 rows"
    assert {t["incident_id"] for t in trace} == {PAYMENTS_HIGH.id} and trace[0]["phase"] == "plan"


def test_model_usage_names_the_model_for_the_framework_score_lookup():
    with RecordingServer(Script(converse_reply("a"), converse_reply("b", model="claude-3-5-sonnet"))) as kb:
        agent = agent_on(kb)
        first = ask(agent)
        assert first.model == "gpt-oss-120b" and first.usage["input_tokens"] == 1200
        second = ask(agent, "stress")
    assert second.model == agent.model == "claude-3-5-sonnet"


def test_429_and_a_proxy_503_are_retried_with_backoff_but_4xx_never():
    sleeps: list[float] = []
    with RecordingServer(Script(PROXY_503, Reply(429, {"message": "slow down"},
                                                                  {"Retry-After": "2"}),
                                converse_reply("third time lucky"))) as kb:
        agent = agent_on(kb)
        agent.sleep = sleeps.append
        assert ask(agent).text == "third time lucky"
    assert len(kb.requests) == 3 and sleeps == [0.01, 2.0]

    with RecordingServer(Script(kibana_error(400, "[request body.foo]: definition for this key is missing"),
                                converse_reply("never reached"))) as kb:
        with pytest.raises(AgentBackendError, match=r"refused the request \(400"):
            ask(agent_on(kb))
    assert len(kb.requests) == 1


def test_retries_end_with_a_clear_error_naming_the_attempts():
    with RecordingServer(Script(*[PROXY_502] * 5)) as kb:
        with pytest.raises(AgentBackendError, match=r"answered 502 after 3 attempt\(s\): no message"):
            ask(agent_on(kb))
    assert len(kb.requests) == 3


@pytest.mark.parametrize(("reply", "expected"), [
    (kibana_error(401, "[security_exception]: unable to authenticate"), r"rejected the API key \(401\)"),
    (kibana_error(403, "Invalid license level. Agent Builder APIs require an Enterprise license or higher."),
     r"needs an Enterprise licence \(403"),
    (kibana_error(403, "Forbidden"), r"feature_agentBuilder.read"),
    (kibana_error(404, "Agent sre-governor not found"), r"agent 'sre-governor' not found \(404.*ELASTIC_AGENT_ID"),
    (kibana_error(404, "Not Found"), r"Kibana 9.2\+ with Agent Builder is needed"),
    (Reply(200, "<html>proxy login</html>", {"Content-Type": "text/html"}), r"not a JSON object"),
    (converse_reply("x", status="awaiting_prompt"), r"waiting for a human confirmation"),
    (Reply(200, {"conversation_id": "c", "steps": []}), r"no response.message"),
])
def test_unusable_answers_from_the_local_kibana_fake_raise_one_clear_sentence_without_the_key(reply, expected):
    with RecordingServer(Script(reply)) as kb:
        with pytest.raises(AgentBackendError, match=expected) as err:
            ask(agent_on(kb))
    assert API_KEY not in str(err.value)


def test_a_timeout_is_an_agent_backend_error():
    def slow(req: Recorded) -> Reply:
        time.sleep(1.0)
        return converse_reply("too late")

    with RecordingServer(slow) as kb:
        agent = agent_on(kb, policy=HttpPolicy(connect_timeout=1, read_timeout=0.2, max_retries=3))
        with pytest.raises(AgentBackendError, match="did not answer within 0.2s"):
            ask(agent)
    assert len(kb.requests) == 1  # a timed-out round is not retried


def test_an_unreachable_kibana_is_an_agent_backend_error():
    with RecordingServer(Script()) as kb:
        url = kb.url
    agent = KibanaAgent(kibana_url=url, api_key=API_KEY, agent_id="a", policy=HttpPolicy(connect_timeout=1))
    with pytest.raises(AgentBackendError, match="cannot reach Kibana Agent Builder"):
        ask(agent)


def _gate(**overrides) -> GateOutput:
    base = dict(incident_id=PAYMENTS_HIGH.id, decision="block_and_escalate", rule_ids=["policy_conflict"],
                reasons=[{"rule_id": "policy_conflict", "message": "pol-approval-01 blocks restart_api_pods"}],
                approval_required="approve", proposed_action="restart_api_pods", confidence_initial=9,
                confidence_final=3.2, confidence_delta=-5.8, contradiction_count=3, evidence_coverage=1.0,
                context_mode="full_context", decision_id="dec-1", config_hash="sha256:x")
    return GateOutput.model_validate({**base, **overrides})


def test_refusal_explanation_and_learned_runbook_are_asked_in_the_incident_conversation():
    with RecordingServer(Script(converse_reply("plan", conversation_id="conv-R"),
                                converse_reply("```\nAPPROVE was refused because confidence 3.20 < 5.0.\n```",
                                               conversation_id="conv-R"),
                                converse_reply("Symptoms: p99 up.\nSteps: throttle.", conversation_id="conv-R"),
                                kibana_error(500, "down"), kibana_error(500, "down"), kibana_error(500, "down"))) as kb:
        agent = agent_on(kb)
        ask(agent)
        explanation = agent.explain_refusal(PAYMENTS_HIGH, _gate(), threshold=5.0)
        runbook = agent.write_runbook(PAYMENTS_HIGH, _gate(decision="execute"), outcome="error rate back to 1%")
        fallback = agent.explain_refusal(PAYMENTS_HIGH, _gate(), threshold=5.0)
    assert explanation == "APPROVE was refused because confidence 3.20 < 5.0."
    assert runbook == "Symptoms: p99 up.\nSteps: throttle."
    assert fallback is None  # the caller then uses the deterministic text
    prompts = [r.json() for r in kb.requests[1:3]]
    assert all(p["conversation_id"] == "conv-R" for p in prompts)
    assert "below the refusal threshold 5.0" in prompts[0]["input"] and "pol-approval-01" in prompts[0]["input"]
    assert "error rate back to 1%" in prompts[1]["input"] and "restart_api_pods" in prompts[1]["input"]


# --- end to end: the whole pipeline with this backend -------------------------------------------

def kibana_settings(tmp_path, url: str) -> Settings:
    return Settings(output_dir=tmp_path / "out", agent_backend="kibana", elastic_kibana_url=url,
                    elastic_api_key=API_KEY, elastic_agent_id="sre-governor", agent_max_retries=0)


def test_a_403_licence_error_from_kibana_fails_closed_to_block_and_escalate_end_to_end(tmp_path, store):
    licence = "Invalid license level. Agent Builder APIs require an Enterprise license or higher."
    audit = MemoryAudit()
    with RecordingServer(Script(*[kibana_error(403, licence)] * 3)) as kb:
        governor = build(kibana_settings(tmp_path, kb.url), store=store, audit=audit)
        assert isinstance(governor.agent, KibanaAgent)
        record = governor.pipeline.run(PAYMENTS_HIGH, approvals=ApprovalPolicy.of(["oncall"], ["oncall"]))
    assert record.gate.decision == "block_and_escalate"
    assert "invalid_output" in record.gate.rule_ids
    assert "Enterprise licence" in (record.plan_error or "")
    assert record.plan is None and not record.executed and record.execution is None
    assert len(kb.requests) == 1  # no stress round after a failed plan, no retry of a 4xx
    assert not [e for e in audit.records["workflow_events"] if e.get("kind") == "execution"]


def test_a_reply_with_no_json_fails_closed_end_to_end(tmp_path, store):
    with RecordingServer(Script(converse_reply("I think you should restart the pods, they look sad."))) as kb:
        governor = build(kibana_settings(tmp_path, kb.url), store=store, audit=MemoryAudit())
        record = governor.pipeline.run(PAYMENTS_HIGH)
    assert record.gate.decision == "block_and_escalate" and "invalid_output" in record.gate.rule_ids
    assert "no JSON object" in (record.plan_error or "") and not record.executed


def test_a_conflict_free_restart_plan_from_kibana_is_blocked_by_python_end_to_end(tmp_path, store):
    audit = MemoryAudit()
    steps = [{"type": "tool_call", "tool_call_id": "t1", "tool_id": "governor.check_policy_conflicts",
              "params": {"service": "payments-api", "action": "restart_api_pods", "severity": "high"},
              "results": [{"type": "other", "data": {"conflict": False, "conflicts": []}}]}]
    with RecordingServer(Script(
        converse_reply("Here is my plan:\n```json\n" + json.dumps(RESTART_PLAN) + "\n```", conversation_id="conv-E"),
        converse_reply(json.dumps(CONFLICT_FREE_STRESS), conversation_id="conv-E", steps=steps),
    )) as kb:
        governor = build(kibana_settings(tmp_path, kb.url), store=store, audit=audit)
        record = governor.pipeline.run(PAYMENTS_HIGH)
    assert record.plan is not None and record.plan.proposed_action == "restart_api_pods"
    assert record.gate.decision == "block_and_escalate"
    assert "policy_conflict" in record.gate.rule_ids and "pol-approval-01" in record.stress.policy_conflicts
    assert record.gate.contradiction_count >= 2  # Python's own search by service + action
    assert not record.executed
    assert kb.requests[1].json()["conversation_id"] == "conv-E"
    assert record.tool_calls == 1
    assert any(t["tool"] == "governor.check_policy_conflicts" for t in audit.records["tool_trace"])


def test_readiness_reads_the_agent_from_the_local_kibana_fake():
    def agents(req: Recorded) -> Reply:
        if req.path == "/api/agent_builder/agents/sre-governor":
            return Reply(200, {"id": "sre-governor", "type": "chat", "name": "SRE governor", "configuration": {}})
        return kibana_error(404, "Agent nope not found")

    with RecordingServer(agents) as kb:
        ready = agent_on(kb).check()
        missing = KibanaAgent(kibana_url=kb.url, api_key=API_KEY, agent_id="nope").check()
    assert ready.ok and "sre-governor" in ready.reason
    assert not missing.ok and "ELASTIC_AGENT_ID" in missing.reason
    assert kb.requests[0].method == "GET" and kb.requests[0].headers["authorization"] == f"ApiKey {API_KEY}"


EVALUATE_STEP = {"type": "tool_call", "tool_call_id": "tooluse_9", "tool_id": "governor.evaluate_plan",
                 "params": {"incident": "inc-k1", "proposed_action": "restart_api_pods"},
                 "results": [{"type": "other", "data": {"ids": ["ev-100"]}}]}


def test_a_round_kibana_recorded_before_answering_500_is_read_back_not_run_again_and_the_conversation_continues():
    kb = FakeKibana([("plan text", []), ("stress text", [EVALUATE_STEP]), ("runbook text", [])],
                    fail_after_recording=(2,))
    with kb:
        agent = agent_on(kb)
        assert ask(agent, "plan").text == "plan text"
        stress = ask(agent, "stress")
        runbook = ask(agent, "runbook")
    assert stress.text == "stress text" and [c.tool for c in stress.tool_calls] == ["governor.evaluate_plan"]
    assert runbook.text == "runbook text"
    assert kb.converse_calls == 3  # the 500 round ran once: no duplicate round, no second evaluate_plan
    [conversation] = kb.conversations.values()
    assert [r["input"]["message"] for r in conversation["rounds"]] == [
        "prompt for plan", "prompt for stress", "prompt for runbook"]
    assert kb.matching("GET", r"/api/agent_builder/conversations/conv-1$")


def test_a_500_on_the_first_round_is_not_retried_and_fails_closed():
    kb = FakeKibana([("plan text", [EVALUATE_STEP])], fail_after_recording=(1,))
    with kb:
        with pytest.raises(AgentBackendError, match=r"answered 500 after 1 attempt"):
            ask(agent_on(kb))
    assert kb.converse_calls == 1


def test_a_500_whose_round_was_not_recorded_is_not_retried_either():
    with RecordingServer(Script(converse_reply("plan", conversation_id="conv-9"),
                                kibana_error(500, "An internal server error occurred"))) as kb:
        agent = agent_on(kb)
        ask(agent, "plan")
        with pytest.raises(AgentBackendError, match=r"answered 500 after 1 attempt"):
            ask(agent, "stress")
    assert len(kb.matching("POST", r"/converse$")) == 2
    assert agent.conversation_id(PAYMENTS_HIGH.id) == "conv-9"  # the conversation is kept, not restarted


def test_a_503_in_kibanas_own_envelope_is_not_retried_but_a_refused_connection_is():
    with RecordingServer(Script(kibana_error(503, "inference endpoint unavailable"), converse_reply("x"))) as kb:
        with pytest.raises(AgentBackendError, match=r"answered 503"):
            ask(agent_on(kb))
    assert len(kb.requests) == 1

    import socket

    with socket.socket() as sock:  # a port nobody listens on: the connection is refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sleeps: list[float] = []
    agent = KibanaAgent(kibana_url=f"http://127.0.0.1:{port}", api_key=API_KEY, agent_id="sre-governor",
                        policy=HttpPolicy(connect_timeout=2, read_timeout=5, max_retries=2, backoff=0.01),
                        sleep=sleeps.append)
    with pytest.raises(AgentBackendError, match="cannot reach"):
        ask(agent)
    assert sleeps == [0.01, 0.02]  # nothing was sent: tried again, twice
