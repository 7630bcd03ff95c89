"""The webhook executor against a real HTTP receiver on 127.0.0.1 that checks the HMAC-SHA256
signature and deduplicates deliveries by idempotency key (the wire format in the adapter's docstring)."""

from __future__ import annotations

import email.utils
import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pydantic import SecretStr

from safety_governor.adapters.executor_webhook import (
    WebhookExecutor,
    idempotency_key,
    sign,
    verify_signature,
)
from safety_governor.bootstrap import build, build_executor
from safety_governor.catalogue import ActionCatalogue
from safety_governor.config import DEFAULT_DATA_DIR, Settings
from safety_governor.errors import ConfigError, ExecutionRefused
from safety_governor.models import Incident
from safety_governor.ports import Executor

SECRET = "whsec-test-0123456789"


class Receiver:
    """A remediation receiver: verifies the signature, runs each idempotency key once.

    ``script`` lists what to answer per delivery (``"ok"``, ``"ran-then-503"``: executes, then
    answers 503 as a gateway would after a lost response, ``"503"``, ``"429"``, ``"slow"``).
    """

    def __init__(self, secret: str = SECRET, script: list[str] | None = None) -> None:
        self.secret = secret
        self.script = list(script or [])
        self.deliveries: list[dict] = []
        self.executed: dict[str, dict] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                key = self.headers.get("Idempotency-Key")
                signature = self.headers.get("X-Governor-Signature")
                with receiver.lock:
                    step = receiver.script.pop(0) if receiver.script else "ok"
                    receiver.deliveries.append({"key": key, "signature": signature, "body": body,
                                                "attempt": self.headers.get("X-Governor-Attempt")})
                    if not verify_signature(body, signature, receiver.secret):
                        return self._answer(401, {"error": "bad signature"})
                    if not key:
                        return self._answer(400, {"error": "Idempotency-Key required"})
                    if step == "503":
                        return self._answer(503, {"error": "busy"})
                    if step == "429":
                        return self._answer(429, {"error": "slow down"}, {"Retry-After": "7"})
                    if step == "429-date":  # RFC 9110's other form: an HTTP-date 20 s ahead
                        when = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
                        return self._answer(429, {"error": "slow down"}, {"Retry-After": when})
                    duplicate = key in receiver.executed
                    if not duplicate:
                        receiver.executed[key] = json.loads(body)
                if step == "slow":
                    time.sleep(0.6)
                if step == "ran-then-503":
                    return self._answer(503, {"error": "upstream reset"})
                return self._answer(200, {"status": "duplicate" if duplicate else "executed", "key": key})

            def _answer(self, status, doc, headers=None):
                data = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/remediate?token=not-for-logs"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture(scope="module")
def catalogue() -> ActionCatalogue:
    return ActionCatalogue.load(DEFAULT_DATA_DIR / "actions.json")


def _executor(store, catalogue, url, *, secret=SECRET, sleeps=None, **kw) -> WebhookExecutor:
    return WebhookExecutor(store, catalogue, url=url, secret=SecretStr(secret), backoff=0.25,
                           sleep=(sleeps.append if sleeps is not None else (lambda s: None)), **kw)


def _assessed(governor, knowledge, incident_id):
    incident = Incident.model_validate(next(i for i in knowledge["incidents"] if i["id"] == incident_id))
    return governor.pipeline.assess(incident)


def test_the_webhook_executor_satisfies_the_executor_port(store, catalogue, receiver):
    executor: Executor = _executor(store, catalogue, receiver.url)
    assert executor.name == "webhook"


