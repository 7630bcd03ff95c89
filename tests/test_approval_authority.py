"""Who may allow what: ASCII commands, visible override reasons, roles signed by distinct users,
replies bound to their decision and expiring after the TTL, identity from the channel (OS account,
Slack id) mapped in the approvers file. Thresholds are tested at the boundary and one step
either side (TTL, reason length, role counts)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from safety_governor.approvals import (
    ApprovalPolicy,
    ApprovalSession,
    parse_command,
    role_assignment,
    visible_length,
)
from safety_governor.authority import check_cli_user, load_approvers, local_principal, os_account
from safety_governor.config import DEFAULT_APPROVERS_PATH
from safety_governor.errors import ConfigError, InputError

T0 = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)
TTL = 1800
POLICY = ApprovalPolicy.of(
    ["alice", "bob", "carol", "oncall"], ["bob", "oncall"],
    roles={"alice": ["dba"], "bob": ["incident_commander"], "carol": ["dba", "incident_commander"],
           "oncall": ["sre"]},
    aliases={"UALICE01": "alice", "os:alice-laptop": "alice", "os:*": "oncall"}, ttl_seconds=TTL)


def session(required: str = "approve", roles: tuple[str, ...] = (), decision: str = "block_and_escalate"):
    return ApprovalSession(incident_id="inc-a", decision=decision, approval_required=required,  # type: ignore[arg-type]
                           policy=POLICY, decision_id="dec-1", decided_at=T0, required_roles=roles)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# --- commands ------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["FORCE_OVERRıDE reason here ok", "ＡＰＰＲＯＶＥ", "APPROVE\u200b", "AРPROVE",
                                  "ſtop", "HOLD\u0307"])
def test_look_alike_unicode_words_are_not_commands(text):
    assert parse_command(text)[0] is None


@pytest.mark.parametrize(("text", "command"), [("approve", "APPROVE"), ("Force_Override x", "FORCE_OVERRIDE"),
                                               ("  hold  ", "HOLD"), ("reject\tnow", "REJECT")])
def test_ascii_commands_compare_case_insensitively(text, command):
    assert parse_command(text)[0] == command


@pytest.mark.parametrize(("reason", "outcome"), [
    ("sev1 now", "invalid"),          # 7 visible characters
    ("sev1 now!", "accepted"),        # exactly 8
    ("sev1 now!!", "accepted"),       # 9
    ("\u200b" * 20, "invalid"),
    ("s\u200be\u200bv\u200b1\u200b \u2060n\ufeffo\u200dw", "invalid"),  # 7 visible among format characters
    ("s\u200be\u200bv\u200b1\u200b \u2060n\ufeffo\u200dw!", "accepted"),
])
def test_a_force_override_reason_needs_eight_visible_characters(reason, outcome):
    s = session("force_override")
    assert s.apply("bob", f"FORCE_OVERRIDE {reason}", at=at(1)).outcome == outcome
    assert s.may_execute is (outcome == "accepted")


def test_visible_length_ignores_whitespace_and_format_characters():
    assert visible_length(" a\u200bb\u200cc\u200dd\u2060e\ufefff\u200eg\u200fh\u00a0") == 8


# --- decision binding and expiry -----------------------------------------------------------


@pytest.mark.parametrize(("seconds", "outcome", "runs"), [(TTL - 1, "accepted", True), (TTL, "expired", False),
                                                          (TTL + 1, "expired", False)])
def test_a_reply_expires_exactly_at_the_ttl(seconds, outcome, runs):
    s = session()
    event = s.apply("alice", "APPROVE", at=at(seconds))
    assert event.outcome == outcome and s.may_execute is runs
    if not runs:
        assert s.state == "expired" and s.closed
        # Closed for good: a later override does not revive it.
        assert s.apply("bob", "FORCE_OVERRIDE the commander insists on it", at=at(seconds + 1)).outcome == "expired"
        assert not s.may_execute


def test_an_authorised_decision_is_not_undone_by_the_clock_and_an_unanswered_wait_expires():
    s = session()
    assert s.apply("alice", "APPROVE", at=at(10)).outcome == "accepted"
    assert not s.expire() and s.may_execute
    idle = session()
    assert idle.expired_at(at(TTL)) and not idle.expired_at(at(TTL - 1))
    assert idle.expire() and idle.state == "expired" and not idle.may_execute


def test_a_reply_to_an_older_decision_is_refused():
    s = session()
    event = s.apply("alice", "APPROVE", at=at(1), decision_id="dec-0")
    assert event.outcome == "refused" and "answers decision dec-0" in event.reason
    assert not s.may_execute
    assert s.apply("alice", "APPROVE", at=at(2), decision_id="dec-1").outcome == "accepted"


# --- roles -----------------------------------------------------------------------------------


ROLES = ("dba", "incident_commander")


@pytest.mark.parametrize(("approvers", "runs"), [
    ([], False),
    (["alice"], False),                     # one role of two
    (["alice", "bob"], True),               # both, distinct users
    (["alice", "alice"], False),            # the same user twice
    (["carol"], False),                     # one user holding both roles is one signer
    (["carol", "alice"], True),             # carol moves to incident_commander
    (["carol", "bob"], True),
    (["alice", "carol", "bob"], True),      # already approved at carol: bob's is ignored
])
def test_each_required_role_needs_an_approve_from_a_distinct_user(approvers, runs):
    s = session(roles=ROLES)
    for seconds, user in enumerate(approvers, start=1):
        s.apply(user, "APPROVE", at=at(seconds))
    assert s.may_execute is runs
    assert s.missing_roles() == ([] if runs else s.missing_roles())
    if runs:
        assert set(s.signed_roles()) == set(ROLES) and len(set(s.signed_roles().values())) == 2


def test_the_thread_says_which_roles_signed_and_which_are_missing():
    s = session(roles=ROLES)
    event = s.apply("alice", "APPROVE", at=at(1))
    assert event.outcome == "accepted" and s.state == "pending"
    assert "roles signed: dba (alice); missing: incident_commander" in event.reason
    none = s.apply("oncall", "APPROVE", at=at(2))
    assert none.outcome == "unauthorized" and "holds none of the roles" in none.reason
    done = s.apply("bob", "APPROVE", at=at(3))
    assert done.outcome == "accepted" and "missing: none" in done.reason and s.authorised_by == "alice, bob"


def test_force_override_by_an_overrider_is_the_break_glass_path_even_with_roles_missing():
    s = session(roles=ROLES)
    s.apply("alice", "APPROVE", at=at(1))
    event = s.apply("bob", "FORCE_OVERRIDE commander on the bridge, lock storm", at=at(2))
    assert event.outcome == "accepted" and s.state == "overridden" and s.may_execute


def test_role_assignment_finds_distinct_signers_when_one_exists():
    signers = {"carol": frozenset(ROLES), "alice": frozenset({"dba"})}
    assert role_assignment(ROLES, signers) == {"dba": "alice", "incident_commander": "carol"}
    assert len(role_assignment(ROLES, {"carol": frozenset(ROLES)})) == 1
    assert role_assignment(("dba", "dba"), {"alice": frozenset({"dba"})}) == {"dba": "alice"}


# --- identity --------------------------------------------------------------------------------


def test_principals_map_to_configured_users_and_the_event_records_channel_and_account():
    s = session()
    event = s.apply("os:alice-laptop", "APPROVE", at=at(1), channel="cli")
    assert (event.user, event.os_account, event.channel, event.principal) == ("alice", "alice-laptop", "cli",
                                                                              "os:alice-laptop")
    assert POLICY.user_of("UALICE01") == "alice" and POLICY.user_of("os:someone-else") == "oncall"
    assert POLICY.user_of("mallory") == "mallory" and not POLICY.may_decide("mallory")


def test_the_shipped_approvers_file_loads_and_maps_every_local_account_to_oncall():
    approvers = load_approvers(DEFAULT_APPROVERS_PATH)
    assert approvers.user_for_os_account(os_account()) == "oncall"
    policy = approvers.policy(ttl_seconds=TTL)
    assert policy.may_override("oncall") and policy.roles_of("carol") == {"dba", "incident_commander"}
    assert policy.may_decide(local_principal())


def _approvers(tmp_path: Path, users: dict) -> Path:
    path = tmp_path / "approvers.json"
    path.write_text(json.dumps({"version": "t", "users": users}), encoding="utf-8")
    return path


def test_cli_user_must_be_the_callers_own_mapped_user(tmp_path):
    me = os_account()
    approvers = load_approvers(_approvers(tmp_path, {"alice": {"os_accounts": [me]}, "bob": {"os_accounts": []}}))
    assert check_cli_user(approvers, None) == (me, "alice")
    assert check_cli_user(approvers, "alice") == (me, "alice")
    with pytest.raises(InputError, match="--user bob refused"):
        check_cli_user(approvers, "bob")
    unmapped = load_approvers(_approvers(tmp_path, {"bob": {"os_accounts": ["someone-else"]}}))
    with pytest.raises(InputError, match="is not mapped to any user"):
        check_cli_user(unmapped, None)


@pytest.mark.parametrize(("content", "message"), [
    (None, "file not found"),
    ('{"version": "t"}', "field 'users'"),
    ('{"version": "t", "users": {"a": {"approve": "yes"}}}', "field 'users.a.approve'"),
    ('{"version": "t", "users": {"a": {"os_accounts": ["x"]}, "b": {"os_accounts": ["x"]}}}',
     "OS account 'x' is mapped to both a and b"),
    ('{"version": "t", "users": {"a": {"colour": "red"}}}', "field 'users.a.colour'"),
])
def test_a_bad_approvers_file_is_an_error_naming_the_file_and_the_key(tmp_path, content, message):
    path = tmp_path / "approvers.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match="approvers.json") as err:
        load_approvers(path)
    assert message in str(err.value)
