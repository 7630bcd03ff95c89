"""Grounding: Python re-derives the stress phase's numbers from the store (DESIGN principle 1).

Cited documents must exist, be about the incident's service (or ``*``) and the proposed action,
and carry the stance claimed; Python also searches per claim and by service + action itself, so
an agent cannot hide evidence by not citing it, and looks policy conflicts up on its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .config import GatePolicy
from .models import (
    ClaimEvidence,
    ClaimReport,
    FrameworkScores,
    Incident,
    LogSummary,
    PlanOutput,
    StressOutput,
    StressReport,
    normalise_action,
)
from .ports import Store


class Grounder:
    """Re-derives the stress phase's numbers from the store (DESIGN principle 1)."""

    def __init__(self, store: Store, policy: GatePolicy) -> None:
        self.store = store
        self.policy = policy

    def ground(
        self,
        incident: Incident,
        plan: PlanOutput,
        report: StressReport | None,
        *,
        scores: FrameworkScores | None,
        live_logs: LogSummary | None,
    ) -> StressOutput:
        services = [incident.service, "*"]
        allowed = {incident.service.strip().lower(), "*"}
        action = normalise_action(plan.proposed_action)
        reports = report.claim_results if report else []
        cited = {i for r in reports for i in (*r.supporting_doc_ids, *r.contradicting_doc_ids)}
        docs = self.store.get_many("evidence", cited)

        def about_action(doc: Mapping[str, Any]) -> bool:
            doc_action = doc.get("action")
            return not doc_action or normalise_action(str(doc_action)) == action

        def check(doc_id: str, stance: str) -> str | None:
            """None if the citation is grounded, else why not."""
            doc = docs.get(doc_id)
            if doc is None:
                return f"{doc_id} (not in the store)"
            if str(doc.get("service", "")).strip().lower() not in allowed:
                return f"{doc_id} (about service {doc.get('service')})"
            if doc.get("stance") != stance:
                return f"{doc_id} (stance is {doc.get('stance')}, not {stance})"
            if not about_action(doc):
                return f"{doc_id} (about action {doc.get('action')})"
            return None

        claim_evidence: list[ClaimEvidence] = []
        ungrounded: list[str] = []
        supporting: dict[str, None] = {}
        contradicting: dict[str, None] = {}
        for position, claim in enumerate(plan.key_claims):
            claim_report = _match_report(claim, position, reports)
            support: dict[str, None] = {}
            contra: dict[str, None] = {}
            bad: list[str] = []
            for doc_id in claim_report.supporting_doc_ids if claim_report else []:
                (bad.append(why) if (why := check(doc_id, "support")) else support.setdefault(doc_id))
            for doc_id in claim_report.contradicting_doc_ids if claim_report else []:
                (bad.append(why) if (why := check(doc_id, "contradict")) else contra.setdefault(doc_id))
            # Python's own search per claim: an agent cannot hide evidence by not citing it.
            for hit in self.store.search(
                "evidence", claim, filters={"service": services}, top_k=self.policy.evidence_top_k
            ):
                if not about_action(hit.source):
                    continue
                if hit.source.get("stance") == "support":
                    support.setdefault(hit.id)
                elif hit.source.get("stance") == "contradict":
                    contra.setdefault(hit.id)
            claim_evidence.append(
                ClaimEvidence(claim=claim, support_docs=list(support), contradiction_docs=list(contra),
                              ungrounded_citations=bad)
            )
            ungrounded.extend(bad)
            supporting.update(support)
            contradicting.update(contra)
        # Python searches by service + action too, whatever the claims say.
        for doc in self.store.find("evidence", {"service": services, "action": action}, limit=200):
            if doc.get("stance") == "contradict":
                contradicting.setdefault(str(doc["id"]))
            elif doc.get("stance") == "support":
                supporting.setdefault(str(doc["id"]))

        confirmed = [str(p["id"]) for p in self.store.policy_conflicts(incident.service, action, incident.severity)]
        reported = [p.strip() for p in (report.policy_conflicts if report else []) if p and p.strip()]
        unconfirmed = [p for p in dict.fromkeys(reported) if p not in confirmed]
        claims_with_docs = sum(1 for c in claim_evidence if c.support_docs or c.contradiction_docs)
        coverage = round(claims_with_docs / len(claim_evidence), 4) if claim_evidence else 0.0
        return StressOutput(
            claim_evidence=claim_evidence,
            supporting_doc_ids=sorted(supporting),
            contradicting_doc_ids=sorted(contradicting),
            contradiction_count=len(contradicting),
            evidence_coverage=coverage,
            policy_conflicts=confirmed,
            unconfirmed_policy_conflicts=unconfirmed,
            ungrounded_citations=list(dict.fromkeys(ungrounded)),
            fabricated_authority_rejected=bool(report and report.fabricated_authority_rejected),
            confidence_post_stress=report.confidence_post_stress if report else None,
            position_after_stress=report.position_after_stress if report else "",
            live_logs=live_logs,
            framework_scores=scores,
            agent_report_valid=report is not None,
        )


def _match_report(claim: str, position: int, reports: list[ClaimReport]) -> ClaimReport | None:
    """The agent's report for a claim: same text first, else the same position."""
    wanted = claim.strip().lower()
    for r in reports:
        if r.claim.strip().lower() == wanted:
            return r
    return reports[position] if position < len(reports) else None
