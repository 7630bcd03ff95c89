"""Slack approvals: the real slack-sdk WebClient against a local fake speaking the Slack Web API
wire format on 127.0.0.1; real ``SocketModeRequest`` objects for the Socket Mode listener, and one
test through slack-sdk's own ``SocketModeClient`` against a local WebSocket server speaking Slack's
Socket Mode envelope format (``slack_socket_wire``)."""

from __future__ import annotations

import json
import time

import pytest
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_socket_wire import FakeSocketModeServer, events_api_envelope, interactive_envelope
from slack_wire import BOT_ID, BOT_USER, CHANNEL_ID, FakeSlack, block_kit_violations, closed_port

from safety_governor.adapters.fallbacks import FallbackApprovalChannel
from safety_governor.adapters.slack_approvals import SlackApprovalChannel, default_retry_handlers
from safety_governor.approval_state import ApprovalState
from safety_governor.approvals import ApprovalPolicy, ApprovalSession
from safety_governor.bootstrap import build_approval_channel, build_approval_policy
from safety_governor.config import Settings
from safety_governor.errors import ConfigError
from safety_governor.models import GateOutput, GateReason, Incident
from safety_governor.ports import Ticket

APPROVERS = ("UALICE01", "UBOB0001")
OVERRIDERS = ("UBOB0001",)
POLICY = ApprovalPolicy.of(APPROVERS, OVERRIDERS)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RecordingSocketClient:
    """Stands in for ``SocketModeClient``: the listener only acknowledges through it."""

    def __init__(self) -> None:
        self.responses: list = []

    def send_socket_mode_response(self, response) -> None:
        self.responses.append(response)


@pytest.fixture
def slack():
    fake = FakeSlack().start()
    yield fake
    fake.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def state(store) -> ApprovalState:
    return ApprovalState(store)


def make_channel(url: str, state: ApprovalState, clock: Clock, **kwargs) -> SlackApprovalChannel:
    params = dict(token="xoxb-test", channel="#incidents", state=state, approvers=APPROVERS, overriders=OVERRIDERS,
                  api_url=url, poll_seconds=30, kibana_url="https://kibana.example",
                  retry_handlers=default_retry_handlers(connect_retry_interval=0.01, rate_limit_max_wait=2), clock=clock)
    params.update(kwargs)
    return SlackApprovalChannel(**params)


def incident(severity: str = "medium", summary: str = "Checkout 5xx spike after deploy") -> Incident:
    return Incident(id="INC-42", service="checkout-api", severity=severity, summary=summary)


def gate(required: str = "approve", decision: str = "block_and_escalate") -> GateOutput:
    return GateOutput(
        incident_id="INC-42", decision=decision, rule_ids=["contradictions"],
        reasons=[GateReason(rule_id="contradictions", message="2 grounded documents contradict restart_pods")],
        approval_required=required, proposed_action="restart_pods", confidence_initial=8.0, confidence_final=5.6,
        confidence_delta=-2.4, contradiction_count=2, evidence_coverage=0.5, context_mode="full_context",
        decision_id="dec-0001", config_hash="sha256:abc")


MESSAGE = ("Recommended steps: restart the checkout pods one zone at a time\n"
           "Dry-run preview: [dry-run] would run restart_pods on checkout-api")
TICKET = Ticket(key="OPS-7", incident_id="INC-42", url="https://jira.example/browse/OPS-7")


def all_text(blocks: list[dict]) -> str:
    return json.dumps(blocks, ensure_ascii=False)


def session(required: str = "approve") -> ApprovalSession:
    return ApprovalSession(incident_id="INC-42", decision="block_and_escalate", approval_required=required,
                           policy=POLICY, refusal_text="APPROVE refused for INC-42: the incident is critical")


