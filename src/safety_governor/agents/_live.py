"""What the live agent backends (Kibana Agent Builder, OpenAI-compatible) share: one HTTP POST
with timeouts and bounded retries, and the two follow-up questions asked of an agent (the refusal
explanation, the learned runbook) with their prompts and output hygiene.

A POST that may have been processed is never sent again. ``post_json(..., idempotent=False)``
retries only what cannot have been processed: a refused connection (nothing was sent), a 429, and
a 502/503/504 that did not come from the application (a gateway's answer, not its JSON error body).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import requests
from urllib3.exceptions import NewConnectionError

from ..errors import AgentBackendError
from ..models import GateOutput, Incident
from ..prompts import render
from ..redaction import redact_url
from ..retry_after import parse_retry_after

if TYPE_CHECKING:
    from ..verification import VerificationResult

MAX_EXPLANATION_CHARS = 1500
MAX_RUNBOOK_CHARS = 4000


@dataclass(frozen=True)
class HttpPolicy:
    """Timeouts (seconds) and the retry budget of one backend."""

    connect_timeout: float = 5.0
    read_timeout: float = 300.0
    max_retries: int = 3
    backoff: float = 1.0
    backoff_cap: float = 30.0


def short(text: Any, limit: int = 300) -> str:
    value = " ".join(str(text).split())
    return value if len(value) <= limit else value[: limit - 1] + "…"


def refused_connection(exc: BaseException) -> bool:
    """Whether a ``requests.ConnectionError`` happened before anything was sent (the TCP
    connection was never opened), as opposed to a connection lost mid-request."""
    seen: set[int] = set()
    todo: list[Any] = [exc]
    while todo:
        item = todo.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, (NewConnectionError, ConnectionRefusedError)):
            return True
        if isinstance(item, BaseException):
            todo.extend([getattr(item, "reason", None), item.__cause__, item.__context__, *item.args])
    return False


def from_application(resp: requests.Response) -> bool:
    """Whether an error response carries a JSON object body, i.e. came from the service itself
    rather than from a proxy or load balancer in front of it."""
    return isinstance(json_body(resp), Mapping)


def post_json(
    session: requests.Session,
    url: str,
    body: Mapping[str, Any],
    *,
    headers: Mapping[str, str],
    policy: HttpPolicy,
    service: str,
    sleep: Callable[[float], None] = time.sleep,
    idempotent: bool = True,
) -> tuple[requests.Response, int]:
    """POST ``body`` as JSON with bounded exponential backoff (never after a timeout or a lost
    connection: the server may still be working on the request).

    An idempotent POST is retried on 429 and 5xx. A non-idempotent one (``idempotent=False``, e.g.
    a conversation round that runs tools) only on a refused connection, a 429, or a 502/503/504
    without the service's JSON body: a 500, or any answer from the service itself, may follow work
    already done. Returns the last response and the number of attempts; non-2xx statuses are the
    caller's to explain. Raises ``AgentBackendError`` when no response arrives at all.
    """
    where = redact_url(url)
    attempts = 0
    while True:
        attempts += 1
        try:
            resp = session.post(url, json=dict(body), headers=dict(headers),
                                timeout=(policy.connect_timeout, policy.read_timeout))
        except requests.ConnectTimeout as exc:
            raise AgentBackendError(
                f"{service} at {where} did not accept a connection within {policy.connect_timeout:g}s"
            ) from exc
        except requests.Timeout as exc:
            raise AgentBackendError(
                f"{service} at {where} did not answer within {policy.read_timeout:g}s (read timeout)"
            ) from exc
        except requests.ConnectionError as exc:
            if refused_connection(exc) and attempts <= policy.max_retries:
                sleep(min(policy.backoff_cap, policy.backoff * 2 ** (attempts - 1)))
                continue
            raise AgentBackendError(f"cannot reach {service} at {where}") from exc
        except requests.RequestException as exc:
            raise AgentBackendError(f"request to {service} at {where} failed ({type(exc).__name__})") from exc
        if idempotent:
            retryable = resp.status_code == 429 or resp.status_code >= 500
        else:
            retryable = resp.status_code == 429 or (resp.status_code in (502, 503, 504) and not from_application(resp))
        if not retryable or attempts > policy.max_retries:
            return resp, attempts
        delay = parse_retry_after(resp.headers.get("Retry-After"), cap=policy.backoff_cap)
        if delay is None:
            delay = min(policy.backoff_cap, policy.backoff * 2 ** (attempts - 1))
        sleep(delay)


def json_body(resp: requests.Response) -> Any:
    """The parsed body, or ``None`` when it is not JSON."""
    try:
        return resp.json()
    except ValueError:
        return None


def clean_text(text: Any, limit: int) -> str | None:
    """Trimmed prose from an agent (code fences dropped, length capped), or ``None`` if empty."""
    if not isinstance(text, str):
        return None
    lines = [line for line in text.strip().splitlines() if not line.strip().startswith("```")]
    value = "\n".join(lines).strip()
    if not value:
        return None
    return value if len(value) <= limit else value[: limit - 1].rstrip() + "…"


def refusal_prompt(incident: Incident, gate: GateOutput, *, threshold: float) -> str:
    if incident.severity == "critical":
        why = "the incident is critical, so only FORCE_OVERRIDE may proceed"
    else:
        why = f"the final confidence {gate.confidence_final:.2f} is below the refusal threshold {threshold:.1f}"
    reasons = "; ".join(f"{r.rule_id}: {r.message}" for r in gate.reasons) or "none"
    return render(
        "explain_refusal", incident_id=incident.id, service=incident.service, severity=incident.severity,
        proposed_action=gate.proposed_action or "(none)", why=why, reasons=reasons,
    )


def describe_verification(verification: VerificationResult | None) -> str:
    """One line on how the resolution was verified, for the runbook prompt."""
    if verification is None:
        return ""
    parts = []
    before, after = verification.error_rate_before, verification.error_rate_after
    if before is not None and after is not None:
        parts.append(f"error rate {before:.1%} before, {after:.1%} after (threshold {verification.threshold:.1%})")
    if verification.reason:
        parts.append(verification.reason)
    return "; ".join(parts)


def runbook_prompt(incident: Incident, gate: GateOutput, *, outcome: str) -> str:
    return render(
        "write_runbook", incident_id=incident.id, service=incident.service, severity=incident.severity,
        summary=incident.summary, symptoms=incident.symptoms or "none reported",
        proposed_action=gate.proposed_action or "(none)",
        outcome=outcome or "the action was executed and the service recovered",
    )
