"""The shell side of approvals: ``approvals list|reply`` and what ``assess --live`` leaves behind.

A reply from a shell is a request stored for the governor that holds the wait: it carries the
caller's OS account and the decision it answers, and that governor authorises it with its own
approvers file. What could never count is refused here at once (exit 2, nothing queued).
``runbooks approve|revoke`` works the same way (``request_runbook_review``).
"""

from __future__ import annotations

import argparse
import json

from .config import Settings
from .errors import InputError
from .ports import Store

EXIT_OK = 0


def claimed_message(store: object, incident_id: str) -> str:
    """Who claimed the incident and when, and how to assess it again."""
    claim_of = getattr(store, "claim_of", None)
    claim = claim_of(incident_id) if callable(claim_of) else None
    who = f" by {claim['owner']} at {claim['claimed_at']}" if claim else ""
    return (f"incident {incident_id} was already claimed{who}: one governor works an incident once. To assess "
            "it again, copy the file with a new incident id; to answer its approval, use 'approvals list' and "
            "'approvals reply'")


def open_durable_wait(governor: object, record: object) -> dict | None:
    """The blocked incident's durable wait, the same record the dashboard opens, so that
    ``approvals list|reply`` act on it and a running dashboard (or a restarted one) resumes it."""
    from .approval_state import ApprovalState
    from .durable_approvals import approval_request_text, snapshot_assessment
    from .pipeline import Assessment

    assert hasattr(governor, "pipeline") and hasattr(record, "gate")
    a = Assessment(incident=record.incident, plan=record.plan, plan_error=record.plan_error, stress=record.stress,
                   stress_error=record.stress_error, compress=record.compress, gate=record.gate, model=record.model,
                   tool_calls=record.tool_calls, started_at=record.started_at)
    preview = governor.pipeline.preview(a)
    return ApprovalState(governor.store, audit=governor.audit).open_wait(
        a.incident.id, a.gate.decision_id, channel="local-inbox", assessment=snapshot_assessment(a),
        message=approval_request_text(a, preview))


def run_approvals(settings: Settings, args: argparse.Namespace, store: Store) -> int:
    """List the approvals a governor is waiting for, or queue a reply for one of them (on
    ``store``, which the caller opened and closes)."""
    import uuid

    from .adapters.inbox_local import STORED_KEY
    from .approval_state import ApprovalState
    from .approvals import OS_PREFIX

    state = ApprovalState(store)
    waits = {str(w["incident_id"]): w for w in state.open_waits()}
    if args.action == "list":
        rows = [{"incident_id": i, "decision_id": w.get("decision_id"), "channel": w.get("channel"),
                 "ticket": (w.get("ticket") or {}).get("key"),
                 "approval_required": (w.get("assessment") or {}).get("gate", {}).get("approval_required"),
                 "since": w.get("at"), "message": w.get("message", "")} for i, w in waits.items()]
        if args.json:
            print(json.dumps(rows, indent=2, default=str))
        elif not rows:
            print("No approval is waiting.")
        else:
            for r in rows:
                print(f"{r['incident_id']}  needs {r['approval_required']}  ticket {r['ticket'] or '-'}  "
                      f"since {r['since']}")
        return EXIT_OK
    if not args.incident or not args.text:
        raise InputError("usage: approvals reply INCIDENT_ID TEXT... (e.g. APPROVE, or FORCE_OVERRIDE <reason>)")
    if args.incident not in waits:
        raise InputError(f"no approval is waiting for {args.incident} (see: approvals list)")
    text = " ".join(args.text).strip()
    wait = waits[args.incident]
    account, user, note = check_reply(settings, wait, text, args.user)
    state.receive(args.incident, f"{STORED_KEY}{uuid.uuid4().hex}", user=f"{OS_PREFIX}{account}", text=text,
                  source="cli", decision_id=str(wait.get("decision_id")), os_account=account)
    print(f"queued for {args.incident} (decision {wait.get('decision_id')}) as {user} (OS account {account}): "
          f"{text}{note}. The running governor applies the approval rules with its own approvers file; see "
          "its approval thread or output/workflow_events.jsonl")
    return EXIT_OK