def block_actions(ts: str, action_id: str, user: str, *, action_ts: str = "1700000100.000001",
                  channel: str = CHANNEL_ID, value: str = "INC-42") -> SocketModeRequest:
    """A block_actions payload as documented (and as slack-sdk's mock Socket Mode server sends it)."""
    return SocketModeRequest(type="interactive", envelope_id=f"env-{action_ts}-{user}", payload={
        "type": "block_actions",
        "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": "T0EXAMPLE"},
        "api_app_id": "A0APP", "token": "deprecated-verification-token",
        "container": {"type": "message", "message_ts": ts, "channel_id": channel, "is_ephemeral": False},
        "trigger_id": f"trigger-{action_ts}", "team": {"id": "T0EXAMPLE", "domain": "example"},
        "channel": {"id": channel, "name": "incidents"},
        "message": {"type": "message", "ts": ts, "user": BOT_USER, "bot_id": BOT_ID, "text": "Approval needed"},
        "response_url": "https://hooks.slack.com/actions/T0EXAMPLE/1/abc",
        "actions": [{"action_id": action_id, "block_id": "sg_actions:INC-42", "text": {"type": "plain_text",
                     "text": action_id}, "value": value, "type": "button", "action_ts": action_ts}],
    })


# --- the message ------------------------------------------------------------------------------


def test_request_posts_a_block_kit_message_with_the_decision_and_four_buttons_to_a_local_fake_slack_web_api(
        slack, state, clock):
    channel = make_channel(slack.url, state, clock, app_token="xapp-test")
    ts = channel.request(incident(), gate(), message=MESSAGE, ticket=TICKET)

    [call] = slack.calls_to("chat.postMessage")
    assert call.headers["Authorization"] == "Bearer xoxb-test"
    assert ts == slack.top_level()[0]["ts"]
    blocks, text = call.body["blocks"], all_text(call.body["blocks"])
    assert "INC-42" in call.body["text"]
    for expected in ("Approval needed: INC-42", "checkout-api", "medium", "block_and_escalate",
                     "8.00 \u2192 5.60 (-2.40)", "contradictions", "restart_pods", "coverage 50%",
                     "2 contradicting document(s)", "restart the checkout pods one zone at a time",
                     "[dry-run] would run restart_pods", "<https://jira.example/browse/OPS-7|OPS-7>",
                     "https://kibana.example/app/discover", "A configured approver must decide"):
        assert expected in text, expected
    [actions] = [b for b in blocks if b["type"] == "actions"]
    assert [e["action_id"] for e in actions["elements"]] == ["sg_approve", "sg_force_override", "sg_hold",
                                                               "sg_reject"]
    assert [e["text"]["text"] for e in actions["elements"]] == ["Approve", "Force override", "Hold", "Reject"]
    assert [json.loads(e["value"]) for e in actions["elements"]] == \
        [{"incident_id": "INC-42", "decision_id": "dec-0001"}] * 4


def test_ten_thousand_character_values_are_clipped_to_slacks_documented_limits_and_the_buttons_stay(
        slack, state, clock, store):
    """Every text object within its Block Kit limit (the local fake answers invalid_blocks as Slack
    does otherwise), with 10,000-character values and an incident id over 2,000 characters. The
    model refuses such an id since ids are bounded (``models.MAX_ID_LENGTH``); it is built past
    validation here, because the adapter must not depend on that."""
    long_id = "INC-" + "9" * 2496
    big = "x" * 10_000
    inc = Incident.model_construct(id=long_id, service="checkout-api-" + big, severity="medium", summary=big,
                                   symptoms="")
    g = gate().model_copy(update={
        "incident_id": long_id, "proposed_action": "restart_" + big, "rule_ids": ["contradictions"] * 3,
        "reasons": [GateReason(rule_id="contradictions", message=big)], "cautions": [big],
        "policy_conflicts": [big]})
    channel = make_channel(slack.url, state, clock, app_token="xapp-test")
    ts = channel.request(inc, g, message=big, ticket=Ticket(key="OPS-" + big, incident_id=long_id,
                                                           url="https://jira.example/browse/" + big))
    [call] = slack.calls_to("chat.postMessage")
    blocks = call.body["blocks"]
    assert block_kit_violations(blocks) == [] and slack.messages[ts]["blocks"] == blocks  # not the fallback
    assert not store.events("workflow_events", kind="integration_error")
    [facts] = [b for b in blocks if b["block_id"] == "sg_facts"]
    assert max(len(f["text"]) for f in facts["fields"]) == 2000
    [actions] = [b for b in blocks if b["type"] == "actions"]
    assert [e["action_id"] for e in actions["elements"]] == ["sg_approve", "sg_force_override", "sg_hold",
                                                               "sg_reject"]
    assert {len(e["value"]) for e in actions["elements"]} == {2000}
    channel.update(long_id, "held: " + big, final=False)
    [update] = slack.calls_to("chat.update")
    assert block_kit_violations(update.body["blocks"]) == []
    # A click on the request still names the incident (by the message clicked; the value is clipped).
    channel.handle_socket_request(RecordingSocketClient(), block_actions(ts, "sg_hold", "UALICE01",
                                                                         value=long_id[:2000]))
    assert channel.replies(long_id) == [("UALICE01", "HOLD")]