def test_a_signed_delivery_to_a_loopback_receiver_runs_the_action_with_its_parameters(
    governor, knowledge, store, catalogue, receiver
):
    a = _assessed(governor, knowledge, "inc-004")
    executor = _executor(store, catalogue, receiver.url)
    record = executor.execute(a.incident, a.gate, authorised_by="gate")
    assert record.status == "succeeded" and record.mode == "webhook"
    [delivery] = receiver.deliveries
    assert delivery["signature"] == sign(delivery["body"], SECRET)
    assert delivery["key"] == idempotency_key(a.gate.decision_id, "rollback_last_deploy")
    sent = json.loads(delivery["body"])
    assert sent["action"] == "rollback_last_deploy" and sent["service"] == "checkout-web"
    assert sent["parameters"] == {"service": "checkout-web", "to_release": ""}
    assert sent["decision_id"] == a.gate.decision_id and sent["authorised_by"] == "gate"
    assert sent["override"] is False and sent["rollback_action"] == "redeploy_release"
    [doc] = store.events("action_executions", "inc-004")
    assert doc["status"] == "succeeded" and doc["http_status"] == 200 and doc["attempts"] == 1
    assert doc["receiver"]["status"] == "executed"


def test_a_retried_delivery_carries_the_same_signed_bytes_and_key_and_executes_once(
    governor, knowledge, store, catalogue
):
    a = _assessed(governor, knowledge, "inc-004")
    sleeps: list[float] = []
    with Receiver(script=["ran-then-503", "503", "ok"]) as receiver:
        record = _executor(store, catalogue, receiver.url, sleeps=sleeps, retries=2).execute(
            a.incident, a.gate, authorised_by="gate")
    assert record.status == "succeeded"
    assert len(receiver.deliveries) == 3 and len(receiver.executed) == 1
    assert len({d["body"] for d in receiver.deliveries}) == 1
    assert len({d["key"] for d in receiver.deliveries}) == 1
    assert [d["attempt"] for d in receiver.deliveries] == ["1", "2", "3"]
    assert sleeps == [0.25, 0.5]
    [doc] = store.events("action_executions", "inc-004")
    assert doc["attempts"] == 3 and doc["receiver"]["status"] == "duplicate"


def test_executing_the_same_decision_twice_is_deduplicated_by_the_receiver(governor, knowledge, store, catalogue,
                                                                          receiver):
    a = _assessed(governor, knowledge, "inc-004")
    executor = _executor(store, catalogue, receiver.url)
    executor.execute(a.incident, a.gate, authorised_by="gate")
    executor.execute(a.incident, a.gate, authorised_by="gate")
    assert len(receiver.deliveries) == 2 and len(receiver.executed) == 1


def test_a_429_is_retried_after_the_receivers_retry_after(governor, knowledge, store, catalogue):
    a = _assessed(governor, knowledge, "inc-004")
    sleeps: list[float] = []
    with Receiver(script=["429", "ok"]) as receiver:
        _executor(store, catalogue, receiver.url, sleeps=sleeps).execute(a.incident, a.gate, authorised_by="gate")
    assert sleeps == [7.0] and len(receiver.executed) == 1


def test_a_429_with_an_http_date_retry_after_waits_until_that_date(governor, knowledge, store, catalogue):
    a = _assessed(governor, knowledge, "inc-004")
    sleeps: list[float] = []
    with Receiver(script=["429-date", "ok"]) as receiver:
        _executor(store, catalogue, receiver.url, sleeps=sleeps).execute(a.incident, a.gate, authorised_by="gate")
    [wait] = sleeps
    assert 17 <= wait <= 20 and len(receiver.executed) == 1  # not the 0.x s exponential backoff


def test_a_wrong_secret_is_rejected_by_the_receiver_and_not_retried(governor, knowledge, store, catalogue, receiver):
    a = _assessed(governor, knowledge, "inc-004")
    sleeps: list[float] = []
    executor = _executor(store, catalogue, receiver.url, secret="wrong-secret-value", sleeps=sleeps)
    with pytest.raises(ExecutionRefused) as err:
        executor.execute(a.incident, a.gate, authorised_by="gate")
    assert "HTTP 401" in str(err.value) and sleeps == [] and len(receiver.deliveries) == 1
    assert receiver.executed == {}
    assert "wrong-secret-value" not in str(err.value) and "not-for-logs" not in str(err.value)
    [doc] = store.events("action_executions", "inc-004")
    assert doc["status"] == "failed" and "HTTP 401" in doc["error"]


