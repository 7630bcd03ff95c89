"""The offline adapters behind the dashboard: local tickets (SRE-101…) and the local inbox."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from safety_governor.adapters.inbox_local import LocalInbox
from safety_governor.adapters.tickets_local import LocalTickets
from safety_governor.errors import ApprovalChannelError, InputError
from safety_governor.models import GateOutput, Incident
from safety_governor.ports import ApprovalChannel, TicketPort

_tickets: TicketPort = LocalTickets()
_inbox: ApprovalChannel = LocalInbox()


def incident(n: int) -> Incident:
    return Incident(id=f"inc-{n}", service="checkout-web", severity="medium", summary="5xx spike after deploy")


def gate(incident_id: str) -> GateOutput:
    return GateOutput(incident_id=incident_id, decision="block_and_escalate", approval_required="approve",
                      proposed_action="rollback_last_deploy", confidence_initial=7, confidence_final=6,
                      confidence_delta=-1, contradiction_count=0, evidence_coverage=1, context_mode="full_context",
                      decision_id="dec-1", config_hash="sha256:x")


def test_tickets_get_jira_like_keys_from_sre_101_and_creating_twice_returns_the_first(tmp_path: Path):
    tickets = LocalTickets(tmp_path / "governor.db")
    first = tickets.create(incident(1))
    assert first.key == "SRE-101" and first.status == "open"
    assert tickets.create(incident(2)).key == "SRE-102"
    assert tickets.create(incident(1)) == first
    assert tickets.check().ok
    tickets.close()


def test_tickets_are_commented_closed_once_and_numbering_survives_a_restart(tmp_path: Path):
    path = tmp_path / "governor.db"
    tickets = LocalTickets(path)
    key = tickets.create(incident(1)).key
    tickets.comment(key, "Gate execute for rollback_last_deploy")
    tickets.resolve(key, "Resolved: verified")
    tickets.resolve(key, "a second close keeps the first resolution")
    tickets.close()
    reopened = LocalTickets(path)
    assert reopened.get(key).status == "done"
    assert reopened.resolution(key) == "Resolved: verified"
    assert reopened.comments(key) == ["Gate execute for rollback_last_deploy"]
    assert reopened.create(incident(2)).key == "SRE-102"
    reopened.close()


def test_commenting_on_an_unknown_ticket_is_a_clear_error():
    with pytest.raises(InputError, match="no ticket SRE-999"):
        LocalTickets().comment("SRE-999", "hello")


def test_tickets_opened_from_many_threads_get_distinct_keys(tmp_path: Path):
    tickets = LocalTickets(tmp_path / "governor.db")
    threads = [threading.Thread(target=tickets.create, args=(incident(n),)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    keys = {tickets.for_incident(f"inc-{n}").key for n in range(20)}
    assert len(keys) == 20 and tickets.count() == 20
    tickets.close()


def test_each_inbox_reply_is_returned_exactly_once_and_in_order():
    inbox = LocalInbox()
    inbox.request(incident(1), gate("inc-1"), message="approve?")
    inbox.push("inc-1", "oncall", "APPROVE")
    inbox.push("inc-1", "oncall", "HOLD")
    assert inbox.replies("inc-1") == [("oncall", "APPROVE"), ("oncall", "HOLD")]
    assert inbox.replies("inc-1") == []
    inbox.notify("inc-1", "approved by oncall")
    assert [m.kind for m in inbox.thread("inc-1")] == ["request", "reply", "reply", "notify"]


def test_a_reply_to_an_incident_with_no_request_is_refused():
    with pytest.raises(ApprovalChannelError, match="no approval request is open for inc-9"):
        LocalInbox().push("inc-9", "oncall", "APPROVE")


def test_replies_pushed_from_many_threads_are_all_read_once():
    inbox = LocalInbox()
    inbox.request(incident(1), gate("inc-1"), message="approve?")
    pushers = [threading.Thread(target=lambda n=n: [inbox.push("inc-1", f"u{n}", f"HOLD {i}") for i in range(50)])
               for n in range(8)]
    seen: list[tuple[str, str]] = []
    for t in pushers:
        t.start()
    while any(t.is_alive() for t in pushers):
        seen.extend(inbox.replies("inc-1"))
    seen.extend(inbox.replies("inc-1"))
    assert len(seen) == 400 and len(set(seen)) == 400
