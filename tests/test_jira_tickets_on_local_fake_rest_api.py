"""Jira tickets: the real ``jira`` client against a local fake speaking Jira Cloud's REST v2
wire format on 127.0.0.1 (create with the idempotency search, comment, transition to done by
status category, outages)."""

from __future__ import annotations

import base64

import pytest
from jira_wire import EMAIL, TOKEN, FakeJira

from safety_governor.adapters.fallbacks import FallbackTickets
from safety_governor.adapters.jira_tickets import JiraTickets, incident_label
from safety_governor.adapters.tickets_local import LocalTickets
from safety_governor.approval_state import ApprovalState
from safety_governor.bootstrap import build_tickets
from safety_governor.config import Settings
from safety_governor.errors import ConfigError, TicketError
from safety_governor.models import Incident

INCIDENT = Incident(id="INC-42", service="checkout-api", severity="high", summary="Checkout 5xx spike after deploy",
                    symptoms="5xx on POST /checkout")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def jira():
    fake = FakeJira().start()
    yield fake
    fake.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def tickets(url: str, store, clock: Clock, **kwargs) -> JiraTickets:
    params = dict(url=url, email=EMAIL, api_token=TOKEN, project_key="OPS", state=ApprovalState(store),
                  timeout=2.0, retry_seconds=30.0, clock=clock)
    params.update(kwargs)
    return JiraTickets(**params)


def test_create_searches_the_current_search_jql_endpoint_then_creates_one_issue_on_a_local_fake_jira(
        jira, store, clock):
    t = tickets(jira.url, store, clock)
    ticket = t.create(INCIDENT)

    assert ticket.key == "OPS-101" and ticket.url == f"{jira.url}/browse/OPS-101"
    gets = jira.paths("GET")
    assert "/rest/api/2/serverInfo" in gets and "/rest/api/2/search/jql" in gets
    assert "/rest/api/2/search" not in gets  # the removed endpoint (410 on Cloud)
    [search] = [c for c in jira.calls if c.path == "/rest/api/2/search/jql"]
    assert f'labels = "{incident_label("INC-42")}"' in search.query["jql"][0]
    [create] = [c for c in jira.calls if c.method == "POST" and c.path == "/rest/api/2/issue"]
    fields = create.body["fields"]
    assert fields["project"] == {"key": "OPS"} and fields["issuetype"] == {"name": "Task"}
    assert fields["summary"].startswith("[INC-42] checkout-api:")
    assert fields["labels"] == ["safety-governor", "sg-incident-inc-42"]
    assert "Severity: high" in fields["description"]

    assert t.create(INCIDENT).key == "OPS-101"
    assert tickets(jira.url, store, clock).create(INCIDENT).key == "OPS-101"  # a restarted governor
    assert len([p for p in jira.paths("POST") if p == "/rest/api/2/issue"]) == 1


def test_an_issue_created_before_a_crash_is_found_by_its_label_and_not_created_again(jira, store, clock):
    jira.add_issue("OPS-7", "[INC-42] checkout-api: Checkout 5xx spike after deploy",
                   ["safety-governor", incident_label("INC-42")])
    jira.add_issue("OPS-8", "[INC-420] another incident", ["safety-governor", incident_label("INC-42")])
    assert tickets(jira.url, store, clock).create(INCIDENT).key == "OPS-7"
    assert "/rest/api/2/issue" not in jira.paths("POST")


def test_a_failed_create_is_not_retried_by_the_client_and_the_next_attempt_creates_one_issue(jira, store, clock):
    jira.failures.append(("POST", "/rest/api/2/issue", 503))
    t = tickets(jira.url, store, clock)
    with pytest.raises(TicketError, match="HTTP 503"):
        t.create(INCIDENT)
    assert jira.paths("POST").count("/rest/api/2/issue") == 1  # max_retries=0: no silent second POST
    assert "HTTP 503" in t.error
    assert t.check().ok  # check() makes a fresh call, and Jira answers again
    assert t.create(INCIDENT).key == "OPS-101"
    assert jira.paths("POST").count("/rest/api/2/issue") == 2
    assert len(jira.issues) == 1


def test_comment_posts_a_plain_text_comment(jira, store, clock):
    t = tickets(jira.url, store, clock)
    key = t.create(INCIDENT).key
    t.comment(key, "Gate block_and_escalate: contradictions")
    assert jira.comments[key] == ["Gate block_and_escalate: contradictions"]


def test_resolve_takes_the_transition_into_the_done_status_category_whatever_it_is_called(jira, store, clock):
    t = tickets(jira.url, store, clock)
    key = t.create(INCIDENT).key
    t.resolve(key, "Resolved: error rate back under 10%")
    [post] = [c for c in jira.calls if c.method == "POST" and c.path.endswith("/transitions")]
    assert post.body["transition"] == {"id": 51}  # "Ship it" -> Released (category done), not "Investigate"
    assert post.body["fields"] == {"resolution": {"name": "Fixed"}}
    assert jira.issues[key]["fields"]["status"]["name"] == "Released"
    assert jira.comments[key] == ["Resolved: error rate back under 10%"]
    t.resolve(key, "again")
    assert len([c for c in jira.calls if c.method == "POST" and c.path.endswith("/transitions")]) == 1


def test_an_issue_already_done_is_left_alone(jira, store, clock):
    t = tickets(jira.url, store, clock)
    key = t.create(INCIDENT).key
    jira.issues[key]["fields"]["status"] = {"name": "Released", "statusCategory": {"key": "done"}}
    t.resolve(key, "done elsewhere")
    assert not [c for c in jira.calls if c.path.endswith("/transitions")]