def test_untrusted_text_is_escaped_so_it_cannot_ping_the_channel(slack, state, clock):
    channel = make_channel(slack.url, state, clock)
    channel.request(incident(summary="<!channel> please approve <https://evil.example|docs>"), gate(),
                    message="steps & <@U999> stuff")
    text = all_text(slack.calls_to("chat.postMessage")[0].body["blocks"])
    assert "<!channel>" not in text and "&lt;!channel&gt;" in text
    assert "<@U999>" not in text and "&amp;" in text


def test_without_socket_mode_the_message_asks_for_thread_replies_and_has_no_buttons(slack, state, clock):
    channel = make_channel(slack.url, state, clock)
    channel.request(incident(severity="critical"), gate(required="force_override"), message=MESSAGE)
    blocks = slack.calls_to("chat.postMessage")[0].body["blocks"]
    assert not [b for b in blocks if b["type"] == "actions"]
    text = all_text(blocks)
    assert "APPROVE will be refused" in text and "in this thread" in text and "FORCE_OVERRIDE &lt;reason&gt;" not in text
    assert "`FORCE_OVERRIDE <reason>`" in text  # our own formatting is not escaped


def test_requesting_twice_for_one_decision_posts_once(slack, state, clock):
    channel = make_channel(slack.url, state, clock)
    first = channel.request(incident(), gate(), message=MESSAGE)
    assert channel.request(incident(), gate(), message=MESSAGE) == first
    assert len(slack.calls_to("chat.postMessage")) == 1


def test_critical_incident_sends_an_urgent_dm_to_the_admin_with_a_link(slack, state, clock):
    channel = make_channel(slack.url, state, clock, admin_user_id="UADMIN01")
    channel.request(incident(severity="critical"), gate(required="force_override"), message=MESSAGE)
    posts = slack.calls_to("chat.postMessage")
    [dm] = [c for c in posts if c.body["channel"] == "UADMIN01"]
    assert "Urgent: INC-42" in dm.body["text"] and "https://example.slack.com/archives/" in dm.body["text"]
    channel.request(incident(severity="critical"), gate(required="force_override"), message=MESSAGE)
    assert len([c for c in slack.calls_to("chat.postMessage") if c.body["channel"] == "UADMIN01"]) == 1


def test_update_rewrites_the_message_and_removes_the_buttons_once_decided(slack, state, clock):
    channel = make_channel(slack.url, state, clock, app_token="xapp-test")
    ts = channel.request(incident(), gate(), message=MESSAGE)
    channel.update("INC-42", "held by UALICE01")
    held = slack.calls_to("chat.update")[-1].body
    assert held["ts"] == ts and "held by UALICE01" in all_text(held["blocks"])
    assert [b for b in held["blocks"] if b["type"] == "actions"]
    channel.update("INC-42", "executed by dry_run", final=True)
    done = slack.messages[ts]["blocks"]
    assert not [b for b in done if b["type"] == "actions"]
    assert "executed by dry_run" in all_text(done) and "held by" not in all_text(done)


# --- thread replies ---------------------------------------------------------------------------


def test_thread_replies_from_the_local_fake_slack_go_through_the_core_rules_lookalikes_ignored_unconfigured_users_unauthorized(
        slack, state, clock):
    channel = make_channel(slack.url, state, clock)
    ts = channel.request(incident(), gate(), message=MESSAGE)
    for user, text in (("UALICE01", "approved"), ("UALICE01", "ok"), ("UMALLORY", "APPROVE"),
                       ("UALICE01", "lgtm APPROVE"), ("UALICE01", "APPROVE")):
        slack.add_reply(ts, user, text)

    replies = channel.replies("INC-42")
    s = session()
    outcomes = [s.apply(user, text).outcome for user, text in replies]
    assert outcomes == ["ignored", "ignored", "unauthorized", "ignored", "accepted"]
    assert s.may_execute and s.authorised_by == "UALICE01"
    clock.advance(31)
    assert channel.replies("INC-42") == []  # each reply exactly once
    assert slack.calls_to("conversations.replies")[0].body == {"channel": CHANNEL_ID, "ts": ts, "limit": "200"}