def check_reply(settings: Settings, wait: dict, text: str, requested_user: str | None) -> tuple[str, str, str]:
    """What a shell reply can be told at once: ``(os_account, user, note)``. A non-command, a
    ``--user`` that is not the caller's own mapped user, a user who may not decide and a
    FORCE_OVERRIDE without a reason (or from a non-overrider) are refused here (``InputError``,
    nothing queued); the governor holding the wait still decides with its own configuration."""
    from .approvals import MIN_REASON_CHARS, parse_command, visible_length
    from .authority import check_cli_user, load_approvers

    approvers = load_approvers(settings.approvers_path)
    account, user = check_cli_user(approvers, requested_user)
    command, rest = parse_command(text)
    if command is None:
        raise InputError(f"not a command: {text!r}; the first word must be APPROVE, FORCE_OVERRIDE, HOLD or REJECT "
                         "(nothing queued)")
    policy = approvers.policy()
    if not policy.may_decide(user):
        raise InputError(f"{user} is not a configured approver in {settings.approvers_path} (nothing queued)")
    if command == "FORCE_OVERRIDE":
        if not policy.may_override(user):
            raise InputError(f"{user} may approve but is not a configured overrider (nothing queued)")
        if visible_length(rest) < MIN_REASON_CHARS:
            raise InputError(f"FORCE_OVERRIDE needs a reason of at least {MIN_REASON_CHARS} visible characters "
                             "(nothing queued)")
    required = ((wait.get("assessment") or {}).get("gate") or {}).get("approval_required")
    note = ""
    if required == "forbidden" and command in ("APPROVE", "FORCE_OVERRIDE"):
        note = " (it will be refused: the catalogue marks this action 'never'; do it by hand, outside the governor)"
    elif required == "force_override" and command == "APPROVE":
        note = " (it will be refused: this decision needs FORCE_OVERRIDE <reason>)"
    return account, user, note


def request_runbook_review(settings: Settings, args: argparse.Namespace, store: Store) -> int:
    """Store an approve/revoke request for the governor running on ``store`` (which the caller
    opened and closes) and, when one runs,
    wait up to ``args.wait`` seconds for its outcome. Refused here at once (exit 2, nothing
    queued): a caller this shell's approvers file does not let decide, an unknown runbook, one
    not in a state the action applies to. Exit 0 when applied or queued, 1 when the governor
    refused it or it failed there."""
    import time

    from .adapters.store_sqlite import SQLiteStore
    from .approval_state import ApprovalState
    from .authority import check_cli_user, load_approvers
    from .learning import reviewable_entry
    from .service.store_lock import lock_holder

    approvers = load_approvers(settings.approvers_path)
    account, user = check_cli_user(approvers, args.user)
    if not approvers.policy().may_decide(user):
        raise InputError(f"{user} is not a configured approver in {settings.approvers_path} (nothing queued)")
    try:
        doc = reviewable_entry(store, args.id, f"{args.action}d")
    except InputError as exc:
        raise InputError(f"{exc} (nothing queued)" if "not found" not in str(exc) else str(exc)) from None
    state = ApprovalState(store)
    request = state.request_runbook_review(args.id, args.action, os_account=account,
                                           incident_id=doc.get("incident_id"), reason=args.reason or "")
    holder = lock_holder(settings.resolved_store_path) if isinstance(store, SQLiteStore) else {}
    outcome = None
    if holder is not None:
        deadline = time.monotonic() + max(0.0, args.wait)
        while outcome is None and time.monotonic() < deadline:
            time.sleep(0.2)
            outcome = state.runbook_review_outcome(request["request_id"])
    result = {"request_id": request["request_id"], "runbook_id": args.id, "action": args.action,
              "os_account": account, "user": user, "governor": holder, "outcome": outcome}
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    elif outcome is not None:
        print(f"{args.action} {args.id}: {outcome['outcome']} by the running governor: {outcome['detail']}")
    elif holder is None:
        print(f"queued {args.action} of {args.id} as {user} (OS account {account}), request {request['request_id']}: "
              f"no governor is running on {settings.resolved_store_path}; the request waits, and the next governor "
              "started on this store authorises it with its own approvers file and applies it once")
    else:
        who = f"pid {holder['pid']}" if holder.get("pid") else "the running governor"
        print(f"queued {args.action} of {args.id} as {user} (OS account {account}), request {request['request_id']}: "
              f"{who} authorises it with its own approvers file and applies it once; see its activity or "
              "output/workflow_events.jsonl (runbook_review_done)")
    if outcome is not None and outcome.get("outcome") != "applied":
        return 1
    return EXIT_OK