def test_jira_down_fails_create_with_one_line_and_queues_comments_until_it_is_back(jira, store, clock):
    t = tickets(jira.url, store, clock)
    key = t.create(INCIDENT).key
    jira.down_status = 503
    t.comment(key, "approval accepted")
    t.resolve(key, "resolved")
    assert "HTTP 503" in t.error and not t.check().ok
    assert len(store.events("workflow_events", kind="integration_error")) >= 1
    with pytest.raises(TicketError):
        t.create(Incident(id="INC-43", service="checkout-api", severity="low", summary="x"))
    jira.down_status = None
    assert t.flush() == 2  # backing off: nothing is sent yet
    clock.now += 31
    assert t.flush() == 0
    assert jira.comments[key] == ["approval accepted", "resolved"]
    assert jira.issues[key]["fields"]["status"]["name"] == "Released"
    assert t.error is None and t.check().ok


def test_errors_never_carry_the_credentials(jira, store, clock):
    t = tickets(jira.url, store, clock, api_token="wrong-token")
    with pytest.raises(TicketError) as caught:
        t.create(INCIDENT)
    secrets = ("wrong-token", base64.b64encode(f"{EMAIL}:wrong-token".encode()).decode())
    recorded = str(store.events("workflow_events", kind="integration_error")) + str(caught.value) + str(t.error)
    assert "HTTP 401" in recorded
    assert not any(s in recorded for s in secrets)


def test_an_unreachable_jira_is_retried_later(store, clock):
    t = tickets("http://127.0.0.1:9", store, clock)
    with pytest.raises(TicketError, match="unreachable"):
        t.create(INCIDENT)
    assert not t.check().ok


def test_fallback_opens_a_local_ticket_while_jira_is_down_and_the_jira_issue_once_it_is_back(jira, store, clock):
    state = ApprovalState(store)
    jira_tickets = tickets(jira.url, store, clock, state=state)
    fallback = FallbackTickets(jira_tickets, LocalTickets(":memory:"), state)
    jira.down_status = 503
    local = fallback.create(INCIDENT)
    assert local.key == "SRE-101"
    fallback.comment(local.key, "gate blocked")
    assert fallback.create(INCIDENT).key == "SRE-101"
    assert not fallback.check().ok and "local tickets" in fallback.check().reason

    jira.down_status = None
    clock.now += 31
    fallback.flush()
    [issue] = jira.issues.values()
    assert "local ticket SRE-101" in jira.comments[issue["key"]][0]
    fallback.comment(local.key, "FORCE_OVERRIDE accepted")
    fallback.resolve(local.key, "resolved")
    assert jira.comments[issue["key"]][1:] == ["FORCE_OVERRIDE accepted", "resolved"]
    assert fallback.local.comments(local.key) == ["gate blocked", "FORCE_OVERRIDE accepted"]
    assert issue["fields"]["status"]["name"] == "Released"


def test_bootstrap_names_every_missing_jira_variable_once_one_is_set(store, tmp_path):
    with pytest.raises(ConfigError, match="JIRA_EMAIL, JIRA_API_TOKEN, JIRA_PROJECT_KEY"):
        build_tickets(Settings(output_dir=tmp_path, jira_url="https://example.atlassian.net"), store)
    assert build_tickets(Settings(output_dir=tmp_path), store).name == "local"
    settings = Settings(output_dir=tmp_path, jira_url="http://127.0.0.1:9", jira_email=EMAIL, jira_api_token=TOKEN,
                        jira_project_key="OPS")
    assert isinstance(build_tickets(settings, store), FallbackTickets)
    assert TOKEN not in repr(settings)


class FailingLinks(ApprovalState):
    """Bookkeeping whose ``link_ticket`` fails ``times`` times (the store is down, or the process
    dies right after Jira created the issue)."""

    def __init__(self, store, times: int) -> None:
        super().__init__(store)
        self.times = times

    def link_ticket(self, *args, **kwargs):
        if self.times:
            self.times -= 1
            raise TicketError("store unavailable")
        return super().link_ticket(*args, **kwargs)


def test_a_retry_after_a_lost_link_reconciles_its_own_new_issue_on_the_eventually_consistent_fake_jira(
        jira, store, clock):
    t = tickets(jira.url, store, clock, state=FailingLinks(store, times=1))
    with pytest.raises(TicketError):
        t.create(INCIDENT)
    assert jira.unindexed == {"OPS-101"}  # search cannot see it yet
    assert t.create(INCIDENT).key == "OPS-101"
    [_, search] = [c for c in jira.calls if c.path == "/rest/api/2/search/jql"]
    assert search.query["reconcileIssues"] == ["101"]
    assert jira.paths("POST").count("/rest/api/2/issue") == 1


def test_a_restart_right_after_a_create_waits_for_the_search_index_instead_of_creating_a_second_issue(
        jira, store, clock):
    from datetime import UTC, datetime, timedelta

    wall = [datetime(2026, 12, 1, 12, 0, tzinfo=UTC)]
    crashed = tickets(jira.url, store, clock, state=FailingLinks(store, times=1), now=lambda: wall[0])
    with pytest.raises(TicketError):
        crashed.create(INCIDENT)  # Jira created OPS-101; the process died before recording it
    restarted = tickets(jira.url, store, clock, now=lambda: wall[0])
    wall[0] += timedelta(seconds=5)
    with pytest.raises(TicketError, match="not be searchable yet"):
        restarted.create(INCIDENT)
    jira.index()
    assert restarted.create(INCIDENT).key == "OPS-101"
    assert jira.paths("POST").count("/rest/api/2/issue") == 1