def test_an_unreachable_receiver_is_retried_then_reported_as_an_unknown_outcome(governor, knowledge, store,
                                                                                catalogue):
    a = _assessed(governor, knowledge, "inc-004")
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sleeps: list[float] = []
    executor = _executor(store, catalogue, f"http://127.0.0.1:{port}/hook", sleeps=sleeps, retries=2,
                         connect_timeout=0.5)
    with pytest.raises(ExecutionRefused, match=r"not confirmed after 3 attempt\(s\) \(last: cannot connect\)"):
        executor.execute(a.incident, a.gate, authorised_by="gate")
    assert sleeps == [0.25, 0.5]


def test_a_receiver_slower_than_the_timeout_is_retried_and_still_runs_once(governor, knowledge, store, catalogue):
    a = _assessed(governor, knowledge, "inc-004")
    with Receiver(script=["slow", "ok"]) as receiver:
        record = _executor(store, catalogue, receiver.url, timeout=0.2, retries=1).execute(
            a.incident, a.gate, authorised_by="gate")
    assert record.status == "succeeded" and len(receiver.deliveries) == 2 and len(receiver.executed) == 1


def test_nothing_is_sent_for_an_uncatalogued_unauthorised_or_underspecified_action(
    governor, knowledge, store, catalogue, receiver
):
    executor = _executor(store, catalogue, receiver.url)
    a = _assessed(governor, knowledge, "inc-004")
    with pytest.raises(ExecutionRefused, match="not in the action catalogue"):
        executor.execute(a.incident, a.gate.model_copy(update={"proposed_action": "delete_everything"}),
                         authorised_by="oncall")
    blocked = _assessed(governor, knowledge, "inc-005")
    with pytest.raises(ExecutionRefused, match="no human authorised it"):
        executor.execute(blocked.incident, blocked.gate, authorised_by="gate")
    pop = _assessed(governor, knowledge, "inc-009")
    with pytest.raises(ExecutionRefused, match="parameter 'pop' \\(string\\) is required"):
        executor.execute(pop.incident, pop.gate, authorised_by="gate")
    assert executor.execute(pop.incident, pop.gate, authorised_by="gate", parameters={"pop": "eu-west-2"})
    assert len(receiver.deliveries) == 1
    assert json.loads(receiver.deliveries[0]["body"])["parameters"] == {"pop": "eu-west-2"}


def test_the_preview_shows_the_target_without_its_query_string_or_the_secret(governor, knowledge, store, catalogue,
                                                                            receiver):
    a = _assessed(governor, knowledge, "inc-004")
    executor = _executor(store, catalogue, receiver.url)
    preview = executor.preview(a.incident, a.gate)
    assert preview.startswith("[webhook] would POST rollback_last_deploy(")
    assert "/hooks/remediate" in preview and "not-for-logs" not in preview and SECRET not in preview
    assert SECRET not in repr(executor) and receiver.deliveries == []


def test_bootstrap_picks_the_webhook_executor_from_settings_and_names_missing_variables(store, audit, receiver,
                                                                                        tmp_path):
    settings = Settings(output_dir=tmp_path, executor="webhook", executor_webhook_url=receiver.url,
                        executor_webhook_secret=SecretStr(SECRET))
    governor = build(settings, store=store, audit=audit)
    assert isinstance(governor.executor, WebhookExecutor)
    governor.close()
    with pytest.raises(ConfigError, match="EXECUTOR=webhook needs EXECUTOR_WEBHOOK_SECRET"):
        build_executor(Settings(executor="webhook", executor_webhook_url=receiver.url), store, governor.actions)
    env = Settings.from_env({"EXECUTOR": "webhook", "EXECUTOR_WEBHOOK_URL": receiver.url,
                             "EXECUTOR_WEBHOOK_SECRET": SECRET, "EXECUTOR_WEBHOOK_RETRIES": "4"})
    assert env.executor_webhook_retries == 4 and SECRET not in repr(env)
