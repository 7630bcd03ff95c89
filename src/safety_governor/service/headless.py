"""The service without a screen: ``python -m safety_governor serve`` and the dashboard's ``--no-tui``.

Each event the workers post becomes one line on stdout: the activity as plain lines, or with
``--json`` one JSON object per line (``{"type": "activity", ...}`` and ``{"type": "incident",
...}`` whenever an incident changes state). SIGTERM (and Ctrl-C) drains: no new incident is
opened and no new step starts, the steps running finish, everything waiting stays durable in the
store for the next start, and the process exits 0.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from .events import Activity, IncidentUpdated, format_activity
from .runtime import Runtime

SERVE_DESCRIPTION = (
    "Run the incident service headless: detection, the gate, approvals, execution, verification and "
    "learning, with the dashboard's modes (offline fast mode by default). Prints one line per event "
    "(--json: JSON lines). SIGTERM drains (running steps finish, pending approvals stay durable) "
    "and exits 0.")


def event_line(event: Any, *, json_lines: bool, last_states: dict[str, str]) -> str | None:
    """The line ``event`` prints as, or ``None`` (``last_states`` remembers each incident's state)."""
    if isinstance(event, Activity):
        if not json_lines:
            return format_activity(event)
        return json.dumps({"type": "activity", "at": event.at.isoformat(), "source": event.source,
                           "level": event.level, "incident_id": event.incident_id, "text": event.text})
    if json_lines and isinstance(event, IncidentUpdated):
        view = event.view
        if last_states.get(view.id) == view.state:
            return None
        last_states[view.id] = view.state
        return json.dumps({"type": "incident", "at": view.updated_at.isoformat(), "id": view.id,
                           "service": view.service, "severity": view.severity, "state": view.state,
                           "ticket": view.ticket, "decision": view.reasoning.decision if view.reasoning else None,
                           "action": view.reasoning.proposed_action if view.reasoning else None,
                           "outcome": view.outcome})
    return None


class Drain:
    """SIGTERM and SIGINT ask the loop to drain (installed only in the main thread)."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Drain:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, _frame: Any) -> None:
        self.signal_name = signal.Signals(signum).name
        self.requested.set()  # the loop drains; a handler must not take locks

    def __exit__(self, *_exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


def run_headless(runtime: Runtime, out: TextIO, *, json_lines: bool = False, limit: float | None = None,
                 until_finished: bool = False, on_events: Callable[[list[Any]], None] | None = None) -> int:
    """Start ``runtime`` and print its events until ``limit`` seconds, the end of the storyline
    (``until_finished``) or a drain signal; then drain and stop. Returns the exit code (0)."""
    last_states: dict[str, str] = {}

    def show(events: list[Any]) -> None:
        for event in events:
            line = event_line(event, json_lines=json_lines, last_states=last_states)
            if line is not None:
                print(line, file=out, flush=True)
        if on_events is not None:
            on_events(events)

    with Drain() as drain:
        runtime.start()
        start = time.monotonic()
        while not drain.requested.is_set():
            show(runtime.bus.drain(timeout=0.5))
            elapsed = time.monotonic() - start
            if limit is not None and elapsed >= limit:
                break
            if until_finished and elapsed > 1.5 and runtime.finished():
                break
        if drain.requested.is_set():
            runtime.drain(f"{drain.signal_name or 'signal'}: draining")
        # A drain lets the running steps finish (a live agent phase may take tens of seconds).
        runtime.stop(timeout=60.0 if drain.requested.is_set() else 5.0)
        show(runtime.bus.drain())
    return 0


def serve(settings: Any, options: Any, *, json_lines: bool, out: TextIO, err: TextIO) -> int:
    """``python -m safety_governor serve``: build the service for ``options`` (``--live`` first
    checks what it needs), run it headless until a drain signal or ``options.duration``, and
    print the summary (stderr with ``--json``, so stdout stays JSON lines)."""
    import logging
    import os

    from .options import check_live, setup_logging

    if options.mode == "live":
        check_live(os.environ)
    handler = setup_logging(settings.output_dir)
    runtime = Runtime.build(settings, options)
    try:
        if not json_lines:
            print(f"Safety Governor service ({options.mode} mode{', autopilot' if options.autopilot else ''}, "
                  f"headless): store {settings.resolved_store_path} · pid {os.getpid()}", file=out, flush=True)
        code = run_headless(runtime, out, json_lines=json_lines, limit=options.duration)
        print(runtime.summary(), file=err if json_lines else out, flush=True)
        return code
    finally:
        runtime.close()
        if handler is not None:
            logging.getLogger().removeHandler(handler)
            logging.captureWarnings(False)
            handler.close()