def test_the_bots_own_messages_and_other_bots_never_count_as_replies(slack, state, clock):
    channel = make_channel(slack.url, state, clock)
    ts = channel.request(incident(), gate(), message=MESSAGE)
    channel.notify("INC-42", "APPROVE refused for INC-42: the incident is critical")  # starts with a command word
    slack.add_reply(ts, "UOTHERBOT", "APPROVE", bot_id="B0OTHER", subtype="bot_message")
    slack.add_reply(ts, "UALICE01", "HOLD")
    assert channel.replies("INC-42") == [("UALICE01", "HOLD")]


def test_only_messages_after_the_alert_count(slack, state, clock):
    channel = make_channel(slack.url, state, clock)
    ts = channel.request(incident(), gate(), message=MESSAGE)
    slack.messages["1600000000.000001"] = {"type": "message", "user": "UALICE01", "text": "APPROVE",
                                           "ts": "1600000000.000001", "thread_ts": ts}
    slack.threads.setdefault(ts, []).insert(0, "1600000000.000001")
    slack.add_reply(ts, "UALICE01", "HOLD")
    assert channel.replies("INC-42") == [("UALICE01", "HOLD")]


def test_polling_follows_cursor_pages_and_spends_one_interval_per_call(slack, state, clock):
    channel = make_channel(slack.url, state, clock)
    ts = channel.request(incident(), gate(), message=MESSAGE)
    slack.page_size = 2
    for i in range(5):
        slack.add_reply(ts, "UALICE01", f"note {i}")
    assert len(channel.replies("INC-42")) == 5
    calls = len(slack.calls_to("conversations.replies"))
    assert calls == 3
    slack.add_reply(ts, "UALICE01", "APPROVE")
    assert channel.replies("INC-42") == []  # not due yet
    clock.advance(30)
    assert channel.replies("INC-42") == []  # three calls were made: three intervals before the next
    assert len(slack.calls_to("conversations.replies")) == calls
    clock.advance(60)
    assert channel.replies("INC-42") == [("UALICE01", "APPROVE")]


def test_conversations_replies_is_called_at_most_once_per_interval_for_all_threads_taking_turns(
    slack, state, clock
):
    """Slack's Tier 1 allows conversations.replies once a minute for a commercially distributed
    app outside the Marketplace; the default interval keeps every waiting thread within it."""
    assert Settings().slack_poll_seconds == 60
    channel = make_channel(slack.url, state, clock, poll_seconds=60)
    first = channel.request(incident(), gate(), message=MESSAGE)
    other = Incident(id="INC-43", service="checkout-api", severity="medium", summary="second incident")
    second = channel.request(other, gate().model_copy(update={"incident_id": "INC-43", "decision_id": "dec-0002"}),
                             message=MESSAGE)
    slack.add_reply(first, "UALICE01", "APPROVE")
    slack.add_reply(second, "UBOB0001", "REJECT")
    read: list[tuple[float, str]] = []
    for _ in range(6):  # the approval loop asks for both incidents, again and again, as time passes
        for incident_id in ("INC-42", "INC-43"):
            before = len(slack.calls_to("conversations.replies"))
            channel.pending_replies(incident_id)
            if len(slack.calls_to("conversations.replies")) > before:
                read.append((clock.now, incident_id))
        clock.advance(20)
    times = [t for t, _ in read]
    assert all(b - a >= 60 for a, b in zip(times, times[1:])), read
    assert [i for _, i in read][:2] == ["INC-42", "INC-43"]  # turns: neither thread starves
    assert channel.replies("INC-43") == [("UBOB0001", "REJECT")]


def test_a_429_with_a_short_retry_after_from_the_local_fake_is_retried_by_the_rate_limit_handler(slack, state, clock):
    channel = make_channel(slack.url, state, clock)
    ts = channel.request(incident(), gate(), message=MESSAGE)
    slack.add_reply(ts, "UALICE01", "APPROVE")
    slack.fail("conversations.replies", status=429, error="ratelimited", headers={"Retry-After": "0"})
    assert channel.replies("INC-42") == [("UALICE01", "APPROVE")]
    assert len(slack.calls_to("conversations.replies")) == 2


