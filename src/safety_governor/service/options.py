"""The service's run options, shared by every face: the dashboard, ``--no-tui`` and ``serve``.

``add_mode_arguments`` adds the mode switches (``--fast``/``--present``/``--live``, autopilot,
scenarios, storyline, timings) to a parser; ``options_from_args`` turns them into ``Options``
(a bad value is one ``InputError`` line); ``check_live`` names what ``--live`` still needs.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
from pathlib import Path

from ..errors import ConfigError, InputError
from ..redaction import RedactingFormatter
from .runtime import Options

# Live mode's integrations and the variables each needs (an inner tuple: any one of them).
# Live mode reads real telemetry, so it needs a live store; every other integration is chosen on
# its own (DESIGN: "live Elasticsearch with local approvals is a valid setup"): unset, it stays
# local (offline agent, local tickets, local inbox); partly set, its missing variables are named.
# ELASTIC_API_KEY is optional for the store, as for `seed`, load_to_elastic.py and `assess --live`
# (a cluster with security off needs none); the Kibana agent, which always needs it, names it.
LIVE_STORE: tuple[str | tuple[str, ...], ...] = (("ELASTIC_URL", "ELASTIC_CLOUD_ID"),)
OPTIONAL_INTEGRATIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Jira tickets", ("JIRA_URL", "JIRA_EMAIL", "JIRA_API_TOKEN", "JIRA_PROJECT_KEY")),
    ("Slack approvals", ("SLACK_BOT_TOKEN", "SLACK_CHANNEL")),
)
AGENT_REQUIREMENTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "kibana": ("Kibana Agent Builder agent", ("ELASTIC_KIBANA_URL", "ELASTIC_API_KEY", "ELASTIC_AGENT_ID")),
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


def add_mode_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every face of the service takes (the dashboard adds ``--no-tui``)."""
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
                        help="replay scenario files or folders through the service (repeatable)")
    parser.add_argument("--autopilot", action="store_true",
                        help="a scripted on-call answers approvals (shows the refusal, then the override)")
    parser.add_argument("--duration", type=float, metavar="SECONDS", help="exit after SECONDS")
    parser.add_argument("--storyline", choices=("default", "none"), default="default",
                        help="simulated faults: the default storyline, or steady traffic only")
    parser.add_argument("--hold", type=float, metavar="SECONDS",
                        help="how long an auto-execution waits for HOLD (default 2.5, 5 in present mode)")
    parser.add_argument("--pause-timeout", type=float, default=20.0, metavar="SECONDS",
                        help="present mode: continue by itself after SECONDS (default 20)")
    parser.add_argument("--rate", type=float, default=24.0, metavar="N",
                        help="simulated requests per second (default 24)")
    parser.add_argument("--seed", type=int, default=7, help="simulation seed (default 7)")
    parser.add_argument("--read-only", action="store_true",
                        help="a viewer of a store another governor works: telemetry only, no lock, no writes")


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
                   hold_seconds=args.hold, pause_seconds=args.pause_timeout, rate=args.rate, seed=args.seed,
                   read_only=args.read_only)


def setup_logging(output_dir: Path) -> logging.Handler | None:
    """Every log record (ours at INFO, libraries' at WARNING) and Python warnings go to
    ``output/tui.log``: nothing may write to the screen the dashboard draws on, nor between
    the lines ``serve`` prints."""
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
