"""The audit worker's detector: error clusters per service and request path, against a baseline.

Access-log documents are counted in one-second buckets per ``(service, request)``. A request
path *fails* when, over the last ``window_seconds``, it has enough traffic and errors, an error
rate above ``min_rate`` and ``rate_factor`` times its own baseline (the ``baseline_seconds``
before the window). The failing paths of one service form a ``Cluster``, and the incident is
written from what the logs show: severity from the error rate and the traffic surge, the summary
and symptoms from the failing paths, status codes, tags, client spread and a recent release.
Nothing here knows the storyline that produced the logs.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..models import Incident

_REQUEST_LINE = re.compile(r'"([A-Z]+) (\S+) HTTP/')
GENERIC_TAGS = frozenset({"success", "info", "warning", "error", "security", "login"})
CREDENTIAL_WORDS = ("reset", "password", "login", "token", "credential")


@dataclass(frozen=True)
class DetectionConfig:
    """Args:
    window_seconds: the recent window that is judged.
    baseline_seconds: the window before it that says what normal is.
    min_requests: requests a path needs in the window to be judged.
    min_errors: errors a path needs in the window.
    min_rate: the error rate (4xx + 5xx) a path needs in the window.
    rate_factor: how many times its baseline rate the window's rate must be.
    prior_rate: the baseline assumed while a path has too little history.
    release_recent_seconds: a release first seen this recently is named in the summary.
    segments: the window is cut into this many equal segments, and
    segments_failing: at least this many of them must show two errors or more at ``min_rate``: the cluster
        has lasted most of the window (a blip is not an incident, and the rates have settled
        by the time the incident is written).
    """

    window_seconds: float = 12.0
    baseline_seconds: float = 120.0
    min_requests: int = 10
    min_errors: int = 5
    min_rate: float = 0.1
    rate_factor: float = 3.0
    prior_rate: float = 0.03
    release_recent_seconds: float = 1800.0
    segments: int = 4
    segments_failing: int = 3


@dataclass(frozen=True)
class PathStats:
    service: str
    request: str  # "POST /api/v1/checkout"
    total: int
    errors: int
    baseline_rate: float

    @property
    def error_rate(self) -> float:
        return self.errors / self.total if self.total else 0.0


@dataclass(frozen=True)
class Cluster:
    """A detected error cluster on one service: the evidence an incident is written from."""

    service: str
    paths: tuple[PathStats, ...]
    total: int
    errors: int
    baseline_rate: float  # the service's error rate before the window
    volume_ratio: float  # requests per second on the failing paths, window / baseline
    codes: tuple[tuple[str, int], ...]  # error status codes, most frequent first
    tags: tuple[str, ...]  # distinctive tags on the failing requests
    clients: int  # distinct client IPs among the errors
    agents: int  # distinct user agents among the errors
    top_clients: tuple[int, ...] = ()  # errors from the busiest client IPs, most first
    top_agent_errors: int = 0  # errors from the busiest user agent
    release: str | None = None  # a release first seen recently on the failing requests
    release_age_seconds: float | None = None
    detected_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def error_rate(self) -> float:
        return self.errors / self.total if self.total else 0.0

    @property
    def share_5xx(self) -> float:
        errors = sum(n for _, n in self.codes) or 1
        return sum(n for code, n in self.codes if code.startswith("5")) / errors

    @property
    def top_code(self) -> str:
        return self.codes[0][0] if self.codes else ""

    def severity(self) -> str:
        """From impact: the error rate, and a surge of traffic (a flood) makes it worse."""
        rate = self.error_rate
        if rate >= 0.75 or (rate >= 0.4 and self.volume_ratio >= 3.0):
            return "critical"
        if rate >= 0.3:
            return "high"
        if rate >= 0.1:
            return "medium"
        return "low"

    def pattern(self) -> str:
        credential = any(w in p.request.lower() for p in self.paths for w in CREDENTIAL_WORDS)
        if self.top_code == "429" and self.volume_ratio >= 1.5:
            return "credential_reset_spike" if credential else "request_flood"
        if self.top_code == "504" and ("queue_delay" in self.tags or "slow" in self.tags):
            return "queue_lag"
        if self.top_code == "504":
            return "timeouts"
        if self.share_5xx >= 0.5:
            return "5xx_spike"
        return "4xx_spike"

    def _paths_text(self, limit: int = 2) -> str:
        names = [p.request for p in self.paths[:limit]]
        more = len(self.paths) - limit
        return ", ".join(names) + (f" and {more} more" if more > 0 else "")

    def _codes_text(self, limit: int = 3) -> str:
        return "/".join(code for code, _ in self.codes[:limit])

    def summary(self) -> str:
        pct = f"{self.error_rate:.0%}"
        pattern = self.pattern()
        paths = self._paths_text()
        if pattern == "credential_reset_spike":
            text = (f"Credential reset spike: {paths} at {self.volume_ratio:.0f}x normal volume "
                    f"with {self._codes_text()} responses ({pct} failing)")
        elif pattern == "request_flood":
            text = f"Request flood on {paths}: {self.volume_ratio:.0f}x normal volume, {pct} rejected ({self._codes_text()})"
        elif pattern == "queue_lag":
            text = f"Queue lag: {pct} of {paths} timing out ({self._codes_text()}), slow jobs piling up"
        elif pattern == "timeouts":
            text = f"Timeouts: {pct} of {paths} failing with {self._codes_text()}"
        elif pattern == "5xx_spike":
            text = f"5xx spike: {pct} of {paths} failing ({self._codes_text()})"
        else:
            text = f"4xx spike: {pct} of {paths} rejected ({self._codes_text()})"
        if self.release and self.release_age_seconds is not None:
            minutes = round(self.release_age_seconds / 60)
            when = "right" if minutes < 2 else f"{minutes} min"
            text += f", {when} after release {self.release} deploy"
        return text

    def symptoms(self) -> str:
        codes = ", ".join(f"{code} x{n}" for code, n in self.codes[:4])
        parts = [f"HTTP {codes} on {self._paths_text(3)}",
                 f"error rate {self.error_rate:.0%} vs baseline {self.baseline_rate:.1%}"]
        if self.tags:
            parts.append(" ".join(self.tags))
        if self.volume_ratio >= 2.0:
            parts.append(f"traffic at {self.volume_ratio:.1f}x normal volume")
        few = self.concentrated_clients()
        if few:
            share = sum(self.top_clients[:few]) / self.errors
            text = f"traffic from few IPs: {share:.0%} of failures from {few} client IPs"
            if self.top_agent_errors >= 0.8 * self.errors:
                text += ", one user agent"
            parts.append(text)
        if self.release:
            parts.append(f"errors began after release {self.release} deploy")
        return "; ".join(parts)

    def concentrated_clients(self, share: float = 0.75, most: int = 10) -> int:
        """How many client IPs send ``share`` of the failures, if ``most`` or fewer do (else 0)."""
        if self.errors < 20:
            return 0
        total = 0
        for n, count in enumerate(self.top_clients[:most], start=1):
            total += count
            if total >= share * self.errors:
                return n
        return 0

    def to_incident(self, incident_id: str) -> Incident:
        return Incident(id=incident_id, service=self.service, severity=self.severity(),  # type: ignore[arg-type]
                        summary=self.summary(), symptoms=self.symptoms(), pattern=self.pattern(),
                        source="audit-worker", detected_at=self.detected_at)


class _Bucket:
    __slots__ = ("total", "errors", "codes", "tags", "clients", "agents", "releases")

    def __init__(self) -> None:
        self.total = 0
        self.errors = 0
        self.codes: Counter[str] = Counter()
        self.tags: Counter[str] = Counter()
        self.clients: Counter[str] = Counter()
        self.agents: Counter[str] = Counter()
        self.releases: Counter[str] = Counter()


def doc_epoch(value: Any) -> float | None:
    """A log line's ``timestamp`` as epoch seconds: ISO-8601 text, or epoch (milli)seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) / 1000 if value > 1e11 else float(value)
    try:
        ts = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.timestamp()