def test_a_429_with_a_long_retry_after_reschedules_the_poll_instead_of_blocking(slack, state, clock, store):
    channel = make_channel(slack.url, state, clock)
    ts = channel.request(incident(), gate(), message=MESSAGE)
    slack.add_reply(ts, "UALICE01", "APPROVE")
    slack.fail("conversations.replies", status=429, error="ratelimited", headers={"Retry-After": "120"})
    assert channel.replies("INC-42") == []
    assert "ratelimited" in channel.error
    clock.advance(60)
    assert channel.replies("INC-42") == []
    assert len(slack.calls_to("conversations.replies")) == 1
    clock.advance(61)
    assert channel.replies("INC-42") == [("UALICE01", "APPROVE")]
    assert channel.error is None
    errors = [e for e in store.events("workflow_events", "INC-42", kind="integration_error")]
    assert errors and errors[0]["retry_in"] >= 120


# --- Socket Mode ------------------------------------------------------------------------------


def test_a_block_actions_click_over_socket_mode_is_the_clicking_users_command_acknowledged_first(slack, state, clock):
    channel = make_channel(slack.url, state, clock, app_token="xapp-test")
    ts = channel.request(incident(), gate(), message=MESSAGE)
    sock = RecordingSocketClient()
    req = block_actions(ts, "sg_approve", "UALICE01")
    channel.handle_socket_request(sock, req)
    channel.handle_socket_request(sock, req)  # Slack redelivers: still one reply
    assert [r.envelope_id for r in sock.responses] == [req.envelope_id, req.envelope_id]
    replies = channel.replies("INC-42")
    assert replies == [("UALICE01", "APPROVE")]
    s = session()
    assert s.apply(*replies[0]).outcome == "accepted"


def test_a_click_by_an_unconfigured_user_reaches_the_rules_and_is_unauthorized(slack, state, clock):
    channel = make_channel(slack.url, state, clock, app_token="xapp-test")
    ts = channel.request(incident(), gate(), message=MESSAGE)
    channel.handle_socket_request(RecordingSocketClient(), block_actions(ts, "sg_reject", "UMALLORY"))
    [(user, text)] = channel.replies("INC-42")
    assert session().apply(user, text).outcome == "unauthorized"


def test_a_click_on_a_message_that_is_not_the_incidents_request_is_ignored(slack, state, clock):
    channel = make_channel(slack.url, state, clock, app_token="xapp-test")
    channel.request(incident(), gate(), message=MESSAGE)
    channel.handle_socket_request(RecordingSocketClient(), block_actions("1699999999.999999", "sg_approve", "UALICE01"))
    assert channel.replies("INC-42") == []


def test_a_click_on_an_earlier_decisions_message_is_bound_to_that_decision_and_refused_by_the_rules(
        slack, store, clock):
    """The wait moved on to a new decision (not posted yet, e.g. Slack was down): a click, and an
    override form opened, on the old message carry the old decision id, so the approval rules
    refuse them (audited, answered in the thread) instead of applying them to the new wait."""
    audit: list[dict] = []
    state = ApprovalState(store, audit=type("Sink", (), {"record": lambda self, stream, doc: audit.append(doc)})())
    channel = make_channel(slack.url, state, clock, app_token="xapp-test")
    ts = channel.request(incident(severity="critical"), gate(required="force_override"), message=MESSAGE)
    state.open_wait("INC-42", "dec-0002", channel=channel.name, assessment={}, message="")
    [actions] = [b for b in slack.messages[ts]["blocks"] if b["type"] == "actions"]
    old_value = actions["elements"][0]["value"]
    channel.handle_socket_request(RecordingSocketClient(), block_actions(ts, "sg_approve", "UBOB0001",
                                                                         value=old_value))
    sock = RecordingSocketClient()
    channel.handle_socket_request(sock, block_actions(ts, "sg_force_override", "UBOB0001", value=old_value,
                                                      action_ts="1700000200.000001"))
    [opened] = slack.calls_to("views.open")
    view = opened.body["view"]
    assert json.loads(view["private_metadata"])["decision_id"] == "dec-0001"
    channel.handle_socket_request(sock, SocketModeRequest(type="interactive", envelope_id="env-V9", payload={
        "type": "view_submission", "team": {"id": "T0EXAMPLE"}, "user": {"id": "UBOB0001", "name": "bob"},
        "view": {**view, "id": "V9", "state": {"values": {"reason": {"reason": {
            "type": "plain_text_input", "value": "db team on the bridge, rollback tested"}}}}}}))
    replies = state.unconsumed("INC-42")
    assert [(r.text.split()[0], r.decision_id) for r in replies] == [("APPROVE", "dec-0001"),
                                                                     ("FORCE_OVERRIDE", "dec-0001")]
    assert [a["decision_id"] for a in audit if a["kind"] == "reply_received"] == ["dec-0001", "dec-0001"]
    current = ApprovalSession(incident_id="INC-42", decision="block_and_escalate", approval_required="force_override",
                              policy=POLICY, decision_id="dec-0002")
    for r in replies:
        event = current.apply(r.user, r.text, decision_id=r.decision_id, channel=r.channel)
        assert event.outcome == "refused" and "answers decision dec-0001, not the current one (dec-0002)" in event.reason
    assert not current.may_execute
    # A forged value naming another decision than the clicked message's is not a reply at all.
    forged = json.dumps({"incident_id": "INC-42", "decision_id": "dec-0002"})
    channel.handle_socket_request(RecordingSocketClient(), block_actions(ts, "sg_approve", "UBOB0001", value=forged,
                                                                         action_ts="1700000300.000001"))
    assert len(state.unconsumed("INC-42")) == 2


