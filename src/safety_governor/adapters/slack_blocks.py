"""The Block Kit of a Slack approval request: the message, its status updates and the override modal.

Every text object is clipped to the limit Slack documents for it (Block Kit reference: a section's
``text`` 3,000 characters, each of its ``fields`` 2,000, a header's plain text 150, a button's
text 75 and ``value`` 2,000, ``block_id``/``action_id`` 255, a confirm dialog's title 100 and
text 300, a modal's title 24 and ``private_metadata`` 3,000), so no value, however long, makes
Slack answer ``invalid_blocks`` (which would leave a plain-text request without buttons) or
slack-sdk raise ``SlackObjectFormationError`` before the message is queued.

Untrusted text (incident summaries, agent rationale, reasons) is escaped for mrkdwn, so it can
neither mention ``@channel`` nor fake a link.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from slack_sdk.models.blocks import (
    ActionsBlock,
    ButtonElement,
    ConfirmObject,
    ContextBlock,
    DividerBlock,
    HeaderBlock,
    MarkdownTextObject,
    SectionBlock,
)

from ..models import GateOutput, Incident
from ..ports import Ticket

OVERRIDE_CALLBACK = "sg_force_override_reason"
# Slack's documented limits (characters).
SECTION_TEXT_LIMIT = 3000
FIELD_TEXT_LIMIT = 2000
HEADER_TEXT_LIMIT = 150
CONTEXT_TEXT_LIMIT = 3000
BUTTON_VALUE_LIMIT = 2000
ID_LIMIT = 255  # block_id, action_id
PRIVATE_METADATA_LIMIT = 3000
MESSAGE_TEXT_LIMIT = 3000  # chat.postMessage ``text`` is cut at 40,000; a fallback line stays readable


def escape(text: Any) -> str:
    """Slack's mrkdwn escaping: ``&``, ``<`` and ``>``; nothing untrusted can ping or link."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def unescape(text: Any) -> str:
    """Message text as the human typed it (Slack escapes ``&``, ``<`` and ``>`` in ``text``)."""
    return str(text or "").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def clip(text: str, limit: int = SECTION_TEXT_LIMIT) -> str:
    """``text`` cut to ``limit`` characters, an ellipsis marking the cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def elastic_link(kibana_url: str | None, incident_id: str) -> str | None:
    """A Kibana Discover link filtered on the incident id, when ``ELASTIC_KIBANA_URL`` is set."""
    if not kibana_url:
        return None
    query = quote(f"incident_id:\"{incident_id}\"", safe="")
    return f"{kibana_url.rstrip('/')}/app/discover#/?_a=(query:(language:kuery,query:'{query}'))"


def reply_needed(gate: GateOutput, *, interactive: bool, accepting: bool) -> str:
    if not accepting:
        return (":no_entry: *Approvals are disabled*: SLACK_APPROVERS and SLACK_OVERRIDERS are empty, so no "
                "Slack user may decide. Nothing will execute.")
    how = "Use the buttons, or reply" if interactive else "Reply"
    commands = "`APPROVE`, `FORCE_OVERRIDE <reason>`, `HOLD` or `REJECT`"
    rules = "The first word counts (not \"ok\" or \"approved\"), and only configured approvers count."
    if gate.decision == "execute":
        return f"The gate passed this action. {how} `HOLD` in this thread to stop it. {rules}"
    if gate.approval_required == "forbidden":
        return ("*No reply can run this action*: the action catalogue marks it `never`. If it must happen, do "
                f"it by hand, outside the governor. {how} `REJECT` in this thread to close the request.")
    if gate.approval_required == "force_override":
        return (f"*APPROVE will be refused* (critical severity or confidence below the refusal threshold). A "
                f"configured overrider must FORCE_OVERRIDE with a reason, logged permanently. {how} in this "
                f"thread with {commands}. {rules}")
    return f"A configured approver must decide. {how} in this thread with {commands}. {rules}"


def approval_blocks(
    incident: Incident,
    gate: GateOutput,
    *,
    message: str,
    ticket: Ticket | None,
    elastic_url: str | None,
    interactive: bool,
    accepting: bool,
) -> list[dict[str, Any]]:
    """The Block Kit request: facts, reasons, evidence, steps, links, what reply is needed, and
    (with Socket Mode) the four buttons."""
    shift = f"{gate.confidence_initial:.2f} → {gate.confidence_final:.2f} ({gate.confidence_delta:+.2f})"
    fields = [
        f"*Service*\n{escape(incident.service)}",
        f"*Severity*\n{escape(incident.severity)}",
        f"*Decision*\n`{gate.decision}`",
        f"*Confidence*\n{shift}",
        f"*Rules fired*\n{escape(', '.join(gate.rule_ids) or 'none')}",
        f"*Proposed action*\n`{escape(gate.proposed_action or '(none)')}`",
    ]
    reasons = [f"• `{r.rule_id}`: {escape(r.message)}" for r in gate.reasons]
    reasons += [f"• caution: {escape(c)}" for c in gate.cautions]
    evidence = (f"*Evidence*: coverage {gate.evidence_coverage:.0%}, {gate.contradiction_count} contradicting "
                f"document(s), policy conflicts: {escape(', '.join(gate.policy_conflicts) or 'none')}")
    links = [f"Decision `{gate.decision_id}`"]
    if ticket is not None:
        key = clip(escape(ticket.key), 200)
        links.append(f"Ticket <{ticket.url}|{key}>" if ticket.url and len(ticket.url) <= 1000 else f"Ticket {key}")
    if elastic_url:
        links.append(f"<{elastic_url}|Elastic: incident events>")
    blocks: list[Any] = [
        HeaderBlock(block_id="sg_header", text=clip(f"Approval needed: {incident.id}", HEADER_TEXT_LIMIT)),
        SectionBlock(block_id="sg_summary", text=clip(f"*{escape(incident.summary)}*")),
        SectionBlock(block_id="sg_facts", fields=[MarkdownTextObject(text=clip(f, FIELD_TEXT_LIMIT)) for f in fields]),
        SectionBlock(block_id="sg_reasons", text=clip("*Why*\n" + ("\n".join(reasons) or "all checks passed"))),
        SectionBlock(block_id="sg_evidence", text=clip(evidence)),
    ]
    if message.strip():
        blocks.append(SectionBlock(block_id="sg_steps", text=clip(f"*Recommended steps and dry-run preview*\n"
                                                                     f"{escape(message.strip())}")))
    blocks += [
        ContextBlock(block_id="sg_links", elements=[MarkdownTextObject(text=clip(" · ".join(links), CONTEXT_TEXT_LIMIT))]),
        DividerBlock(block_id="sg_divider"),
        SectionBlock(block_id="sg_reply", text=clip(reply_needed(gate, interactive=interactive, accepting=accepting))),
    ]
    if interactive and accepting:
        # A click names its incident by the message it was made on (the value's id is a cross-check)
        # and its decision by the value: a click is never applied to a later decision's wait.
        value = button_value(incident.id, gate.decision_id)
        blocks.append(ActionsBlock(block_id=f"sg_actions:{incident.id}"[:ID_LIMIT], elements=[
            ButtonElement(text="Approve", action_id="sg_approve", value=value, style="primary"),
            ButtonElement(text="Force override", action_id="sg_force_override", value=value, style="danger"),
            ButtonElement(text="Hold", action_id="sg_hold", value=value),
            ButtonElement(text="Reject", action_id="sg_reject", value=value,
                          confirm=ConfirmObject(title="Reject?", text="Closes the incident without executing.",
                                                confirm="Reject", deny="Cancel")),
        ]))
    return [b.to_dict() for b in blocks]


def button_value(incident_id: str, decision_id: str) -> str:
    """``{"incident_id", "decision_id"}`` as JSON within the value limit (the incident id clipped)."""
    overhead = len(json.dumps({"incident_id": "", "decision_id": decision_id}))
    return json.dumps({"incident_id": incident_id[:max(0, BUTTON_VALUE_LIMIT - overhead)],
                       "decision_id": decision_id})


def parse_button_value(value: str) -> tuple[str, str | None]:
    """``(incident id or its clipped start, decision id)``; a value from before decision ids were
    carried (the incident id alone) gives ``None`` for the decision."""
    try:
        data = json.loads(value)
    except ValueError:
        return value, None
    if not isinstance(data, dict):
        return value, None
    decision = data.get("decision_id")
    return str(data.get("incident_id", "")), str(decision) if decision else None


def updated_blocks(blocks: list[dict[str, Any]], status: str, *, final: bool, revision: int) -> list[dict[str, Any]]:
    """The posted blocks with a status line; buttons removed once decided (new ``block_id`` for
    the buttons on every update, as Slack advises)."""
    out: list[dict[str, Any]] = []
    for block in blocks:
        block_id = str(block.get("block_id", ""))
        if block_id.startswith("sg_status"):
            continue
        if block_id.startswith("sg_actions"):
            if final:
                continue
            block = {**block, "block_id": f"{block_id.split('#')[0][:ID_LIMIT - 12]}#{revision}"}
        out.append(block)
    out.append({"type": "context", "block_id": f"sg_status#{revision}",
                "elements": [{"type": "mrkdwn", "text": clip(f"*Status:* {escape(status)}", CONTEXT_TEXT_LIMIT)}]})
    return out


def override_modal(incident_id: str, metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The reason form. ``metadata`` names the request (channel, ts); the incident id is left out
    of it when it would not fit Slack's ``private_metadata`` limit (the request names it too)."""
    private = json.dumps(dict(metadata))
    if len(private) > PRIVATE_METADATA_LIMIT:
        private = json.dumps({k: v for k, v in metadata.items() if k != "incident_id"})
    return {
        "type": "modal",
        "callback_id": OVERRIDE_CALLBACK,
        "private_metadata": private,
        "title": {"type": "plain_text", "text": "Force override"},
        "submit": {"type": "plain_text", "text": "Override"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": clip(
                f"FORCE_OVERRIDE bypasses the gate for *{escape(incident_id)}*. Only configured overriders count, "
                "and the override and its reason are logged permanently.")}},
            {"type": "input", "block_id": "reason", "label": {"type": "plain_text", "text": "Reason"},
             "element": {"type": "plain_text_input", "action_id": "reason", "multiline": True, "min_length": 3}},
        ],
    }
