"""Jira tickets: one issue per incident, commented as it moves on, moved to done at the end.

``JiraTickets`` implements the ``TicketPort`` with the ``jira`` library (REST API v2, plain-text
bodies; Jira Cloud auth is the email plus an API token).

* **One issue per incident, even across crashes.** ``create`` looks for the link in the store
  first (``ticket_linked``), then searches Jira for an issue carrying the incident's label
  (``sg-incident-<id>``) and summary marker (``[<id>] …``) through the current search endpoint
  (``/rest/api/2/search/jql`` on Cloud), and only then creates one. The client runs with
  ``max_retries=0``: ``jira``'s resilient session would otherwise retry a POST after a dropped
  connection and could create the issue twice.
* **Search after write.** ``/search/jql`` is eventually consistent: Atlassian's "Search and
  reconcile" guide says a new issue may take seconds to minutes to show up unless its id is passed
  in ``reconcileIssues`` (at most 50). So the search passes the ids of the issues this process
  created (``enhanced_search_issues(..., reconcileIssues=...)``), which covers a create whose link
  could not be stored; and a ``ticket_creating`` record is written before every create, so a
  restart that finds it without a link knows an issue may exist that the search cannot see yet:
  it keeps retrying the search (the fallback holds a local ticket meanwhile) until
  ``search_settle_seconds`` have passed since that create, and only then creates one.
* **Done, whatever the workflow calls it.** ``resolve`` reads the issue's transitions and takes
  one whose target status is in the ``done`` status category (a "Ship it" to "Released" counts),
  filling ``resolution`` when the transition screen has it. An issue already done is left alone.
* **Jira down.** ``create`` raises ``TicketError`` (``FallbackTickets`` then opens a local
  ticket and creates the Jira issue later). ``comment`` and ``resolve`` never raise for an
  outage: they are queued in the store (the outbox in ``approval_state``) and retried, in order
  per issue, with backoff; the failure is in ``error``, ``check()`` and an ``integration_error``
  event.

Error texts never include the request: ``JIRAError``'s own text prints the request headers,
which carry the credentials.
"""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..approval_state import ApprovalState, OutboxOp
from ..errors import GovernorError, TicketError
from ..models import Incident
from ..ports import Readiness, Ticket

try:  # imported here so that a missing optional client fails at use, with our error
    import requests
    from jira import JIRA, JIRAError
except ImportError:  # pragma: no cover - jira is a pinned runtime dependency
    JIRA = None  # type: ignore[assignment,misc]
    JIRAError = Exception  # type: ignore[assignment,misc]

LABEL = "safety-governor"
DONE_CATEGORY = "done"
PREFERRED_RESOLUTIONS = ("done", "fixed", "resolved")
NOT_PROCESSED = (502, 503, 504)  # gateway answers: the request never reached Jira's application


def incident_label(incident_id: str) -> str:
    """The label that finds the incident's issue again (labels cannot hold spaces)."""
    return "sg-incident-" + re.sub(r"[^a-z0-9_.-]+", "-", incident_id.strip().lower()).strip("-")


def summary_for(incident: Incident) -> str:
    return f"[{incident.id}] {incident.service}: {incident.summary}"[:250]


def description_for(incident: Incident) -> str:
    lines = [
        f"Incident {incident.id} opened by Safety Governor.",
        f"Service: {incident.service}",
        f"Severity: {incident.severity}",
        f"Summary: {incident.summary}",
    ]
    if incident.symptoms:
        lines.append(f"Symptoms: {incident.symptoms}")
    if incident.detected_at:
        lines.append(f"Detected at: {incident.detected_at.isoformat()}")
    lines.append("The gate decision, approvals and execution are commented here as they happen.")
    return "\n".join(lines)


class _Failure(GovernorError):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # Jira's HTTP status, when it answered


class _Retry(_Failure):
    pass


class _Permanent(_Failure):
    pass


