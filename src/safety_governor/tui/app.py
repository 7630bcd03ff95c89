"""``demo_rich_agentic.py``: the dashboard's entry, its command line and its two loops.

The terminal loop draws a frame only when something changed (events, the clock's minute, a
resize), at most four times a second; the frame rebuilds only the panels whose data changed and
writes only the lines that changed (``frames``). Keys are read in cbreak mode, and the terminal
is restored on every exit path. ``--no-tui`` (and any run without a terminal, such as CI) runs
the same service headless (``service.headless``) and prints the activity as plain lines.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from ..authority import local_principal
from ..cli import EXIT_OK, report_failure
from ..config import Settings
from ..errors import GovernorError
from .controller import Controller
from ..service.options import (  # noqa: F401  (missing_live_variables re-exported: tests read it here)
    add_mode_arguments,
    check_live,
    missing_live_variables,
    options_from_args,
    setup_logging,
)
from ..service.headless import run_headless
from ..service.runtime import Runtime
from .state import DashboardState, KeyPressed

MAX_FPS = 4.0
PLAIN_DEFAULT_LIMIT = 180.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="demo_rich_agentic.py",
        description="Safety Governor dashboard: live telemetry, detection, the gate and the approval loop. "
                    "Offline by default (fast mode): an embedded store, a simulated production, local "
                    "tickets and a local approval inbox answered from the keyboard.",
        epilog="Keys: up/down (j/k) select · a APPROVE · f FORCE_OVERRIDE (asks for a reason) · h HOLD · "
               "r REJECT · l approve the selection's learned runbook · space continue (present mode) · "
               "esc follow · q quit. Pending approvals survive a restart over the same store. "
               "Example: python demo_rich_agentic.py --present --autopilot")
    add_mode_arguments(parser)
    parser.add_argument("--no-tui", action="store_true", help="plain log lines instead of the dashboard")
    return parser


def initial_state(runtime: Runtime) -> DashboardState:
    o = runtime.options
    flags = tuple(f for f, on in (("autopilot", o.autopilot), ("replay", bool(o.scenarios)),
                                  ("no faults", o.storyline == "none" and not o.scenarios),
                                  ("read-only", o.read_only)) if on)
    now = datetime.now(UTC)
    return DashboardState(mode=o.mode, started_at=now, now=now, flags=flags, user=local_principal())


def run_plain(runtime: Runtime, controller: Controller, out: TextIO) -> int:
    """``--no-tui``: the service's activity as lines (``service.headless``), until the duration,
    the end of the storyline or a cap."""
    o = runtime.options
    limit = o.duration if o.duration is not None else PLAIN_DEFAULT_LIMIT
    print(f"Safety Governor dashboard ({o.mode} mode{', autopilot' if o.autopilot else ''}, no TUI): "
          f"store {runtime.settings.resolved_store_path}", file=out, flush=True)
    return run_headless(runtime, out, limit=limit, until_finished=o.duration is None, on_events=controller.handle)


def run_dashboard(runtime: Runtime, controller: Controller) -> int:
    """The terminal dashboard: a frame when the data changed (at most ``MAX_FPS`` a second),
    built from the panels whose data changed and written as the lines that changed."""
    from rich.console import Console

    from .frames import ScreenPainter
    from .keyboard import KeyReader, cbreak
    from .theme import THEME

    console = Console(theme=THEME)
    fd = sys.stdin.fileno()
    resized = {"flag": True}

    def on_resize(signum: int, frame: Any) -> None:
        resized["flag"] = True  # the loop redraws; a signal handler must not take locks

    previous = signal.signal(signal.SIGWINCH, on_resize) if hasattr(signal, "SIGWINCH") else None
    deadline = time.monotonic() + runtime.options.duration if runtime.options.duration else None
    try:
        with cbreak(fd), ScreenPainter(console) as painter:
            keys = KeyReader(fd, lambda key: runtime.bus.post(KeyPressed(key)), runtime.stop_event)
            keys.start()
            runtime.start()
            last_frame, last_minute, dirty = 0.0, -1, True
            while not controller.quit:
                events = runtime.bus.drain(timeout=1 / MAX_FPS)
                dirty = controller.handle(events) or dirty
                minute = int(time.time() // 60)  # the header's clock and uptime show minutes
                if minute != last_minute or resized["flag"]:
                    if resized["flag"]:
                        painter.invalidate()
                    last_minute, resized["flag"], dirty = minute, False, True
                now = time.monotonic()
                if dirty and now - last_frame >= 1 / MAX_FPS:
                    painter.paint(controller.renderable())
                    last_frame, dirty = now, False
                if deadline is not None and now >= deadline:
                    break
    finally:
        if previous is not None:
            signal.signal(signal.SIGWINCH, previous)
    return EXIT_OK


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    from dotenv import load_dotenv

    load_dotenv()
    parser = build_parser()
    args = parser.parse_args(argv)
    out = out or sys.stdout
    runtime: Runtime | None = None
    handler = None
    try:
        if args.mode == "live":
            check_live(os.environ)
        interactive = not args.no_tui and sys.stdin.isatty() and sys.stdout.isatty()
        if not args.no_tui and not interactive:
            print("not a terminal: running without the dashboard (--no-tui) and with --autopilot",
                  file=sys.stderr, flush=True)
            args.autopilot = True
        options = options_from_args(args, tui=interactive)
        settings = Settings.from_env()
        handler = setup_logging(settings.output_dir)
        runtime = Runtime.build(settings, options)
        # The keys act as this process's OS account, which the approvers file maps to a user.
        controller = Controller(initial_state(runtime), inbox=runtime.inbox, user=local_principal(),
                                resume=runtime.pauser.resume, review=runtime.request_review, freeze=runtime.freeze)
        try:
            code = run_dashboard(runtime, controller) if interactive else run_plain(runtime, controller, out)
        finally:
            runtime.stop()
        print(runtime.summary(), file=out, flush=True)
        return code
    except GovernorError as exc:
        return report_failure(exc)
    except KeyboardInterrupt:
        if runtime is not None:
            runtime.stop()
            print(runtime.summary(), file=out, flush=True)
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if runtime is not None:
            runtime.close()
        if handler is not None:
            logging.getLogger().removeHandler(handler)
            logging.captureWarnings(False)
            handler.close()

