"""Offline telemetry: a simulated production writing access logs into the store.

``TrafficSimulator`` writes documents in the ``kibana_sample_data_logs`` shape (plus ``service``
and ``release``) at a steady rate for nine services, and injects the faults of a storyline at
set offsets. It is the offline stand-in for production, so it also *reacts to executed
actions*: ``apply_action`` clears an active fault when the action is one of its remedies (a
correct fix visibly recovers), and does nothing otherwise (a wrong fix does not). A fault that
is never fixed ends after its duration (someone fixed it by hand).

The governor never reads this module's state: the audit worker finds the faults in the logs.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..models import normalise_action
from ..ports import Store


@dataclass(frozen=True)
class ServiceProfile:
    name: str
    host: str
    weight: float
    release: str
    requests: tuple[tuple[str, str, float], ...]  # (method, path, weight)


PROFILES: tuple[ServiceProfile, ...] = (
    ServiceProfile("payments-api", "api.payments.example.com", 3, "2026.11.24-3", (
        ("POST", "/api/v1/checkout", 4), ("POST", "/api/v1/payments/authorize", 3),
        ("GET", "/api/v1/payments/status", 2), ("POST", "/api/v1/refunds", 1), ("GET", "/healthz", 1))),
    ServiceProfile("checkout-web", "shop.example.com", 3, "2026.11.26-1", (
        ("GET", "/cart", 3), ("GET", "/checkout", 3), ("POST", "/checkout/confirm", 3),
        ("GET", "/static/js/app.js", 2), ("GET", "/products/trail-runner-3", 2))),
    ServiceProfile("auth-service", "auth.example.com", 3, "2026.11.19-2", (
        ("POST", "/auth/login", 3), ("POST", "/auth/token", 3), ("POST", "/auth/reset-password", 1),
        ("GET", "/auth/.well-known/jwks.json", 1), ("POST", "/auth/logout", 1))),
    ServiceProfile("billing-batch", "billing-batch.internal.example.com", 2, "2026.11.21-1", (
        ("GET", "/api/v1/batch/jobs", 3), ("POST", "/api/v1/batch/jobs/submit", 3),
        ("GET", "/api/v1/invoices/export.csv", 1), ("GET", "/healthz", 1))),
    ServiceProfile("elastic-downloads", "www.elastic.co", 2, "2026.11.25-4", (
        ("GET", "/downloads", 3), ("GET", "/solutions/apm", 2), ("GET", "/downloads/elasticsearch", 2))),
    ServiceProfile("search-api", "search.example.com", 2, "2026.11.22-1", (
        ("GET", "/api/v1/search", 4), ("GET", "/api/v1/suggest", 2))),
    ServiceProfile("cdn-edge", "cdn.example.com", 2, "2026.11.18-5", (
        ("GET", "/assets/app.js", 3), ("GET", "/images/hero.webp", 2))),
    ServiceProfile("inventory-db", "inventory.internal.example.com", 1, "2026.11.17-2", (
        ("GET", "/api/v1/stock", 3), ("POST", "/api/v1/reservations", 2))),
    ServiceProfile("notifications-worker", "notify.internal.example.com", 1, "2026.11.23-1", (
        ("POST", "/v1/notify", 3), ("GET", "/healthz", 1))),
)


@dataclass(frozen=True)
class Fault:
    """A fault injected ``start`` seconds into the run, until a remedy runs or ``duration`` ends.

    Args:
        requests: the ``(method, path)`` requests that fail.
        error_rate: the share of those requests that fail.
        codes: ``(status, weight)`` of the failures.
        extra_per_second: additional requests on the failing paths (retries, a flood).
        tags: extra tags on the failing requests.
        clients: when set, the extra requests come only from these IPs (a flood).
        agent: the user agent of the extra requests.
        release: a release deployed when the fault starts (rolled back by ``rollback_last_deploy``).
        remedies: the actions that clear it.
    """

    name: str
    service: str
    start: float
    duration: float
    requests: tuple[tuple[str, str], ...]
    error_rate: float
    codes: tuple[tuple[int, float], ...]
    remedies: tuple[str, ...]
    extra_per_second: float = 0.0
    tags: tuple[str, ...] = ()
    clients: tuple[str, ...] = ()
    agent: str | None = None
    release: str | None = None
    description: str = ""


STORYLINE: tuple[Fault, ...] = (
    Fault("checkout-web bad release", "checkout-web", start=3, duration=150,
          requests=(("POST", "/checkout/confirm"),), error_rate=0.2, codes=((500, 0.8), (502, 0.2)),
          extra_per_second=3.5, release="2026.11.26-2", remedies=("rollback_last_deploy",),
          description="release 2026.11.26-2 breaks order confirmation; the gate lets the rollback through"),
    Fault("payments-api DB pool saturation", "payments-api", start=15, duration=50,
          requests=(("POST", "/api/v1/checkout"),), error_rate=0.55, codes=((503, 0.6), (500, 0.4)),
          extra_per_second=1.5, tags=("timeout", "latency"), remedies=("throttle_traffic_and_tune_pool",),
          description="checkout 5xx spike; the naive fix (restart pods) is contradicted and blocked"),
    Fault("auth-service credential reset flood", "auth-service", start=28, duration=150,
          requests=(("POST", "/auth/reset-password"),), error_rate=0.85, codes=((429, 0.8), (500, 0.2)),
          extra_per_second=10.0, tags=("rate_limited",),
          clients=("185.220.101.4", "185.220.101.9", "185.220.101.23", "45.155.205.17", "45.155.205.88",
                   "193.32.162.40"),
          agent="python-requests/2.32.3", remedies=("enable_reset_rate_limit", "block_abusive_ip_ranges"),
          description="critical credential-reset spike; APPROVE is refused, only FORCE_OVERRIDE proceeds"),
    Fault("billing-batch queue lag", "billing-batch", start=45, duration=150,
          requests=(("POST", "/api/v1/batch/jobs/submit"),), error_rate=0.22,
          codes=((504, 1.0),), extra_per_second=3.0, tags=("slow", "queue_delay"),
          remedies=("scale_worker_pool", "pause_noncritical_batch_jobs"),
          description="invoice queue lag with 504 timeouts on job submission"),
)
STORYLINES: dict[str, tuple[Fault, ...]] = {"default": STORYLINE, "none": ()}

AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
    "Apache-HttpClient/5.3 (Java/21)",
    "Go-http-client/1.1",
)
COUNTRIES = ("US", "DE", "IN", "BR", "GB", "JP", "FR", "CN", "NG", "AU")


@dataclass
class _FaultState:
    fault: Fault
    started_at: float | None = None
    ended_at: float | None = None
    cleared_by: str | None = None


@dataclass(frozen=True)
class ActionEffect:
    """What an executed action did to the simulated production."""

    service: str
    action: str
    cleared: tuple[str, ...]

    @property
    def text(self) -> str:
        if self.cleared:
            return f"{self.action} cleared the simulated fault: {', '.join(self.cleared)}"
        return f"{self.action} changed nothing in the simulated production ({self.service} is unchanged)"


@dataclass
class TrafficSimulator:
    """Args:
    store: where the log documents are indexed (``logs``).
    rate: baseline requests per second over all services.
    storyline: the faults to inject (``STORYLINE``; ``()`` for steady traffic only).
    time_scale: stretches the storyline's offsets and durations (present mode is slower).
    seed: the random seed (the run is reproducible for one seed and clock).
    clock: epoch seconds.
    """

    store: Store
    rate: float = 24.0
    storyline: Sequence[Fault] = STORYLINE
    time_scale: float = 1.0
    seed: int = 7
    clock: Callable[[], float] = time.time
    profiles: Sequence[ServiceProfile] = PROFILES
    _faults: list[_FaultState] = field(init=False)
    _releases: dict[str, str] = field(init=False)
    _previous_release: dict[str, str] = field(init=False)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)
        self._faults = [_FaultState(f) for f in self.storyline]
        self._releases = {p.name: p.release for p in self.profiles}
        self._previous_release = {}
        self._started = self.clock()
        self._last = self._started
        self._carry = 0.0
        self._seq = 0
        self._run = f"{int(self._started):x}"
        self._weights = [p.weight for p in self.profiles]
        self.written = 0
        self.effects: list[ActionEffect] = []

    # --- the storyline ----------------------------------------------------------------------

    def _update_faults(self, now: float) -> None:
        elapsed = now - self._started
        for state in self._faults:
            f = state.fault
            if state.started_at is None and elapsed >= f.start * self.time_scale:
                state.started_at = now
                if f.release:
                    self._previous_release[f.service] = self._releases[f.service]
                    self._releases[f.service] = f.release
            if state.started_at is not None and state.ended_at is None and \
                    now - state.started_at >= f.duration * self.time_scale:
                state.ended_at = now

    def active_faults(self) -> list[Fault]:
        with self._lock:
            return [s.fault for s in self._faults if s.started_at is not None and s.ended_at is None]

    def finished(self) -> bool:
        """Every fault of the storyline has started and ended (fixed or expired)."""
        with self._lock:
            return all(s.ended_at is not None for s in self._faults)

    def apply_action(self, service: str, action: str) -> ActionEffect:
        """An executed action reaches the simulated production."""
        act = normalise_action(action)
        svc = service.strip().lower()
        cleared = []
        with self._lock:
            now = self.clock()
            for state in self._faults:
                f = state.fault
                if f.service == svc and state.started_at is not None and state.ended_at is None \
                        and act in f.remedies:
                    state.ended_at = now
                    state.cleared_by = act
                    cleared.append(f.name)
            if act == "rollback_last_deploy" and svc in self._previous_release:
                self._releases[svc] = self._previous_release.pop(svc)
            effect = ActionEffect(service=svc, action=act, cleared=tuple(cleared))
            self.effects.append(effect)
        return effect

    # --- traffic ----------------------------------------------------------------------------

    def _doc(self, now: float, profile: ServiceProfile, method: str, path: str, status: int,
             tags: Sequence[str] = (), client: str | None = None, agent: str | None = None) -> dict[str, Any]:
        r = self._random
        self._seq += 1
        ts = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        ip = client or f"{r.randint(11, 223)}.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)}"
        agent = agent or r.choice(AGENTS)
        size = r.randint(180, 900) if status >= 400 else r.randint(900, 9000)
        base_tags = ["success", "info"] if status < 400 else ["warning"] if status < 500 else ["error"]
        ext = path.rsplit(".", 1)[-1] if "." in path.rsplit("/", 1)[-1] else ""
        src, dest = r.choice(COUNTRIES), "US"
        return {
            "id": f"sim-{self._run}-{self._seq}",
            "timestamp": ts,
            "service": profile.name,
            "host": profile.host,
            "request": path,
            "response": str(status),
            "bytes": size,
            "clientip": ip,
            "agent": agent,
            "message": f'{ip} - - [{ts}] "{method} {path} HTTP/1.1" {status} {size} "-" "{agent}"',
            "tags": [*base_tags, *tags],
            "extension": ext,
            "url": f"https://{profile.host}{path}",
            "geo": {"src": src, "dest": dest, "srcdest": f"{src}:{dest}"},
            "machine": {"os": r.choice(("win 10", "osx", "ios", "linux")), "ram": r.choice((8, 16, 32)) * 2**30},
            "event": {"dataset": "sample_web_logs"},
            "release": self._releases[profile.name],
        }

    def _status(self, fault: Fault | None) -> tuple[int, tuple[str, ...]]:
        r = self._random
        if fault is not None and r.random() < fault.error_rate:
            codes = [c for c, _ in fault.codes]
            return r.choices(codes, weights=[w for _, w in fault.codes])[0], fault.tags
        roll = r.random()
        if roll < 0.003:
            return r.choice((500, 502, 503)), ()
        if roll < 0.018:
            return r.choice((400, 401, 403, 404)), ()
        return r.choice((200, 200, 200, 200, 201, 204, 304)), ()

    def generate(self, now: float, seconds: float) -> list[dict[str, Any]]:
        """The documents of ``seconds`` of traffic ending at ``now``."""
        with self._lock:
            self._update_faults(now)
            active = [s.fault for s in self._faults if s.started_at is not None and s.ended_at is None]
            r = self._random
            self._carry += self.rate * seconds
            count, self._carry = int(self._carry), self._carry - int(self._carry)
            by_request = {(f.service, m, p): f for f in active for m, p in f.requests}
            docs = []
            for i in range(count):
                at = now - seconds + seconds * (i + 1) / (count + 1)
                profile = r.choices(self.profiles, weights=self._weights)[0]
                method, path, _ = r.choices(profile.requests, weights=[w for _, _, w in profile.requests])[0]
                status, tags = self._status(by_request.get((profile.name, method, path)))
                docs.append(self._doc(at, profile, method, path, status, tags))
            profiles = {p.name: p for p in self.profiles}
            for f in active:
                extra = f.extra_per_second * seconds
                n = int(extra) + (1 if r.random() < extra - int(extra) else 0)
                for _ in range(n):
                    method, path = r.choice(f.requests)
                    status, tags = self._status(f)
                    docs.append(self._doc(now - r.random() * seconds, profiles[f.service], method, path, status,
                                          tags, client=r.choice(f.clients) if f.clients else None, agent=f.agent))
            docs.sort(key=lambda d: d["timestamp"])
            return docs

    def prefill(self, seconds: float) -> int:
        """Write ``seconds`` of steady traffic ending now, so the detector starts with a baseline
        (no fault is active before the storyline starts)."""
        now = self.clock()
        written = 0
        with self._lock:
            faults, self._faults = self._faults, []
        try:
            docs = [d for end in range(int(seconds), 0, -1) for d in self.generate(now - end + 1, 1.0)]
            if docs:
                self.store.index_documents("logs", docs)
            written = len(docs)
        finally:
            with self._lock:
                self._faults = faults
        self.written += written
        return written

    def tick(self) -> int:
        """Write the traffic since the previous tick; returns the number of documents."""
        now = self.clock()
        seconds = min(5.0, max(0.0, now - self._last))
        self._last = now
        docs = self.generate(now, seconds)
        if docs:
            self.store.index_documents("logs", docs)
            self.written += len(docs)
        return len(docs)

    def describe(self) -> list[str]:
        with self._lock:
            lines = []
            for s in self._faults:
                f = s.fault
                if s.started_at is None:
                    status = f"starts at +{f.start * self.time_scale:.0f}s"
                elif s.ended_at is None:
                    status = "active"
                elif s.cleared_by:
                    status = f"cleared by {s.cleared_by}"
                else:
                    status = "ended"
                lines.append(f"{f.name}: {status}")
            return lines