def test_force_override_opens_a_reason_modal_and_its_submission_is_force_override_with_the_reason(
        slack, state, clock):
    channel = make_channel(slack.url, state, clock, app_token="xapp-test")
    ts = channel.request(incident(severity="critical"), gate(required="force_override"), message=MESSAGE)
    sock = RecordingSocketClient()
    channel.handle_socket_request(sock, block_actions(ts, "sg_force_override", "UBOB0001"))
    [opened] = slack.calls_to("views.open")
    view = opened.body["view"]
    assert opened.body["trigger_id"] == "trigger-1700000100.000001"
    assert view["callback_id"] == "sg_force_override_reason" and view["type"] == "modal"
    assert channel.replies("INC-42") == []  # a click alone is not an override

    def submission(reason: str, view_id: str) -> SocketModeRequest:
        return SocketModeRequest(type="interactive", envelope_id=f"env-{view_id}", payload={
            "type": "view_submission", "team": {"id": "T0EXAMPLE"}, "user": {"id": "UBOB0001", "name": "bob"},
            "view": {**view, "id": view_id, "state": {"values": {"reason": {"reason": {
                "type": "plain_text_input", "value": reason}}}}}})

    channel.handle_socket_request(sock, submission("   ", "V1"))
    assert sock.responses[-1].payload["response_action"] == "errors"
    channel.handle_socket_request(sock, submission("db team on the bridge, rollback tested", "V2"))
    assert sock.responses[-1].envelope_id == "env-V2" and not sock.responses[-1].payload
    [(user, text)] = channel.replies("INC-42")
    assert (user, text) == ("UBOB0001", "FORCE_OVERRIDE db team on the bridge, rollback tested")
    s = session(required="force_override")
    event = s.apply(user, text)
    assert event.outcome == "accepted" and s.override_reason == "db team on the bridge, rollback tested"


def test_when_the_modal_cannot_open_a_thread_prompt_asks_for_force_override_with_a_reason(slack, state, clock):
    channel = make_channel(slack.url, state, clock, app_token="xapp-test")
    ts = channel.request(incident(severity="critical"), gate(required="force_override"), message=MESSAGE)
    slack.fail("views.open", error="expired_trigger_id")
    channel.handle_socket_request(RecordingSocketClient(), block_actions(ts, "sg_force_override", "UBOB0001"))
    [prompt] = [c for c in slack.calls_to("chat.postMessage") if c.body.get("thread_ts") == ts]
    assert "<@UBOB0001>" in prompt.body["text"] and "`FORCE_OVERRIDE <reason>`" in prompt.body["text"]


