"""Events past Elasticsearch's result window (issue 15, item 1).

``index.max_result_window`` (10,000) caps ``from + size`` of one search; a long-lived governor
has far more ``workflow_events`` than that, and a restart rebuilds its outbox, posted messages and
replies from them. These tests write more than 10,000 events and rebuild approval state on both
stores: the embedded store, and ``ElasticStore`` driven by the official client against
``FakeElasticsearch`` (a local server speaking the documented wire format that enforces the window
and serves points in time), and a real cluster when ``ELASTIC_URL`` is set (fresh indices with a
unique prefix, deleted afterwards). The bulk of the history is put straight into the index in
the form ``append_event`` writes it (a create with ``sg_seq``; on a cluster through ``_bulk``),
because 25,000 round trips would make the suite slow; the newest events always go through the
store's own write path.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import os
import uuid

import pytest
from elasticsearch import Elasticsearch
from jira_wire import EMAIL, TOKEN, FakeJira
from slack_wire import FakeSlack

from safety_governor.adapters.jira_tickets import JiraTickets
from safety_governor.adapters.slack_approvals import SlackApprovalChannel, default_retry_handlers
from safety_governor.adapters.store_elastic import ElasticStore
from safety_governor.adapters.store_sqlite import SQLiteStore
from safety_governor.approval_state import EVENTS, ApprovalState
from safety_governor.config import ELASTIC_INDEXES, Settings
from safety_governor.models import GateOutput, GateReason, Incident
from safety_governor.ports import Store
from wire_fakes import FakeElasticsearch

API_KEY = "es-test-api-key-0123456789"


@dataclass
class Backend:
    """A store, how to open another one on the same data (a restart), and how to seed history."""

    name: str
    fake: FakeElasticsearch | None
    path: Any
    settings: Settings | None = None  # a real cluster

    def open(self) -> Store:
        if self.settings is not None:
            return ElasticStore.from_settings(self.settings)
        if self.fake is None:
            return SQLiteStore(self.path)
        return ElasticStore(Elasticsearch(self.fake.url, api_key=API_KEY, max_retries=0), location=self.fake.url)

    def seed(self, store: Store, events: list[dict[str, Any]]) -> None:
        """History: written by ``append_event`` (embedded store), or put into the fake's index as
        ``append_event`` stores it (ids, ``at``, increasing ``sg_seq``)."""
        if isinstance(store, ElasticStore) and self.fake is None:
            name = store.index_name(EVENTS)
            for start in range(0, len(events), 5_000):
                ops: list[dict[str, Any]] = []
                for n, doc in enumerate(events[start : start + 5_000], start=start + 1):
                    event_id = f"wor-seed{n:07d}"
                    ops += [{"create": {"_index": name, "_id": event_id}},
                            {**doc, "id": event_id, "at": f"2026-11-01T00:00:00.{n:06d}+00:00", "sg_seq": n}]
                assert not store.client.bulk(operations=ops, refresh="wait_for")["errors"]
            return
        if self.fake is None:
            with store.atomic():
                for doc in events:
                    store.append_event(EVENTS, doc)
            return
        index = self.fake.docs.setdefault("workflow_events", {})
        for n, doc in enumerate(events, start=1):
            event_id = f"wor-seed{n:07d}"
            index[event_id] = {**doc, "id": event_id, "at": f"2026-11-01T00:00:00.{n:06d}+00:00", "sg_seq": n}


@pytest.fixture(params=["sqlite", "elastic-wire-fake", "elastic"])
def backend(request, tmp_path) -> Iterator[Backend]:
    if request.param == "sqlite":
        yield Backend("sqlite", None, tmp_path / "governor.db")
        return
    if request.param == "elastic":
        if not (os.environ.get("ELASTIC_URL") or os.environ.get("ELASTIC_CLOUD_ID")):
            pytest.skip("set ELASTIC_URL (and ELASTIC_API_KEY) to run this against Elasticsearch")
        prefix = f"sg-window-{uuid.uuid4().hex[:8]}"
        indices = tuple((logical, f"{prefix}-{logical.replace('_', '-')}") for logical in ELASTIC_INDEXES)
        settings = Settings.from_env().model_copy(update={"elastic_indices": indices})
        admin = ElasticStore.from_settings(settings)
        admin.ensure_indices()
        try:
            yield Backend("elastic", None, None, settings)
        finally:
            admin.client.options(ignore_status=404).indices.delete(index=",".join(name for _, name in indices))
            admin.close()
        return
    with FakeElasticsearch() as fake:
        yield Backend("elastic-wire-fake", fake, None)


def outbox_pair(n: int, integration: str = "slack") -> list[dict[str, Any]]:
    op = {"incident_id": f"old-{n % 97}", "op_id": f"op-old-{n:06d}", "integration": integration}
    return [{"kind": "outbox_queued", **op, "op": "thread", "payload": {"text": f"old {n}"}, "dedupe": f"d-{n}"},
            {"kind": "outbox_done", **op, "result": {"ts": f"{n}.0"}}]


def test_approval_state_is_rebuilt_from_25000_events_on_both_stores(backend):
    history = [e for n in range(12_400) for e in outbox_pair(n)]  # 24,800 finished calls
    history += [{"kind": "outbox_queued", "incident_id": "inc-new", "op_id": f"op-new-{n:03d}",
                 "integration": "slack", "op": "thread", "payload": {"text": f"new {n}"}} for n in range(100)]
    store = backend.open()
    backend.seed(store, history)
    # The newest 100 events through the store's own write path.
    state = ApprovalState(store)
    newest = [state.queue("slack", "thread", "inc-new", {"text": f"newer {n}"}) for n in range(99)]
    state.open_wait("inc-late", "dec-late", channel="slack", assessment={}, message="approve?")
    assert store.count(EVENTS) == 25_000
    store.close()

    restarted = ApprovalState(backend.open())
    pending = restarted.pending_ops("slack")
    assert [op.op_id for op in pending] == [f"op-new-{n:03d}" for n in range(100)] + [op.op_id for op in newest]
    assert restarted.is_done("slack", "d-0") and restarted.is_done("slack", "d-12399")
    assert [w["incident_id"] for w in restarted.open_waits()] == ["inc-late"]
    if backend.fake is not None:
        searches = backend.fake.matching("POST", r"/_search$")
        assert all(r.json().get("size", 10) + r.json().get("from", 0) <= 10_000 for r in searches)
        assert backend.fake.matching("POST", r"/workflow_events/_pit$") and not backend.fake.pits  # all closed


def test_a_search_past_the_window_is_refused_by_the_local_es_wire_fake_as_by_elasticsearch():
    with FakeElasticsearch() as fake:
        client = Elasticsearch(fake.url, api_key=API_KEY, max_retries=0)
        with pytest.raises(Exception, match=r"Result window is too large.*index.max_result_window"):
            client.search(index="workflow_events", size=10_001)
        with pytest.raises(Exception, match=r"Result window is too large"):
            client.search(index="workflow_events", from_=9_990, size=20)


# --- a restart with more than 10,000 events: nothing sent twice, nothing lost --------------------

INCIDENT = Incident(id="INC-77", service="checkout-api", severity="high", summary="Checkout 5xx spike")
GATE = GateOutput(
    incident_id="INC-77", decision="block_and_escalate", rule_ids=["contradictions"],
    reasons=[GateReason(rule_id="contradictions", message="2 grounded documents contradict restart_pods")],
    approval_required="approve", proposed_action="restart_pods", confidence_initial=8.0, confidence_final=5.6,
    confidence_delta=-2.4, contradiction_count=2, evidence_coverage=0.5, context_mode="full_context",
    decision_id="dec-0077", config_hash="sha256:abc")


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def channel_on(slack: FakeSlack, state: ApprovalState, clock: Clock) -> SlackApprovalChannel:
    return SlackApprovalChannel(
        token="xoxb-test", channel="#incidents", state=state, approvers=("UALICE01",), overriders=("UBOB0001",),
        api_url=slack.url, poll_seconds=30, clock=clock,
        retry_handlers=default_retry_handlers(connect_retry_interval=0.01, rate_limit_max_wait=2))


def jira_on(jira: FakeJira, state: ApprovalState, clock: Clock) -> JiraTickets:
    return JiraTickets(url=jira.url, email=EMAIL, api_token=TOKEN, project_key="OPS", state=state, timeout=2.0,
                       retry_seconds=30.0, clock=clock)


def test_a_restart_after_more_than_10000_events_sends_no_slack_post_or_jira_comment_twice_and_loses_none(backend):
    slack, jira, clock = FakeSlack().start(), FakeJira().start(), Clock()
    try:
        jira.add_issue("OPS-7", "[INC-77] checkout-api: Checkout 5xx spike", ["safety-governor"])
        store = backend.open()
        # 9,999 events of history: the request queued next is event 10,000, its post and done land after.
        backend.seed(store, [e for n in range(5_000) for e in outbox_pair(n, "jira")][:9_999])
        state = ApprovalState(store)
        first = channel_on(slack, state, clock)
        ts = first.request(INCIDENT, GATE, message="Restart the checkout pods?")
        jira.down_status = 503
        tickets = jira_on(jira, state, clock)
        for n in range(3):
            tickets.comment("OPS-7", f"gate decision note {n}")  # Jira is down: queued
        first.notify(INCIDENT.id, "APPROVE refused: the incident needs FORCE_OVERRIDE")
        assert store.count(EVENTS) > 10_000
        first.close()
        store.close()  # the governor stops

        jira.down_status = None
        clock.now += 3600
        store = backend.open()
        state = ApprovalState(store)
        second = channel_on(slack, state, clock)
        assert second.request(INCIDENT, GATE, message="Restart the checkout pods?") == ts
        second.flush()
        jira_on(jira, state, clock).flush(force=True)
        jira_on(jira, state, clock).flush(force=True)  # and once more: nothing left to send
        second.close()
        store.close()
    finally:
        slack.stop()
        jira.stop()
    assert len([m for m in slack.top_level() if m.get("ts") == ts]) == 1
    assert len(slack.calls_to("chat.postMessage")) == 2  # the request and the one thread notice
    assert jira.comments.get("OPS-7") == [f"gate decision note {n}" for n in range(3)]
