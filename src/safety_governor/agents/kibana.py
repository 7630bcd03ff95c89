"""The Kibana Agent Builder backend: ``POST {ELASTIC_KIBANA_URL}/api/agent_builder/converse``.

The agent runs in Kibana with the tools configured there (for example our MCP server attached
through an MCP connector), so the ``tools`` port passed to ``converse`` is not used: the
response's ``tool_call`` steps are what the agent did, and they go into the reply's
``tool_calls`` and the audit ``tool_trace`` (tool id, params, a result summary).

* One conversation per incident: the first phase opens it, later phases (stress, the refusal
  explanation, the learned runbook) continue it with its ``conversation_id``.
* ``Authorization: ApiKey <encoded>``, ``kbn-xsrf``; connect and read timeouts.
* **A round is never run twice.** Converse is not idempotent: Kibana answers 500 for errors on the
  agent's side too (``wrap_handler``), after tools may have run. So the POST is retried only when
  it cannot have been processed (a refused connection, 429, a 502/503/504 from a proxy rather than
  Kibana's JSON envelope). After any other failure in a conversation that already exists, the
  conversation is read back (``GET /api/agent_builder/conversations/<id>``): if its last round
  answers our input, that round is the reply and the conversation continues; otherwise the error
  stands and the pipeline fails closed.
* 401, 403 (including the Enterprise licence message), 404 (agent, or no Agent Builder), a
  timeout, a reply awaiting a human confirmation, or a reply without a message raise
  ``AgentBackendError`` with one clear sentence: the pipeline then fails closed
  (``invalid_output``), never executing anything.
* ``model_usage.model`` (when Kibana reports it) names the model for the framework-score lookup.

Only the request fields every 9.2+ release accepts are sent (``input``, ``agent_id``,
``conversation_id``, ``connector_id``): Kibana rejects unknown keys with a 400.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import requests
from pydantic import SecretStr

from ..errors import AgentBackendError
from ..models import GateOutput, Incident
from ..ports import AgentReply, AuditSink, Readiness, ToolCall, ToolPort
from ..redaction import redact_url
from ..tools import result_ids
from ._live import (
    MAX_EXPLANATION_CHARS,
    MAX_RUNBOOK_CHARS,
    HttpPolicy,
    clean_text,
    describe_verification,
    json_body,
    post_json,
    refusal_prompt,
    runbook_prompt,
    short,
)

if TYPE_CHECKING:
    from ..verification import VerificationResult

CONVERSE_PATH = "/api/agent_builder/converse"
CONVERSATIONS_PATH = "/api/agent_builder/conversations"
API_VERSION = "2023-10-31"
MAX_CONVERSATIONS = 1000


def _message(data: Any, fallback: str) -> str:
    """The ``message`` of Kibana's error envelope ``{statusCode, error, message}``."""
    if isinstance(data, Mapping):
        for key in ("message", "error"):
            if isinstance(data.get(key), str) and data[key].strip():
                return short(data[key])
    return fallback


def summarise_results(results: Any) -> tuple[list[str], str, str | None]:
    """Ids, a one-line summary and the first error of a tool step's ``results``."""
    ids: list[str] = []
    parts: list[str] = []
    error: str | None = None
    for result in results if isinstance(results, list) else []:
        if not isinstance(result, Mapping):
            continue
        kind = str(result.get("type", "other"))
        data = result.get("data") if isinstance(result.get("data"), Mapping) else {}
        if kind == "error":
            error = error or short(data.get("message", "tool error"), 200)
            parts.append(f"error: {short(data.get('message', ''), 120)}")
        elif kind == "resource":
            ref = data.get("reference") if isinstance(data.get("reference"), Mapping) else {}
            if ref.get("id"):
                ids.append(str(ref["id"]))
            parts.append(f"resource {ref.get('index', '?')}/{ref.get('id', '?')}")
        elif kind == "tabular_data":
            rows = data.get("values")
            parts.append(f"tabular_data: {len(rows) if isinstance(rows, list) else 0} rows")
        elif kind == "query":
            parts.append("query")
        else:
            found = result_ids(data)
            ids.extend(found)
            parts.append(f"{kind}: {len(found)} ids" if found else kind)
    return list(dict.fromkeys(ids)), "; ".join(parts) or "no results", error


