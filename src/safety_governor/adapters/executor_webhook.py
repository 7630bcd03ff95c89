"""The webhook executor: POSTs a catalogued, authorised action to ``EXECUTOR_WEBHOOK_URL``.

Wire format (one JSON object, UTF-8, keys sorted, no spaces)::

    POST <EXECUTOR_WEBHOOK_URL>
    Content-Type: application/json
    X-Governor-Signature: sha256=<hex HMAC-SHA256 of the raw body, keyed with EXECUTOR_WEBHOOK_SECRET>
    Idempotency-Key: gov-<hex>    (stable per decision + action: a retried delivery carries the same key)
    X-Governor-Attempt: <n>       (1 for the first delivery; not signed, informational)

    {"action", "parameters", "service", "incident_id", "severity", "decision", "decision_id",
     "authorised_by", "override": bool, "risk", "reversible", "rollback_action",
     "idempotency_key", "requested_at"}

The body is built once and the same bytes are sent on every attempt, so the signature and the
key stay the same. Retries happen only where the receiver can deduplicate by that key, and only
for answers that say "try again": connection errors, timeouts, HTTP 429 and 5xx, with
exponential backoff (``Retry-After`` honoured, capped). Any other answer is final. ``requests``
is imported lazily and its exceptions become ``ExecutionRefused`` here, at the edge; neither
the secret nor the URL's query string appears in a message.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr

from ..catalogue import ActionCatalogue, PreparedAction, prepare_action
from ..errors import ConfigError, ExecutionRefused, StoreError
from ..models import ExecutionRecord, GateOutput, Incident
from ..ports import Store
from ..redaction import redact_url
from ..retry_after import parse_retry_after
from .executor_dryrun import execution_document

SIGNATURE_HEADER = "X-Governor-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 30.0


def sign(body: bytes, secret: str) -> str:
    """The signature header value: ``sha256=<hex HMAC-SHA256(secret, body)>``."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify_signature(body: bytes, header: str | None, secret: str) -> bool:
    """Constant-time check of a signature header (for receivers and tests)."""
    return bool(header) and hmac.compare_digest(sign(body, secret), str(header))


def idempotency_key(decision_id: str, action: str) -> str:
    """Stable per decision and action: the same decision never runs the same action twice."""
    digest = hashlib.sha256(f"{decision_id}\n{action.strip().lower()}".encode()).hexdigest()
    return f"gov-{digest[:32]}"


