"""The two workers that read the telemetry: ``logs`` (what the live-telemetry view shows) and
``audit`` (detection: opens an incident per error cluster, claimed in the store first, so two
governors never take one incident; it also replays scenarios as if detected)."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..approvals import ApprovalPolicy
from ..models import Incident
from ..pipeline import ReliabilityLayerAgent
from ..ports import Store
from .board import WorkItem
from .detection import Cluster, ErrorClusterDetector, doc_epoch
from .events import LogLine, ServiceRate, TelemetryUpdated, TelemetryView
from .logtail import LogSource
from .worker import Worker, WorkerContext


class LogsWorker(Worker):
    """Tails the telemetry: newest lines, logs per second, error-rate series and per-service rates."""

    role = "logs"

    def __init__(self, ctx: WorkerContext, tail: LogSource, *, recent: int = 40, service_window: float = 30.0,
                 retention: Any = None) -> None:
        super().__init__(ctx)
        self.tail = tail
        self.retention = retention  # LogRetention on the embedded store: pruned between tail reads
        self.recent: deque[LogLine] = deque(maxlen=recent)
        self.processed = 0
        self.service_window = service_window
        self._buckets: dict[int, list[int]] = {}
        self._seconds: dict[tuple[str, int], list[int]] = {}
        self._arrivals: deque[tuple[float, int]] = deque()
        self._last_post = 0.0

    def step(self) -> None:
        docs = self.tail.poll()
        bucket_s = self.ctx.config.bucket_seconds
        for doc in docs:
            try:
                status = int(str(doc.get("response", "0")))
            except ValueError:
                continue
            epoch = doc_epoch(doc.get("timestamp"))
            if epoch is None:
                continue
            at = datetime.fromtimestamp(epoch, UTC)
            error = int(status >= 400)
            bucket = self._buckets.setdefault(int(epoch // bucket_s), [0, 0])
            bucket[0] += 1
            bucket[1] += error
            counts = self._seconds.setdefault((str(doc.get("service", "?")), int(epoch)), [0, 0])
            counts[0] += 1
            counts[1] += error
            self.recent.append(LogLine(at=at, service=str(doc.get("service", "?")),
                                       request=str(doc.get("request", "")), status=status))
        self.processed += len(docs)
        now = time.time()
        self._arrivals.append((now, len(docs)))
        while self._arrivals and now - self._arrivals[0][0] > 10:
            self._arrivals.popleft()
        # The view's data changes at the bucket rate: posting faster would only repaint faster.
        if now - self._last_post >= self.ctx.config.bucket_seconds:
            self.ctx.bus.post(TelemetryUpdated(self.view(now)))
            self._last_post = now
        if self.retention is not None:
            self.retention.tick()
        self.ctx.stop.wait(self.ctx.config.logs_interval)

    def view(self, now: float) -> TelemetryView:
        cfg = self.ctx.config
        current = int(now // cfg.bucket_seconds)
        first = current - cfg.series_points + 1
        for key in [k for k in self._buckets if k < first]:
            del self._buckets[key]
        series = []
        for key in range(first, current + 1):
            total, errors = self._buckets.get(key, (0, 0))
            series.append(errors / total if total else 0.0)
        horizon = int(now - self.service_window)
        for key in [k for k in self._seconds if k[1] < horizon]:
            del self._seconds[key]
        per_service: dict[str, list[int]] = {}
        for (service, _), (total, errors) in self._seconds.items():
            acc = per_service.setdefault(service, [0, 0])
            acc[0] += total
            acc[1] += errors
        services = tuple(sorted((ServiceRate(s, t, e / t if t else 0.0) for s, (t, e) in per_service.items()),
                                key=lambda r: (-r.error_rate, r.service)))
        total = sum(t for t, _ in per_service.values())
        errors = sum(e for _, e in per_service.values())
        span = (now - self._arrivals[0][0]) if len(self._arrivals) > 1 else 0.0
        arrived = sum(n for _, n in list(self._arrivals)[1:])
        return TelemetryView(processed=self.processed, per_second=arrived / span if span > 0 else 0.0,
                             error_rate=errors / total if total else 0.0, series=tuple(series),
                             bucket_seconds=cfg.bucket_seconds, services=services, recent=tuple(self.recent))

    def close(self) -> None:
        self.tail.close()


# --- audit ------------------------------------------------------------------------------------


@dataclass
class ReplayItem:
    """A scenario incident the audit worker opens as if detected (``--scenario``)."""

    incident: Incident
    pipeline: ReliabilityLayerAgent
    approvals: ApprovalPolicy
    store: Store


class AuditWorker(Worker):
    """Scans the telemetry for error clusters and opens incidents (and replays scenarios)."""

    role = "audit"

    def __init__(self, ctx: WorkerContext, tail: LogSource, *, pipeline: ReliabilityLayerAgent,
                 approvals: ApprovalPolicy, detector: ErrorClusterDetector | None = None,
                 replays: list[ReplayItem] | None = None, replay_interval: float = 6.0) -> None:
        super().__init__(ctx)
        self.tail = tail
        self.pipeline = pipeline
        self.approvals = approvals
        self.detector = detector or ErrorClusterDetector(ctx.config.detection)
        self.replays: deque[ReplayItem] = deque(replays or [])
        self.replay_interval = replay_interval
        self._next_replay = time.monotonic() + 1.0

    @property
    def replays_left(self) -> int:
        return len(self.replays)

    def step(self) -> None:
        self.detector.observe(self.tail.poll())
        if self.ctx.draining.is_set():  # draining: no new incident
            self.ctx.stop.wait(self.ctx.config.scan_interval)
            return
        now = time.time()
        skip = self.ctx.board.open_services(time.monotonic(), self.ctx.config.cooldown_seconds)
        for cluster in self.detector.scan(now, skip=skip):
            self.open_incident(cluster)
        if self.replays and time.monotonic() >= self._next_replay:
            self.open_replay(self.replays.popleft())
            self._next_replay = time.monotonic() + self.replay_interval
        self.ctx.stop.wait(self.ctx.config.scan_interval)

    def open_incident(self, cluster: Cluster) -> WorkItem | None:
        base = f"inc-{cluster.detected_at:%Y%m%d-%H%M%S}-{cluster.service}"
        for n in range(1, 6):
            incident = cluster.to_incident(base if n == 1 else f"{base}-{n}")
            if self.ctx.store.claim_incident(incident, self.ctx.owner):
                break
        else:
            self.ctx.activity("audit", f"{cluster.service}: cluster already claimed by another governor")
            return None
        item = WorkItem(incident=incident, pipeline=self.pipeline, approvals=self.approvals,
                        baseline_error_rate=cluster.baseline_rate, due=time.monotonic())
        self._add(item, f"detected {incident.severity} {incident.service}: {incident.summary}")
        return item

    def open_replay(self, replay: ReplayItem) -> WorkItem | None:
        if not replay.store.claim_incident(replay.incident, self.ctx.owner):
            return None
        item = WorkItem(incident=replay.incident, pipeline=replay.pipeline, approvals=replay.approvals,
                        source="scenario", verify_live=False, due=time.monotonic())
        self._add(item, f"replaying {replay.incident.id} ({replay.incident.severity} {replay.incident.service}): "
                        f"{replay.incident.summary}")
        return item

    def _add(self, item: WorkItem, text: str) -> None:
        self.ctx.board.add(item)
        self.ctx.publish(item)
        self.ctx.metrics(self.ctx.counters.bump(detected=1))
        self.ctx.activity("audit", text, incident_id=item.incident.id)

    def close(self) -> None:
        self.tail.close()