def test_a_thread_reply_pushed_over_socket_mode_and_also_polled_is_one_reply(slack, state, clock):
    channel = make_channel(slack.url, state, clock, app_token="xapp-test")
    ts = channel.request(incident(), gate(), message=MESSAGE)
    reply_ts = slack.add_reply(ts, "UALICE01", "HOLD")
    event = {"type": "message", "user": "UALICE01", "text": "HOLD", "ts": reply_ts, "thread_ts": ts,
             "channel": CHANNEL_ID, "channel_type": "channel"}
    own = {"type": "message", "user": BOT_USER, "bot_id": BOT_ID, "text": "APPROVE", "ts": "1700000999.000001",
           "thread_ts": ts, "channel": CHANNEL_ID}
    sock = RecordingSocketClient()
    for i, ev in enumerate((event, own)):
        channel.handle_socket_request(sock, SocketModeRequest(type="events_api", envelope_id=f"ev-{i}", payload={
            "type": "event_callback", "team_id": "T0EXAMPLE", "event": ev}))
    assert len(sock.responses) == 2
    assert channel.replies("INC-42") == [("UALICE01", "HOLD")]


def test_a_click_and_a_thread_reply_through_slack_sdks_socket_mode_client_over_a_local_websocket_server_speaking_slacks_envelope_format(  # noqa: E501
        slack, state, clock):
    """No direct call of the listener: slack-sdk's own ``SocketModeClient`` opens the socket
    (``apps.connections.open`` with the app token on the local Web API fake, then the WebSocket
    on 127.0.0.1), receives Slack's ``hello`` and envelopes, and acknowledges each one."""
    server = FakeSocketModeServer().start()
    slack.socket_url = server.url
    channel = make_channel(slack.url, state, clock, app_token="xapp-1-test")
    try:
        ts = channel.request(incident(), gate(), message=MESSAGE)
        channel.start()
        assert server.wait_connected(), channel.error
        assert channel.error is None and "buttons over Socket Mode" in channel.check().reason
        [opened] = slack.calls_to("apps.connections.open")
        assert opened.headers["Authorization"] == "Bearer xapp-1-test"
        assert "Upgrade: websocket" in server.requests[0] and "GET /link/?ticket=fake-ticket" in server.requests[0]

        click = block_actions(ts, "sg_approve", "UALICE01")
        server.send(interactive_envelope("env-click-1", click.payload))
        assert server.wait_for_ack("env-click-1") == {"envelope_id": "env-click-1"}
        reply_ts = slack.add_reply(ts, "UBOB0001", "HOLD")
        server.send(events_api_envelope("env-msg-1", {
            "type": "message", "user": "UBOB0001", "text": "HOLD", "ts": reply_ts, "thread_ts": ts,
            "channel": CHANNEL_ID, "channel_type": "channel"}))
        server.wait_for_ack("env-msg-1")
        deadline = time.monotonic() + 10
        while len(state.unconsumed("INC-42")) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        received = {(r.user, r.text, r.source) for r in state.unconsumed("INC-42")}
        assert received == {("UALICE01", "APPROVE", "slack_button"), ("UBOB0001", "HOLD", "slack_event")}
    finally:
        channel.close()
        server.stop()


def test_socket_mode_that_cannot_connect_is_reported_and_thread_replies_still_work(slack, state, clock, store):
    channel = make_channel(slack.url, state, clock, app_token="xapp-test")
    slack.fail("apps.connections.open", error="invalid_auth")
    try:
        channel.start()
        assert "Socket Mode cannot connect: invalid_auth" in channel.error
        [call] = slack.calls_to("apps.connections.open")
        assert call.headers["Authorization"] == "Bearer xapp-test"  # the app token, only for this call
        ts = channel.request(incident(), gate(), message=MESSAGE)
        slack.add_reply(ts, "UALICE01", "APPROVE")
        assert channel.replies("INC-42") == [("UALICE01", "APPROVE")]
        assert store.events("workflow_events", kind="integration_error")
    finally:
        channel.close()


# --- outages and readiness ----------------------------------------------------------------------


def test_slack_unreachable_leaves_the_request_queued_and_it_is_posted_once_slack_is_back(state, clock, store):
    port = closed_port()
    channel = make_channel(f"http://127.0.0.1:{port}/", state, clock)
    handle = channel.request(incident(), gate(), message=MESSAGE)
    assert handle == "pending:INC-42"
    assert channel.replies("INC-42") == []
    assert "unreachable" in channel.error
    assert not channel.check().ok
    assert store.events("workflow_events", "INC-42", kind="integration_error")

    slack = FakeSlack(port=port).start()
    try:
        channel.replies("INC-42")  # still backing off: nothing sent
        assert slack.calls_to("chat.postMessage") == []
        clock.advance(10)
        assert channel.flush() == 0
        [post] = slack.calls_to("chat.postMessage")
        assert channel.request(incident(), gate(), message=MESSAGE) == slack.top_level()[0]["ts"]
        assert len(slack.calls_to("chat.postMessage")) == 1
        assert channel.error is None and channel.check().ok
    finally:
        slack.stop()