class WebhookExecutor:
    """Args:
    store: where ``action_executions`` documents are recorded.
    catalogue: the action catalogue (actions outside it are refused).
    url: the receiver (``http`` or ``https``).
    secret: the HMAC key (``EXECUTOR_WEBHOOK_SECRET``).
    timeout: seconds to wait for the answer (read timeout).
    connect_timeout: seconds to wait for the connection.
    retries: extra attempts after the first, for retryable failures only.
    backoff: first backoff in seconds; doubles per attempt.
    sleep: injected for tests.
    """

    name = "webhook"

    def __init__(
        self,
        store: Store,
        catalogue: ActionCatalogue,
        *,
        url: str,
        secret: SecretStr | str,
        timeout: float = 5.0,
        connect_timeout: float = 3.0,
        retries: int = 2,
        backoff: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not url or urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
            raise ConfigError("EXECUTOR_WEBHOOK_URL must be an http(s) URL when EXECUTOR=webhook")
        raw_secret = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
        if not raw_secret:
            raise ConfigError("EXECUTOR_WEBHOOK_SECRET is required when EXECUTOR=webhook")
        self.store = store
        self.catalogue = catalogue
        self.url = url
        self._secret = raw_secret
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.retries = max(0, int(retries))
        self.backoff = backoff
        self.sleep = sleep
        self._session: Any = None

    def __repr__(self) -> str:
        return f"WebhookExecutor(url={redact_url(self.url)!r})"

    # --- the port ------------------------------------------------------------------------------

    def preview(self, incident: Incident, gate: GateOutput, parameters: Mapping[str, Any] | None = None) -> str:
        try:
            prepared = prepare_action(self.catalogue, incident, gate, parameters=parameters)
        except ExecutionRefused as exc:
            return f"[webhook] would refuse: {exc}"
        return self._text(incident, gate, prepared)

    def execute(
        self,
        incident: Incident,
        gate: GateOutput,
        *,
        authorised_by: str,
        parameters: Mapping[str, Any] | None = None,
    ) -> ExecutionRecord:
        prepared = prepare_action(self.catalogue, incident, gate, parameters=parameters, authorised_by=authorised_by)
        key = idempotency_key(gate.decision_id, prepared.action.id)
        body = self.payload(incident, gate, prepared, authorised_by=authorised_by, key=key)
        record = ExecutionRecord(
            execution_id=f"exe-{uuid.uuid4().hex[:12]}", incident_id=incident.id, decision_id=gate.decision_id,
            action=prepared.action.id, mode=self.name, status="succeeded",
            preview=self._text(incident, gate, prepared), authorised_by=authorised_by, at=datetime.now(UTC),
        )
        try:
            status, attempts, answer = self._deliver(body, key)
        except ExecutionRefused as exc:
            failed = record.model_copy(update={"status": "failed"})
            self._record(execution_document(failed, prepared, idempotency_key=key, error=str(exc)), incident)
            raise
        self._record(execution_document(record, prepared, idempotency_key=key, http_status=status,
                                        attempts=attempts, receiver=answer), incident)
        return record

    # --- wire ----------------------------------------------------------------------------------

    def payload(
        self, incident: Incident, gate: GateOutput, prepared: PreparedAction, *, authorised_by: str, key: str
    ) -> bytes:
        doc = {
            "action": prepared.action.id,
            "parameters": prepared.parameters,
            "service": prepared.service,
            "incident_id": incident.id,
            "severity": incident.severity,
            "decision": gate.decision,
            "decision_id": gate.decision_id,
            "authorised_by": authorised_by,
            "override": gate.decision != "execute",
            "risk": prepared.action.risk,
            "reversible": prepared.action.reversible,
            "rollback_action": prepared.action.rollback_action,
            "idempotency_key": key,
            "requested_at": datetime.now(UTC).isoformat(),
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")

    def _text(self, incident: Incident, gate: GateOutput, prepared: PreparedAction) -> str:
        return (f"[webhook] would POST {prepared.describe()} to {redact_url(self.url)} for {incident.id} "
                f"(decision {gate.decision_id}, signed, idempotency key "
                f"{idempotency_key(gate.decision_id, prepared.action.id)})")

    def _deliver(self, body: bytes, key: str) -> tuple[int, int, dict[str, Any]]:
        """POST until a final answer; returns (HTTP status, attempts, receiver JSON or {})."""
        import requests  # lazily: only the webhook executor needs it

        from .. import __version__

        if self._session is None:
            self._session = requests.Session()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(body, self._secret),
            IDEMPOTENCY_HEADER: key,
            "User-Agent": f"safety-governor/{__version__}",
        }
        target = redact_url(self.url)
        last = ""
        for attempt in range(1, self.retries + 2):
            wait: float | None = None
            try:
                response = self._session.post(
                    self.url, data=body, headers={**headers, "X-Governor-Attempt": str(attempt)},
                    timeout=(self.connect_timeout, self.timeout), allow_redirects=False,
                )
            except requests.Timeout:
                last = f"no answer within {self.timeout:g}s"
            except requests.ConnectionError:
                last = "cannot connect"
            except requests.RequestException as exc:
                raise ExecutionRefused(f"webhook {target}: request failed ({type(exc).__name__})") from exc
            else:
                status = response.status_code
                if 200 <= status < 300:
                    return status, attempt, _json_or_empty(response)
                if status not in RETRYABLE_STATUS:
                    raise ExecutionRefused(
                        f"webhook {target} refused the action: HTTP {status}{_reason(response)}"
                    )
                last = f"HTTP {status}"
                wait = parse_retry_after(response.headers.get("Retry-After"), cap=MAX_RETRY_AFTER)
            if attempt <= self.retries:
                self.sleep(wait if wait is not None else self.backoff * 2 ** (attempt - 1))
        raise ExecutionRefused(
            f"webhook {target}: not confirmed after {self.retries + 1} attempt(s) (last: {last}); "
            f"the outcome is unknown, and a retry with idempotency key {key} is safe"
        )

    def _record(self, doc: dict[str, Any], incident: Incident) -> None:
        # The receiver has answered, so the action's fate is sealed whatever the store says; the
        # pipeline's audit trail records the returned (or refused) execution either way.
        try:
            self.store.append_event("action_executions", doc)
        except StoreError:
            pass

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None


def _json_or_empty(response: Any) -> dict[str, Any]:
    try:
        value = response.json()
    except ValueError:
        return {}
    if not isinstance(value, dict):
        return {}
    # Keep the receiver's answer small in the store.
    return {k: v for k, v in list(value.items())[:10] if isinstance(v, (str, int, float, bool)) or v is None}


def _reason(response: Any) -> str:
    text = (getattr(response, "text", "") or "").strip().splitlines()
    return f" ({text[0][:120]})" if text else ""
