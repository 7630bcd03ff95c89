"""The offline agent: deterministic, no LLM, but it works through the same tools an LLM would.

Plan: the best runbook of the incident's service (BM25 over summary and symptoms), its sentences
as key claims, a confidence from how clearly that runbook beat the runner-up.
Stress: evidence per claim, a policy check, live logs; it reports what it found, and the
pipeline grounds that report like any other agent's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from ..models import Incident
from ..ports import AgentReply, ToolPort
from ..tools import ToolTrace

# Phrases that try to speak with authority from inside untrusted text (incident reports, docs).
_AUTHORITY_PATTERNS = re.compile(
    r"(ignore (all |the )?(previous|prior|above) instructions|you are now|as the (cto|ceo|vp|admin)|"
    r"override the (gate|governor|policy)|approved by (the )?(cto|ceo|management)|skip (the )?(gate|approval)|"
    r"system prompt|do not (check|verify))",
    re.IGNORECASE,
)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def claims_from_runbook(body: str, limit: int = 3) -> list[str]:
    sentences = [s.strip() for s in _SENTENCE.split(body or "") if len(s.strip()) > 8]
    return sentences[:limit]


def retrieval_confidence(scores: list[float]) -> float:
    """7.0 for a lone hit; otherwise 4-9 by the top hit's share of the top two scores."""
    if not scores:
        return 0.0
    if len(scores) == 1 or scores[1] <= 0:
        return 7.0
    share = scores[0] / (scores[0] + scores[1]) if scores[0] + scores[1] > 0 else 0.5
    return round(min(9.0, max(4.0, 4 + 10 * (share - 0.5) + 2.5)), 1)


class _TracingTools:
    """Records the calls the agent makes, for its reply (the port audits them itself)."""

    def __init__(self, tools: ToolPort) -> None:
        self.tools = tools
        self.trace = ToolTrace(tools.transport)

    def call(self, name: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
        with self.trace.record(name, arguments) as outcome:
            outcome["result"] = self.tools.call(name, arguments)
            return outcome["result"]


class OfflineAgent:
    name = "offline"

    def __init__(self, model: str = "gpt-oss-120b") -> None:
        # The model whose reliability profile scores this agent's outputs.
        self.model = model

    def converse(
        self, phase: str, prompt: str, *, incident: Incident, tools: ToolPort, context: Mapping[str, Any]
    ) -> AgentReply:
        traced = _TracingTools(tools)
        if phase == "plan":
            text = self._plan(incident, traced)
        elif phase == "stress":
            text = self._stress(incident, traced, context)
        else:
            text = f"The offline agent has no '{phase}' phase."
        return AgentReply(text=text, tool_calls=list(traced.trace.calls), model=self.model)

    def _plan(self, incident: Incident, tools: _TracingTools) -> str:
        query = f"{incident.summary} {incident.symptoms} {incident.pattern or ''}"
        hits = tools.call("search_runbooks", {"query": query, "service": incident.service, "top_k": 3})["hits"]
        # A runbook learned from this very incident is not independent support for its plan.
        hits = [h for h in hits if str(h.get("incident_id") or "").lower() != incident.id.lower()]
        if not hits:
            return f"No runbook matched service {incident.service}; I cannot propose a remediation."
        best = hits[0]
        claims = claims_from_runbook(best["body"]) or [best["title"]]
        plan = {
            "proposed_action": best["recommended_action"],
            "rationale": f"Runbook {best['id']} ('{best['title']}') is the best match for "
                         f"{incident.service}: {incident.summary}",
            "key_claims": claims,
            "confidence_initial": retrieval_confidence([h["score"] for h in hits]),
            "retrieved_context_ids": [h["id"] for h in hits],
        }
        return json.dumps(plan)

    def _stress(self, incident: Incident, tools: _TracingTools, context: Mapping[str, Any]) -> str:
        plan = context.get("plan") or {}
        action = str(plan.get("proposed_action", ""))
        claim_results = []
        contradicting: set[str] = set()
        for claim in plan.get("key_claims", []):
            hits = tools.call("search_evidence", {"query": claim, "service": incident.service, "top_k": 3})["hits"]
            # Only evidence about this action (or about no action in particular) bears on the plan.
            relevant = [h for h in hits if not h.get("action") or h["action"].lower() == action.lower()]
            support = [h["id"] for h in relevant if h["stance"] == "support"]
            contra = [h["id"] for h in relevant if h["stance"] == "contradict"]
            contradicting.update(contra)
            claim_results.append({"claim": claim, "supporting_doc_ids": support, "contradicting_doc_ids": contra})
        check = tools.call(
            "check_policy_conflicts", {"service": incident.service, "action": action, "severity": incident.severity}
        )
        conflicts = [c["id"] for c in check["conflicts"]]
        tools.call("query_live_logs", {"service": incident.service, "window_minutes": 15})
        confidence = float(plan.get("confidence_initial", 5.0)) - len(contradicting) - 2.0 * len(conflicts)
        confidence = round(max(1.0, min(10.0, confidence)), 1)
        if conflicts:
            position = f"abandon: policy {', '.join(conflicts)} blocks {action}"
        elif contradicting:
            position = f"revise: {len(contradicting)} document(s) contradict {action}"
        else:
            position = "maintain"
        report = {
            "claim_results": claim_results,
            "policy_conflicts": conflicts,
            "fabricated_authority_rejected": bool(
                _AUTHORITY_PATTERNS.search(f"{incident.summary} {incident.symptoms}")
            ),
            "confidence_post_stress": confidence,
            "position_after_stress": position,
        }
        return json.dumps(report)
