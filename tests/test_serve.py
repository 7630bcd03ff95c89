"""``python -m safety_governor serve``: the incident service headless, as real processes.

SIGTERM drains and exits 0; a process killed with SIGKILL leaves its pending incidents durable,
and the next ``serve`` over the same store resumes each exactly once and executes it once.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from safety_governor.cli import build_parser
from safety_governor.service.headless import event_line
from safety_governor.service.events import Activity, IncidentUpdated, IncidentView

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


class Served:
    """One ``serve --json`` process; its stdout lines are read on a thread."""

    def __init__(self, output: Path, *args: str) -> None:
        env = {**os.environ, "GOVERNOR_OUTPUT_DIR": str(output), "PYTHONUNBUFFERED": "1"}
        env.pop("GOVERNOR_STORE_PATH", None)
        self.proc = subprocess.Popen([sys.executable, "-m", "safety_governor", "serve", "--json", *args], cwd=ROOT,
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[dict] = queue.Queue()
        self.seen: list[dict] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))  # every stdout line is JSON

    def wait_for(self, match, timeout: float = 90.0) -> dict:
        for seen in self.seen:
            if match(seen):
                return seen
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                assert self.proc.poll() is None, f"serve exited early: {self.proc.stderr.read()}"  # type: ignore[union-attr]
                continue
            self.seen.append(line)
            if match(line):
                return line
        raise AssertionError(f"timed out; seen: {self.seen[-10:]}")

    def stop(self, sig: int) -> int:
        self.proc.send_signal(sig)
        code = self.proc.wait(90)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return code


def events(output: Path, kind: str) -> list[dict]:
    lines = (output / "workflow_events.jsonl").read_text(encoding="utf-8").splitlines()
    return [d for d in map(json.loads, lines) if d.get("kind") == kind]


def test_serve_takes_the_dashboards_mode_options_and_json() -> None:
    args = build_parser().parse_args(["serve", "--present", "--autopilot", "--json", "--duration", "5",
                                      "--storyline", "none", "--rate", "10"])
    assert (args.mode, args.autopilot, args.json, args.duration, args.storyline, args.rate) == (
        "present", True, True, 5.0, "none", 10.0)


def test_a_json_line_is_printed_per_activity_and_per_incident_state_change_only() -> None:
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    view = IncidentView(id="inc-1", service="api", severity="high", summary="s", state="ANALYZING",
                        detected_at=now, updated_at=now)
    states: dict[str, str] = {}
    first = event_line(IncidentUpdated(view), json_lines=True, last_states=states)
    assert json.loads(first)["state"] == "ANALYZING"  # type: ignore[arg-type]
    assert event_line(IncidentUpdated(view), json_lines=True, last_states=states) is None
    activity = Activity(at=now, source="agent", text="hello", incident_id="inc-1")
    assert json.loads(event_line(activity, json_lines=True, last_states=states))["text"] == "hello"  # type: ignore[arg-type]
    assert event_line(activity, json_lines=False, last_states=states).endswith("agent  hello")  # type: ignore[union-attr]
    assert event_line(IncidentUpdated(view), json_lines=False, last_states={}) is None


def test_serve_drains_on_sigterm_and_exits_0_leaving_a_blocked_incident_pending(tmp_path: Path) -> None:
    served = Served(tmp_path, "--rate", "30")
    blocked = served.wait_for(lambda d: d.get("type") == "incident" and d["state"] == "PENDING_APPROVAL")
    assert served.stop(signal.SIGTERM) == 0
    drained = [d for d in served.seen if d.get("type") == "activity" and "SIGTERM: draining" in d["text"]]
    assert len(drained) == 1
    states = [d["state"] for d in served.seen if d.get("type") == "incident" and d["id"] == blocked["id"]]
    assert states[-1] == "PENDING_APPROVAL"  # nothing ran without a reply
    assert "Safety Governor:" in served.proc.stderr.read()  # type: ignore[union-attr]


def test_after_sigkill_the_next_serve_resumes_each_pending_incident_once_and_executes_it_once(
        tmp_path: Path) -> None:
    first = Served(tmp_path, "--rate", "30")
    critical = first.wait_for(lambda d: d.get("type") == "incident" and d["severity"] == "critical"
                              and d["state"] == "PENDING_APPROVAL")
    pending = {d["id"] for d in first.seen if d.get("type") == "incident" and d["state"] == "PENDING_APPROVAL"}
    first.stop(signal.SIGKILL)
    assert not events(tmp_path, "resumed")

    second = Served(tmp_path, "--autopilot", "--storyline", "none", "--rate", "30")
    for incident_id in pending:
        second.wait_for(lambda d, i=incident_id: d.get("type") == "incident" and d["id"] == i
                        and d["state"] in ("RESOLVED", "REJECTED", "ESCALATED"))
    assert second.stop(signal.SIGTERM) == 0
    resumed = [e["incident_id"] for e in events(tmp_path, "resumed")]
    assert sorted(resumed) == sorted(pending)  # each pending incident resumed exactly once
    executions = [e for e in events(tmp_path, "execution") if e.get("incident_id") == critical["id"]]
    assert len(executions) == 1
