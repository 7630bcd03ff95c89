"""``demo_rich_agentic.py``: the dashboard's entry, its command line and its two loops.

The terminal loop pulls frames with ``Live(get_renderable=…)`` and redraws only when something
changed (events, the clock's second, a resize), at most four times a second. Keys are read in
cbreak mode, and the terminal is restored on every exit path. ``--no-tui`` (and any run without
a terminal, such as CI) prints the activity as plain lines instead.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from ..cli import EXIT_OK, report_failure
from ..config import Settings
from ..errors import ConfigError, GovernorError, InputError
from ..redaction import RedactingFormatter
from .controller import Controller
from ..service.runtime import Options, Runtime
from .state import Activity, DashboardState, KeyPressed, format_activity

MAX_FPS = 4.0
PLAIN_DEFAULT_LIMIT = 180.0

# Live mode's integrations and the variables each needs (an inner tuple: any one of them).
# Live mode reads real telemetry, so it needs a live store; every other integration is chosen on
# its own (DESIGN: "live Elasticsearch with local approvals is a valid setup"): unset, it stays
# local (offline agent, local tickets, local inbox); partly set, its missing variables are named.
LIVE_STORE: tuple[str | tuple[str, ...], ...] = (("ELASTIC_URL", "ELASTIC_CLOUD_ID"), "ELASTIC_API_KEY")
OPTIONAL_INTEGRATIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Jira tickets", ("JIRA_URL", "JIRA_EMAIL", "JIRA_API_TOKEN", "JIRA_PROJECT_KEY")),
    ("Slack approvals", ("SLACK_BOT_TOKEN", "SLACK_CHANNEL")),
)
AGENT_REQUIREMENTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "kibana": ("Kibana Agent Builder agent", ("ELASTIC_KIBANA_URL", "ELASTIC_AGENT_ID")),
    "openai": ("OpenAI-compatible agent", ("OPENAI_BASE_URL", "OPENAI_MODEL")),
}


def missing_live_variables(environ: Mapping[str, str]) -> list[tuple[str, str]]:
    """``(variable, integration)`` for every variable live mode needs and the environment lacks."""

    def unset(name: str) -> bool:
        return not environ.get(name, "").strip()

    missing = []
    for need in LIVE_STORE:
        names = need if isinstance(need, tuple) else (need,)
        if all(unset(n) for n in names):
            missing.append((" or ".join(names), "Elasticsearch store"))
    backend = environ.get("AGENT_BACKEND", "").strip().lower()
    if backend in AGENT_REQUIREMENTS:
        integration, needs = AGENT_REQUIREMENTS[backend]
        missing.extend((n, integration) for n in needs if unset(n))
    for integration, needs in OPTIONAL_INTEGRATIONS:
        if any(not unset(n) for n in needs):
            missing.extend((n, integration) for n in needs if unset(n))
    return missing


def check_live(environ: Mapping[str, str]) -> None:
    """Raise ``ConfigError`` naming each variable live mode needs and the environment lacks
    (never a value). What the adapters then find wrong is reported by ``bootstrap`` itself."""
    missing = missing_live_variables(environ)
    if missing:
        parts = "; ".join(f"{name} ({integration})" for name, integration in missing)
        raise ConfigError(f"--live needs {len(missing)} more setting(s): {parts}. Set them in .env (see "
                          ".env.example) or run without --live for the offline dashboard")


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
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--fast", dest="mode", action="store_const", const="fast",
                      help="offline, no pauses (the default)")
    mode.add_argument("--present", dest="mode", action="store_const", const="present",
                      help="presenter mode: slower, pauses at the critical block, the refused APPROVE and "
                           "the override until space (or --pause-timeout)")
    mode.add_argument("--live", dest="mode", action="store_const", const="live",
                      help="real telemetry from Elasticsearch; the agent, Jira and Slack when configured")
    parser.set_defaults(mode="fast")
    parser.add_argument("--scenario", action="append", default=[], metavar="PATH",
                        help="replay scenario files or folders through the dashboard (repeatable)")
    parser.add_argument("--autopilot", action="store_true",
                        help="a scripted on-call answers approvals (shows the refusal, then the override)")
    parser.add_argument("--duration", type=float, metavar="SECONDS", help="exit after SECONDS")
    parser.add_argument("--no-tui", action="store_true", help="plain log lines instead of the dashboard")
    parser.add_argument("--storyline", choices=("default", "none"), default="default",
                        help="simulated faults: the default storyline, or steady traffic only")
    parser.add_argument("--hold", type=float, metavar="SECONDS",
                        help="how long an auto-execution waits for HOLD (default 2.5, 5 in present mode)")
    parser.add_argument("--pause-timeout", type=float, default=20.0, metavar="SECONDS",
                        help="present mode: continue by itself after SECONDS (default 20)")
    parser.add_argument("--rate", type=float, default=24.0, metavar="N",
                        help="simulated requests per second (default 24)")
    parser.add_argument("--seed", type=int, default=7, help="simulation seed (default 7)")
    return parser


def _positive(value: float | None, name: str) -> None:
    if value is not None and value <= 0:
        raise InputError(f"{name} must be positive, got {value:g}")


def options_from_args(args: argparse.Namespace, *, tui: bool) -> Options:
    _positive(args.duration, "--duration")
    _positive(args.rate, "--rate")
    _positive(args.pause_timeout, "--pause-timeout")
    if args.hold is not None and args.hold < 0:
        raise InputError(f"--hold cannot be negative, got {args.hold:g}")
    return Options(mode=args.mode, autopilot=args.autopilot, duration=args.duration, tui=tui,
                   scenarios=tuple(Path(p) for p in args.scenario), storyline=args.storyline,
                   hold_seconds=args.hold, pause_seconds=args.pause_timeout, rate=args.rate, seed=args.seed)


def setup_logging(output_dir: Path) -> logging.Handler | None:
    """Every log record (ours at INFO, libraries' at WARNING) and Python warnings go to
    ``output/tui.log``: nothing may write to the screen the dashboard draws on."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.FileHandler(output_dir / "tui.log", encoding="utf-8")
    except OSError:
        return None
    # Credential-shaped text in any message or traceback is redacted before it reaches the file.
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(threadName)s %(name)s %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger("safety_governor.tui").setLevel(logging.INFO)
    logging.captureWarnings(True)
    return handler


def initial_state(runtime: Runtime) -> DashboardState:
    o = runtime.options
    flags = tuple(f for f, on in (("autopilot", o.autopilot), ("replay", bool(o.scenarios)),
                                  ("no faults", o.storyline == "none" and not o.scenarios)) if on)
    now = datetime.now(UTC)
    return DashboardState(mode=o.mode, started_at=now, now=now, flags=flags, user=runtime.settings.local_user)


def run_plain(runtime: Runtime, controller: Controller, out: TextIO) -> int:
    """``--no-tui``: the activity as lines, until the duration, the end of the storyline or a cap."""
    o = runtime.options
    limit = o.duration if o.duration is not None else PLAIN_DEFAULT_LIMIT
    print(f"Safety Governor dashboard ({o.mode} mode{', autopilot' if o.autopilot else ''}, no TUI): "
          f"store {runtime.settings.resolved_store_path}", file=out, flush=True)
    runtime.start()
    start = time.monotonic()

    def show(events: list[Any]) -> None:
        for event in events:
            if isinstance(event, Activity):
                print(format_activity(event), file=out, flush=True)
        controller.handle(events)

    while True:
        show(runtime.bus.drain(timeout=0.5))
        elapsed = time.monotonic() - start
        if elapsed >= limit:
            break
        if o.duration is None and elapsed > 1.5 and runtime.finished():
            break
    runtime.stop()
    show(runtime.bus.drain())
    return EXIT_OK


def run_dashboard(runtime: Runtime, controller: Controller) -> int:
    """The terminal dashboard: frames on change, at most ``MAX_FPS`` a second."""
    from rich.console import Console
    from rich.live import Live

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
        with cbreak(fd), Live(console=console, screen=True, auto_refresh=False, transient=False,
                              redirect_stdout=False, redirect_stderr=False,
                              get_renderable=controller.renderable) as live:
            keys = KeyReader(fd, lambda key: runtime.bus.post(KeyPressed(key)), runtime.stop_event)
            keys.start()
            runtime.start()
            last_frame, last_second, dirty = 0.0, -1, True
            while not controller.quit:
                events = runtime.bus.drain(timeout=1 / MAX_FPS)
                dirty = controller.handle(events) or dirty
                second = int(time.time())
                if second != last_second or resized["flag"]:
                    last_second, resized["flag"], dirty = second, False, True
                now = time.monotonic()
                if dirty and now - last_frame >= 1 / MAX_FPS:
                    live.refresh()
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
        controller = Controller(initial_state(runtime), inbox=runtime.inbox, user=settings.local_user,
                                resume=runtime.pauser.resume, review=runtime.request_review)
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