def test_slack_answering_500_keeps_the_follow_ups_in_order_behind_the_request(slack, state, clock):
    channel = make_channel(slack.url, state, clock)
    slack.down_status = 500
    channel.request(incident(), gate(), message=MESSAGE)
    channel.notify("INC-42", "first follow-up")
    assert "HTTP 500" in channel.error
    slack.down_status = None
    clock.advance(10)
    channel.flush()
    parent, reply = slack.calls_to("chat.postMessage")[-2:]
    assert "blocks" in parent.body and reply.body["text"] == "first follow-up"
    assert reply.body["thread_ts"] == slack.top_level()[0]["ts"]


def test_a_dm_to_a_bad_admin_id_never_holds_back_the_thread_answers(slack, state, clock):
    slack.unknown_channels.add("UNOBODY1")
    channel = make_channel(slack.url, state, clock, admin_user_id="UNOBODY1")
    ts = channel.request(incident(severity="critical"), gate(required="force_override"), message=MESSAGE)
    assert "channel_not_found" in channel.error
    channel.notify("INC-42", "APPROVE refused for INC-42")
    answers = [m["text"] for m in slack.messages.values() if m.get("thread_ts") == ts]
    assert answers == ["APPROVE refused for INC-42"]  # sent at once, while the DM is backing off
    dm_attempts = [c for c in slack.calls_to("chat.postMessage") if c.body["channel"] == "UNOBODY1"]
    assert len(dm_attempts) == 1
    slack.unknown_channels.clear()
    clock.advance(3)
    assert channel.flush() == 0
    assert channel.error is None


def test_blocks_refused_by_slack_fall_back_to_a_plain_text_request(slack, state, clock):
    channel = make_channel(slack.url, state, clock)
    slack.fail("chat.postMessage", error="invalid_blocks")
    ts = channel.request(incident(), gate(), message=MESSAGE)
    assert ts == slack.top_level()[0]["ts"]
    assert "Reply in this thread with APPROVE" in slack.messages[ts]["text"]
    slack.add_reply(ts, "UALICE01", "APPROVE")
    assert channel.replies("INC-42") == [("UALICE01", "APPROVE")]


def test_without_configured_approvers_check_is_not_ready_and_every_approval_is_refused(slack, state, clock):
    channel = make_channel(slack.url, state, clock, approvers=(), overriders=())
    ready = channel.check()
    assert not ready.ok and "SLACK_APPROVERS" in ready.reason
    channel.request(incident(), gate(), message=MESSAGE)
    assert "Approvals are disabled" in all_text(slack.calls_to("chat.postMessage")[0].body["blocks"])
    settings = Settings(slack_bot_token="xoxb-test", slack_channel="#incidents")
    policy = build_approval_policy(settings)
    for user in ("UALICE01", "oncall"):
        assert not policy.may_decide(user)


def test_check_names_the_mode_when_ready(slack, state, clock):
    ready = make_channel(slack.url, state, clock).check()
    assert ready.ok and "one call every 30s at most" in ready.reason
    assert slack.calls_to("auth.test")


def test_bootstrap_builds_slack_with_the_local_inbox_alongside_and_names_missing_variables(store, tmp_path):
    with pytest.raises(ConfigError, match="SLACK_CHANNEL"):
        build_approval_channel(Settings(slack_bot_token="xoxb-test"), store)
    settings = Settings(output_dir=tmp_path, slack_bot_token="xoxb-test", slack_channel="#incidents",
                        slack_approvers=APPROVERS, slack_api_url="http://127.0.0.1:9/")
    channel = build_approval_channel(settings, store)
    assert isinstance(channel, FallbackApprovalChannel) and channel.name == "slack"
    assert build_approval_channel(Settings(output_dir=tmp_path), store).name == "local-inbox"
    policy = build_approval_policy(settings)
    assert policy.may_decide("UALICE01") and policy.may_decide("oncall")
    assert "xoxb-test" not in repr(settings)