class KibanaAgent:
    """An agent backend served by Kibana Agent Builder.

    Args:
        kibana_url: Kibana's base URL (with ``/s/<space>`` for a non-default space).
        api_key: the ``encoded`` value of an API key with the Agent Builder privilege.
        agent_id: the Agent Builder agent to converse with.
        model: the model name for the framework-score lookup until Kibana reports one.
        connector_id: a Kibana GenAI connector to use instead of the agent's default.
        policy: timeouts and retries.
        audit: where tool-call steps are recorded (``tool_trace``).
        session: a ``requests.Session`` (tests pass their own).
        sleep: the backoff sleep (tests pass a no-op).
    """

    name = "kibana"

    def __init__(
        self,
        *,
        kibana_url: str,
        api_key: SecretStr | str,
        agent_id: str,
        model: str = "unknown",
        connector_id: str | None = None,
        policy: HttpPolicy | None = None,
        audit: AuditSink | None = None,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = kibana_url.rstrip("/")
        self.url = self.base_url + CONVERSE_PATH
        self._api_key = api_key if isinstance(api_key, SecretStr) else SecretStr(api_key)
        self.agent_id = agent_id
        self.model = model
        self.connector_id = connector_id or None
        self.policy = policy or HttpPolicy()
        self.audit = audit
        self.session = session or requests.Session()
        self.sleep = sleep
        self._conversations: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    # --- conversations ----------------------------------------------------------------------

    def conversation_id(self, incident_id: str) -> str | None:
        with self._lock:
            return self._conversations.get(incident_id)

    def _remember(self, incident_id: str, conversation_id: str | None) -> None:
        with self._lock:
            if conversation_id:
                self._conversations[incident_id] = conversation_id
                self._conversations.move_to_end(incident_id)
                while len(self._conversations) > MAX_CONVERSATIONS:
                    self._conversations.popitem(last=False)
            else:
                self._conversations.pop(incident_id, None)

    # --- the converse call --------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {
            "Authorization": f"ApiKey {self._api_key.get_secret_value()}",
            "kbn-xsrf": "true",
            "Content-Type": "application/json",
            "elastic-api-version": API_VERSION,
        }

    def _round(self, incident: Incident, prompt: str) -> dict[str, Any]:
        """One converse round in the incident's conversation; the parsed 200 body."""
        conversation = self.conversation_id(incident.id)
        body: dict[str, Any] = {"input": prompt, "agent_id": self.agent_id}
        if conversation:
            body["conversation_id"] = conversation
        if self.connector_id:
            body["connector_id"] = self.connector_id
        try:
            resp, attempts = post_json(self.session, self.url, body, headers=self._headers(), policy=self.policy,
                                       service="Kibana Agent Builder", sleep=self.sleep, idempotent=False)
        except AgentBackendError:
            # A timeout or a dropped connection: the round may have run. Read it back if we can.
            recorded = self._recorded_round(conversation, prompt)
            if recorded is None:
                raise
            return recorded
        data = json_body(resp)
        status = resp.status_code
        if status == 404 and conversation and "conversation" in _message(data, "").lower():
            # The conversation is gone (deleted, or another space): start a new one, once.
            self._remember(incident.id, None)
            return self._round(incident, prompt)
        if status >= 500:
            recorded = self._recorded_round(conversation, prompt)
            if recorded is not None:
                return recorded
        if status != 200:
            raise AgentBackendError(self._explain(status, data, attempts))
        if not isinstance(data, Mapping):
            raise AgentBackendError("Kibana Agent Builder answered 200 with a body that is not a JSON object")
        self._remember(incident.id, data.get("conversation_id") if isinstance(data.get("conversation_id"), str)
                       else conversation)
        return dict(data)

    def _recorded_round(self, conversation: str | None, prompt: str) -> dict[str, Any] | None:
        """The conversation's last round as a converse reply, if it answers ``prompt`` (Kibana
        recorded the round before its answer was lost); ``None`` otherwise or if unreadable."""
        if not conversation:
            return None
        headers = {k: v for k, v in self._headers().items() if k != "Content-Type"}
        try:
            resp = self.session.get(f"{self.base_url}{CONVERSATIONS_PATH}/{conversation}", headers=headers,
                                    timeout=(self.policy.connect_timeout, min(self.policy.read_timeout, 30.0)))
        except requests.RequestException:
            return None
        data = json_body(resp)
        rounds = data.get("rounds") if resp.status_code == 200 and isinstance(data, Mapping) else None
        last = rounds[-1] if isinstance(rounds, list) and rounds and isinstance(rounds[-1], Mapping) else None
        if last is None:
            return None
        asked = last.get("input") if isinstance(last.get("input"), Mapping) else {}
        response = last.get("response") if isinstance(last.get("response"), Mapping) else {}
        if asked.get("message") != prompt or not isinstance(response.get("message"), str):
            return None
        return {"conversation_id": conversation, "round_id": last.get("id"), "status": last.get("status"),
                "steps": last.get("steps") or [], "response": dict(response),
                "model_usage": last.get("model_usage") or {}}

    def _explain(self, status: int, data: Any, attempts: int) -> str:
        msg = _message(data, "no message")
        where = redact_url(self.url)
        if status == 401:
            return ("Kibana rejected the API key (401); check ELASTIC_API_KEY (use the key's `encoded` value)")
        if status == 403:
            if "licen" in msg.lower():
                return f"Kibana Agent Builder needs an Enterprise licence (403: {msg})"
            return (f"the API key may not use Agent Builder here (403: {msg}); it needs the "
                    "feature_agentBuilder.read privilege in this Kibana space")
        if status == 404:
            if msg.lower().startswith("agent"):
                return f"Agent Builder agent '{self.agent_id}' not found (404: {msg}); check ELASTIC_AGENT_ID"
            return (f"{where} not found (404: {msg}); Kibana 9.2+ with Agent Builder is needed, "
                    "and ELASTIC_KIBANA_URL must be Kibana's base URL")
        if status == 429 or status >= 500:
            return f"Kibana Agent Builder answered {status} after {attempts} attempt(s): {msg}"
        return f"Kibana Agent Builder refused the request ({status}: {msg})"

    def converse(
        self, phase: str, prompt: str, *, incident: Incident, tools: ToolPort, context: Mapping[str, Any]
    ) -> AgentReply:
        data = self._round(incident, prompt)
        if data.get("status") == "awaiting_prompt":
            raise AgentBackendError(
                "the Agent Builder agent is waiting for a human confirmation of a tool call; "
                "the governor cannot give one (remove confirmation from the agent's tools)"
            )
        response = data.get("response") if isinstance(data.get("response"), Mapping) else {}
        text = response.get("message")
        if not isinstance(text, str):
            raise AgentBackendError("Kibana Agent Builder's reply has no response.message")
        usage = data.get("model_usage") if isinstance(data.get("model_usage"), Mapping) else {}
        model = usage.get("model") if isinstance(usage.get("model"), str) and usage.get("model") else None
        if model:
            self.model = model
        calls = self._tool_calls(data.get("steps"), incident=incident, phase=phase,
                                 conversation=data.get("conversation_id"))
        return AgentReply(text=text, tool_calls=calls, model=model or self.model, usage=dict(usage))

    def _tool_calls(self, steps: Any, *, incident: Incident, phase: str, conversation: Any) -> list[ToolCall]:
        calls: list[ToolCall] = []
        for step in steps if isinstance(steps, list) else []:
            if not isinstance(step, Mapping) or step.get("type") != "tool_call":
                continue  # reasoning and newer step types carry no tool call
            params = step.get("params") if isinstance(step.get("params"), Mapping) else {}
            ids, summary, error = summarise_results(step.get("results"))
            call = ToolCall(tool=str(step.get("tool_id") or "unknown"), arguments=dict(params), result_ids=ids,
                            duration_ms=0.0, transport="kibana", ok=error is None, error=error)
            calls.append(call)
            if self.audit is not None:
                self.audit.record("tool_trace", {
                    **call.model_dump(mode="json"), "incident_id": incident.id, "phase": phase,
                    "agent_backend": self.name, "tool_call_id": step.get("tool_call_id"),
                    "conversation_id": conversation, "result_summary": summary,
                })
        return calls

    # --- follow-up questions ------------------------------------------------------------------

    def _ask(self, incident: Incident, prompt: str, limit: int) -> str | None:
        try:
            data = self._round(incident, prompt)
        except AgentBackendError:
            return None
        if data.get("status") == "awaiting_prompt":
            return None
        response = data.get("response") if isinstance(data.get("response"), Mapping) else {}
        return clean_text(response.get("message"), limit)

    def explain_refusal(self, incident: Incident, gate: GateOutput, *, threshold: float) -> str | None:
        """The agent's plain-words explanation of a refused APPROVE, or ``None`` (then use the
        deterministic ``approvals.refusal_explanation``). Untrusted prose: show it next to the
        deterministic refusal, never instead of the decision."""
        return self._ask(incident, refusal_prompt(incident, gate, threshold=threshold), MAX_EXPLANATION_CHARS)

    def write_runbook(
        self, incident: Incident, gate: GateOutput, verification: VerificationResult | None = None, *,
        outcome: str = "",
    ) -> str | None:
        """A runbook body written by the agent after a verified resolution, or ``None`` (then the
        deterministic text is used). Fits ``learning.RunbookWriter``: pass ``agent.write_runbook``.
        Python sets the entry's action, service, status and provenance."""
        prompt = runbook_prompt(incident, gate, outcome=outcome or describe_verification(verification))
        return self._ask(incident, prompt, MAX_RUNBOOK_CHARS)

    # --- readiness ----------------------------------------------------------------------------

    def check(self) -> Readiness:
        """Whether the agent exists and the key may read it (``GET /api/agent_builder/agents/<id>``)."""
        url = f"{self.base_url}/api/agent_builder/agents/{self.agent_id}"
        headers = {k: v for k, v in self._headers().items() if k != "Content-Type"}
        try:
            resp = self.session.get(url, headers=headers,
                                    timeout=(self.policy.connect_timeout, min(self.policy.read_timeout, 10.0)))
        except requests.RequestException as exc:
            return Readiness(ok=False, reason=f"cannot reach Kibana at {redact_url(self.base_url)} "
                                              f"({type(exc).__name__})")
        if resp.status_code == 200:
            return Readiness(ok=True, reason=f"Agent Builder agent '{self.agent_id}' at {redact_url(self.base_url)}")
        return Readiness(ok=False, reason=self._explain(resp.status_code, json_body(resp), 1))