class JiraTickets:
    """The ``TicketPort`` over Jira.

    Args:
        url: the site, e.g. ``https://example.atlassian.net``.
        email / api_token: Jira Cloud basic auth.
        project_key: where issues are created (``OPS``).
        state: the bookkeeping over the governor's store (links and the outbox).
        issue_type: the issue type name (``Task``).
        timeout: seconds per HTTP call.
        retry_seconds: the first wait before retrying queued calls (doubles, up to 30 minutes).
        clock: monotonic seconds (tests inject one).
        search_settle_seconds: how long after an unfinished create the search is trusted to show it.
        now: the wall clock (the create record outlives the process).
    """

    name = "jira"

    def __init__(
        self,
        *,
        url: str,
        email: str,
        api_token: str,
        project_key: str,
        state: ApprovalState,
        issue_type: str = "Task",
        timeout: float = 10.0,
        retry_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        search_settle_seconds: float = 120.0,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.url = url.rstrip("/")
        self._auth = (email, api_token)
        self.project_key = project_key
        self.state = state
        self.issue_type = issue_type
        self.timeout = timeout
        self.retry_seconds = retry_seconds
        self.clock = clock
        self.search_settle_seconds = search_settle_seconds
        self.now = now
        self._created: dict[str, str] = {}  # incident id -> id of the issue this process created
        self._not_created: set[str] = set()  # creates Jira answered with a refusal
        self.error: str | None = None  # the last failure, for the TUI; None once calls succeed again
        self._client: Any = None
        self._lock = threading.RLock()
        self._failures = 0
        self._next_flush = 0.0

    @classmethod
    def from_settings(cls, settings: Any, state: ApprovalState, **overrides: Any) -> JiraTickets:
        missing = missing_settings(settings)
        if missing:
            raise TicketError(f"Jira tickets need {', '.join(missing)}")
        kwargs: dict[str, Any] = dict(
            url=settings.jira_url, email=settings.jira_email, api_token=settings.jira_api_token.get_secret_value(),
            project_key=settings.jira_project_key, state=state, issue_type=settings.jira_issue_type,
            timeout=settings.jira_timeout, retry_seconds=settings.jira_retry_seconds,
        )
        kwargs.update(overrides)
        return cls(**kwargs)

    def browse_url(self, key: str) -> str:
        return f"{self.url}/browse/{key}"

    # --- the port ---------------------------------------------------------------------------

    def create(self, incident: Incident) -> Ticket:
        """The incident's issue: the linked one, else one found by label, else a new one.
        Raises ``TicketError`` when Jira cannot be reached or refuses."""
        try:
            return self._ensure_issue(incident)
        except _Failure as exc:
            self._failed("create", str(exc), incident.id)
            raise TicketError(f"Jira: cannot open a ticket for {incident.id}: {exc}") from exc

    def _ensure_issue(self, incident: Incident) -> Ticket:
        with self._lock:
            linked = self.state.ticket(incident.id, self.name)
            if linked is None:
                key = self._find(incident) or self._create(incident)
                self.state.link_ticket(incident.id, system=self.name, key=key, url=self.browse_url(key))
                self._succeeded()
                linked = {"key": key, "url": self.browse_url(key)}
            return Ticket(key=str(linked["key"]), incident_id=incident.id, url=linked.get("url"))

    def comment(self, key: str, text: str) -> None:
        """Comment now, or queue the comment and retry it later when Jira is down."""
        self.state.queue(self.name, "comment", self._incident_of(key), {"key": key, "text": text})
        self.flush()

    def resolve(self, key: str, resolution: str) -> None:
        """Move the issue to a done-category status (once), with ``resolution`` as a comment."""
        self.state.queue(self.name, "resolve", self._incident_of(key), {"key": key, "resolution": resolution},
                         dedupe=f"resolve:{key}")
        self.flush()

    def check(self) -> Readiness:
        try:
            me = self._call(lambda c: c.myself())
        except _Failure as exc:
            return Readiness(ok=False, reason=f"Jira {self.url}: {exc}")
        queued = len(self.state.pending_ops(self.name))
        note = f"; {queued} queued call(s) will be retried" if queued else ""
        who = (me.get("displayName") if isinstance(me, dict) else None) or "authenticated"
        return Readiness(ok=True, reason=f"Jira project {self.project_key} at {self.url} ({who}){note}")

    # --- the outbox -------------------------------------------------------------------------

    def flush(self, *, force: bool = False) -> int:
        """Send queued calls in order (a failed call holds back the later ones of its issue);
        returns how many are still queued. Respects the backoff unless ``force``."""
        with self._lock:
            if not force and self.clock() < self._next_flush:
                return len(self.state.pending_ops(self.name))
            held: set[str] = set()
            failed: str | None = None
            for op in self.state.pending_ops(self.name):
                issue = str(op.payload.get("key") or op.incident_id)
                if issue in held:
                    continue
                try:
                    result = self._run(op)
                except _Retry as exc:
                    held.add(issue)
                    failed = str(exc)
                    self.state.record_error(self.name, op.op, failed, incident_id=op.incident_id,
                                            retry_in=self._backoff())
                    continue
                except _Permanent as exc:
                    self.state.record_error(self.name, op.op, f"{exc} (dropped)", incident_id=op.incident_id)
                    result = {"dropped": str(exc)}
                self.state.op_done(op, result)
            if failed is None:
                self._succeeded()
            else:
                self.error = failed
            return len(self.state.pending_ops(self.name))

    def _run(self, op: OutboxOp) -> dict[str, Any]:
        p = op.payload
        if op.op == "comment":
            self._call(lambda c: c.add_comment(p["key"], p["text"]))
            return {"key": p["key"]}
        if op.op == "resolve":
            return self._transition_to_done(str(p["key"]), str(p["resolution"]))
        if op.op == "create_late":
            incident = Incident.model_validate(p["incident"])
            ticket = self._ensure_issue(incident)
            if p.get("local_key"):
                self._call(lambda c: c.add_comment(ticket.key, (
                    f"Opened late: Jira was unreachable when {incident.id} was detected; local ticket "
                    f"{p['local_key']} holds the earlier history.")))
            return {"key": ticket.key}
        if op.op == "resolve_late":
            linked = self.state.ticket(str(op.incident_id), self.name)
            if linked is None:
                raise _Retry(f"the Jira issue of {op.incident_id} is not created yet")
            return self._transition_to_done(str(linked["key"]), str(p["resolution"]))
        raise _Permanent(f"unknown queued call {op.op!r}")

    def queue_late_create(self, incident: Incident, local_key: str | None) -> None:
        """Create the incident's issue once Jira is back (``FallbackTickets`` after an outage)."""
        self.state.queue(self.name, "create_late", incident.id,
                         {"incident": incident.model_dump(mode="json"), "local_key": local_key},
                         dedupe=f"create:{incident.id}")

    # --- Jira calls -------------------------------------------------------------------------

    def _connect(self) -> Any:
        if self._client is None:
            if JIRA is None:  # pragma: no cover
                raise _Permanent("the jira package is not installed")
            # get_server_info=True tells the client it talks to Cloud, so search uses /search/jql.
            self._client = JIRA(server=self.url, basic_auth=self._auth, max_retries=0, timeout=self.timeout,
                                get_server_info=True, options={"rest_api_version": "2"})
        return self._client

    def _call(self, fn: Callable[[Any], Any]) -> Any:
        """One Jira call; vendor errors become ``_Retry`` (outage, 429, 5xx, auth) or
        ``_Permanent`` (400, 404: retrying cannot help)."""
        try:
            return fn(self._connect())
        except JIRAError as exc:
            status = getattr(exc, "status_code", None)
            text = str(getattr(exc, "text", "") or "").splitlines()[0][:200] if getattr(exc, "text", "") else ""
            message = f"HTTP {status}: {text}" if status else (text or "refused")
            if status in (400, 404, 405, 410):
                raise _Permanent(message, status) from exc
            raise _Retry(message, status) from exc
        except requests.exceptions.Timeout as exc:
            self._client = None
            raise _Retry(f"timed out after {self.timeout:g}s") from exc
        except (requests.exceptions.RequestException, OSError) as exc:
            self._client = None
            raise _Retry(f"unreachable ({type(exc).__name__})") from exc

    def _find(self, incident: Incident) -> str | None:
        jql = (f'project = "{self.project_key}" AND labels = "{incident_label(incident.id)}" '
               f"ORDER BY created ASC")
        # Read after write: the ids we created are reconciled into the result (Jira Cloud only).
        reconcile = [int(i) for i in list(self._created.values())[-50:] if i.isdigit()]

        def search(c: Any) -> Any:
            if getattr(c, "_is_cloud", False):
                return c.enhanced_search_issues(jql, maxResults=10, fields=["summary", "labels"],
                                                reconcileIssues=reconcile, json_result=True)
            return c.search_issues(jql, maxResults=10, fields=["summary", "labels"], json_result=True)

        found = self._call(search)
        marker = f"[{incident.id}]"
        for issue in (found or {}).get("issues", []) if isinstance(found, dict) else []:
            summary = str(((issue.get("fields") or {}).get("summary")) or "")
            if summary.startswith(marker):
                return str(issue["key"])
        started = self.state.creating_since(incident.id, self.name)
        if started is not None and incident.id not in self._created and incident.id not in self._not_created:
            age = (self.now() - started).total_seconds()
            if age < self.search_settle_seconds:
                # A create began before a restart: its issue may exist and not be searchable yet.
                raise _Retry(f"a Jira issue for {incident.id} may have been created {age:.0f}s ago and not be "
                             f"searchable yet; searching again until {self.search_settle_seconds:g}s have passed")
        return None

    def _create(self, incident: Incident) -> str:
        fields = {
            "project": {"key": self.project_key},
            "issuetype": {"name": self.issue_type},
            "summary": summary_for(incident),
            "description": description_for(incident),
            "labels": [LABEL, incident_label(incident.id)],
        }
        self.state.ticket_creating(incident.id, self.name)
        try:
            issue = self._call(lambda c: c.create_issue(fields=fields, prefetch=False))
        except _Failure as exc:
            if exc.status is not None and (exc.status < 500 or exc.status in NOT_PROCESSED):
                self._not_created.add(incident.id)  # Jira refused it: nothing to wait for
            raise
        self._created[incident.id] = str(getattr(issue, "id", "") or "")
        return str(issue.key)

    def _transition_to_done(self, key: str, resolution: str) -> dict[str, Any]:
        issue = self._call(lambda c: c.issue(key, fields="status"))
        status = (issue.raw.get("fields") or {}).get("status") or {}
        if (status.get("statusCategory") or {}).get("key") == DONE_CATEGORY:
            return {"already": status.get("name")}
        transitions = self._call(lambda c: c.transitions(key, expand="transitions.fields"))
        done = [t for t in transitions if ((t.get("to") or {}).get("statusCategory") or {}).get("key") == DONE_CATEGORY]
        if not done:
            names = ", ".join(f"{t.get('name')} -> {(t.get('to') or {}).get('name')}" for t in transitions) or "none"
            raise _Permanent(f"{key}: no transition from {status.get('name', '?')} leads to a done status "
                             f"(available: {names})")
        done.sort(key=lambda t: len(_required_fields(t) - {"resolution"}))
        chosen = done[0]
        fields = _resolution_field(chosen)
        self._call(lambda c: c.transition_issue(key, str(chosen["id"]), fields=fields, comment=resolution))
        return {"transition": chosen.get("name"), "to": (chosen.get("to") or {}).get("name")}

    # --- helpers ----------------------------------------------------------------------------

    def _incident_of(self, key: str) -> str | None:
        link = self.state.ticket_by_key(key)
        return str(link["incident_id"]) if link else None

    def _backoff(self) -> float:
        self._failures += 1
        delay = min(1800.0, self.retry_seconds * 2 ** (self._failures - 1))
        self._next_flush = self.clock() + delay
        return delay

    def _failed(self, operation: str, message: str, incident_id: str | None) -> None:
        self.error = message
        self.state.record_error(self.name, operation, message, incident_id=incident_id)

    def _succeeded(self) -> None:
        self._failures = 0
        self._next_flush = 0.0
        self.error = None


def _required_fields(transition: Mapping[str, Any]) -> set[str]:
    return {name for name, f in (transition.get("fields") or {}).items() if isinstance(f, dict) and f.get("required")}


def _resolution_field(transition: Mapping[str, Any]) -> dict[str, Any] | None:
    field = (transition.get("fields") or {}).get("resolution")
    if not isinstance(field, dict):
        return None
    names = [str(v.get("name")) for v in field.get("allowedValues") or [] if v.get("name")]
    for preferred in PREFERRED_RESOLUTIONS:
        for name in names:
            if name.lower() == preferred:
                return {"resolution": {"name": name}}
    return {"resolution": {"name": names[0]}} if names else None


def missing_settings(settings: Any) -> list[str]:
    """The Jira variables a live ticket system needs and lacks."""
    return [name for name, value in (("JIRA_URL", settings.jira_url), ("JIRA_EMAIL", settings.jira_email),
                                     ("JIRA_API_TOKEN", settings.jira_api_token),
                                     ("JIRA_PROJECT_KEY", settings.jira_project_key)) if not value]