def request_of(doc: Mapping[str, Any]) -> str:
    """``"POST /api/v1/checkout"`` from the Apache line in ``message``; the bare path otherwise."""
    match = _REQUEST_LINE.search(str(doc.get("message", "")))
    path = str(doc.get("request") or (match.group(2) if match else "/"))
    return f"{match.group(1)} {path}" if match else path


class ErrorClusterDetector:
    """Windowed error rates per service and request path; ``scan`` returns the clusters."""

    def __init__(self, config: DetectionConfig | None = None) -> None:
        self.config = config or DetectionConfig()
        self._buckets: dict[tuple[str, str], dict[int, _Bucket]] = defaultdict(dict)
        self._service: dict[str, dict[int, list[int]]] = defaultdict(dict)  # second -> [total, errors]
        self._release_seen: dict[tuple[str, str], float] = {}
        self._service_first: dict[str, float] = {}
        self._newest = 0.0

    def observe(self, docs: Iterable[Mapping[str, Any]]) -> int:
        seen = 0
        for doc in docs:
            ts = doc_epoch(doc.get("timestamp"))
            service = str(doc.get("service") or "").strip().lower()
            if ts is None or not service:
                continue
            try:
                status = int(str(doc.get("response", "0")))
            except ValueError:
                continue
            second = int(ts)
            error = status >= 400
            bucket = self._buckets[(service, request_of(doc))].get(second)
            if bucket is None:
                bucket = self._buckets[(service, request_of(doc))][second] = _Bucket()
            bucket.total += 1
            release = doc.get("release")
            self._service_first.setdefault(service, ts)
            if release:
                self._release_seen.setdefault((service, str(release)), ts)
            if error:
                bucket.errors += 1
                bucket.codes[str(status)] += 1
                for tag in doc.get("tags") or ():
                    if tag not in GENERIC_TAGS:
                        bucket.tags[str(tag)] += 1
                bucket.clients[str(doc.get("clientip", ""))] += 1
                bucket.agents[str(doc.get("agent", ""))] += 1
                if release:
                    bucket.releases[str(release)] += 1
            counts = self._service[service].setdefault(second, [0, 0])
            counts[0] += 1
            counts[1] += int(error)
            self._newest = max(self._newest, ts)
            seen += 1
        return seen

    def _prune(self, now: float) -> None:
        horizon = int(now - self.config.window_seconds - self.config.baseline_seconds) - 1
        for key in list(self._buckets):
            seconds = self._buckets[key]
            for second in [s for s in seconds if s < horizon]:
                del seconds[second]
            if not seconds:
                del self._buckets[key]
        for service in list(self._service):
            seconds = self._service[service]
            for second in [s for s in seconds if s < horizon]:
                del seconds[second]

    def _sustained(self, seconds: dict[int, _Bucket], start: float, end: float) -> bool:
        cfg = self.config
        if cfg.segments_failing <= 0:
            return True
        span = (end - start) / cfg.segments
        counts = [[0, 0] for _ in range(cfg.segments)]
        for second, bucket in seconds.items():
            if start < second <= end:
                segment = min(cfg.segments - 1, int((second - start - 1e-9) // span))
                counts[segment][0] += bucket.total
                counts[segment][1] += bucket.errors
        # Two errors at least: one background 404 in a quiet segment is not a cluster.
        failing = sum(1 for total, errors in counts if errors >= 2 and errors / total >= cfg.min_rate)
        return failing >= cfg.segments_failing

    def scan(self, now: float | None = None, *, skip: Iterable[str] = ()) -> list[Cluster]:
        """The clusters in the window ending at ``now`` (epoch seconds), one per service,
        except for services in ``skip`` (they already have an open incident)."""
        cfg = self.config
        now = self._newest if now is None else now
        self._prune(now)
        window_start = now - cfg.window_seconds
        base_start = window_start - cfg.baseline_seconds
        skipped = {s.strip().lower() for s in skip}
        failing: dict[str, list[tuple[PathStats, list[_Bucket]]]] = defaultdict(list)
        for (service, request), seconds in self._buckets.items():
            if service in skipped:
                continue
            recent = [b for s, b in seconds.items() if window_start < s <= now]
            total = sum(b.total for b in recent)
            errors = sum(b.errors for b in recent)
            if total < cfg.min_requests or errors < cfg.min_errors or errors / total < cfg.min_rate:
                continue
            if not self._sustained(seconds, window_start, now):
                continue
            base = [b for s, b in seconds.items() if base_start < s <= window_start]
            base_total = sum(b.total for b in base)
            base_rate = (sum(b.errors for b in base) / base_total) if base_total >= 20 else cfg.prior_rate
            if errors / total < cfg.rate_factor * base_rate:
                continue
            failing[service].append((PathStats(service, request, total, errors, round(base_rate, 4)), recent))
        clusters = []
        for service, paths in failing.items():
            paths.sort(key=lambda item: (-item[0].errors, item[0].request))
            buckets = [b for _, recent in paths for b in recent]
            codes: Counter[str] = Counter()
            tags: Counter[str] = Counter()
            clients: Counter[str] = Counter()
            agents: Counter[str] = Counter()
            releases: Counter[str] = Counter()
            for b in buckets:
                codes.update(b.codes)
                tags.update(b.tags)
                clients.update(b.clients)
                agents.update(b.agents)
                releases.update(b.releases)
            errors = sum(p.errors for p, _ in paths)
            # The surge is measured on the failing paths: a flood on one endpoint is a surge even
            # when the service as a whole is busy.
            base_total = base_seconds = 0
            for p, _ in paths:
                seconds = self._buckets[(service, p.request)]
                base_total += sum(b.total for s, b in seconds.items() if base_start < s <= window_start)
                first = min(seconds, default=int(window_start))
                base_seconds = max(base_seconds, int(min(cfg.baseline_seconds, max(1.0, window_start - first))))
            win_per_s = sum(p.total for p, _ in paths) / cfg.window_seconds
            base_per_s = base_total / base_seconds if base_total and base_seconds else 0.0
            svc = self._service.get(service, {})
            base = [c for s, c in svc.items() if base_start < s <= window_start]
            svc_total = sum(c[0] for c in base)
            service_base_rate = sum(c[1] for c in base) / svc_total if svc_total >= 20 else cfg.prior_rate
            release, age = None, None
            if releases:
                name = releases.most_common(1)[0][0]
                first = self._release_seen.get((service, name))
                # A release seen from the very start is the running one, not a new deploy.
                deployed = first is not None and first - self._service_first.get(service, first) >= 5.0
                if deployed and first is not None and now - first <= cfg.release_recent_seconds:
                    release, age = name, now - first
            clusters.append(Cluster(
                service=service,
                paths=tuple(p for p, _ in paths),
                total=sum(p.total for p, _ in paths),
                errors=errors,
                baseline_rate=round(service_base_rate, 4),
                volume_ratio=round(win_per_s / base_per_s, 2) if base_per_s > 0 else 1.0,
                # Codes that matter: the odd background 404 among the failures is noise.
                codes=tuple(sorted(((c, n) for c, n in codes.items() if n >= 2 and n * 10 >= errors),
                                   key=lambda kv: (-kv[1], kv[0]))),
                tags=tuple(t for t, n in tags.most_common(3) if n * 4 >= errors),
                clients=len(clients),
                agents=len(agents),
                top_clients=tuple(n for _, n in clients.most_common(10)),
                top_agent_errors=agents.most_common(1)[0][1] if agents else 0,
                release=release,
                release_age_seconds=age,
                detected_at=datetime.fromtimestamp(now, UTC),
            ))
        clusters.sort(key=lambda c: (-c.errors, c.service))
        return clusters

    def service_rate(self, service: str, now: float | None = None) -> float | None:
        """The service's error rate over the window (``None`` without traffic)."""
        now = self._newest if now is None else now
        win = [c for s, c in self._service.get(service.strip().lower(), {}).items()
               if now - self.config.window_seconds < s <= now]
        total = sum(c[0] for c in win)
        return sum(c[1] for c in win) / total if total else None
