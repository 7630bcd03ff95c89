"""The decision-quality benchmark (``python -m safety_governor eval``).

A seeded world (``world``) draws incidents whose true cause and per-action outcomes are hidden
from every policy; agents of several kinds (``agents``) propose plans through the product's own
tools and pipeline (``runner``); the policies (``policies``) decide on the same cases; the
metrics (``metrics``) count what each let through and what each sent to a human; ``report``
renders tables and the trade-off plot.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..config import Settings
from ..errors import InputError
from ..machine import describe_machine
from .metrics import summarise
from .runner import DEFAULT_SWEEP, EvalRunner, world_config
from .world import AGENT_KINDS, WorldConfig

__all__ = ["AGENT_KINDS", "DEFAULT_SWEEP", "EvalRunner", "WorldConfig", "parse_assignments", "run_benchmark", "world_config"]


def parse_assignments(text: str, option: str) -> dict[str, list[float]]:
    """``a=1,b=2/3`` -> ``{"a": [1.0], "b": [2.0, 3.0]}``; a bad item is a one-line error (exit 2)."""
    out: dict[str, list[float]] = {}
    for item in (i.strip() for i in text.split(",") if i.strip()):
        name, sep, values = item.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            out[name.strip()] = [float(v) for v in values.split("/")]
        except ValueError:
            raise InputError(f"{option}: expected NAME=NUMBER[/NUMBER...], got {item!r}") from None
    if not out:
        raise InputError(f"{option}: nothing given")
    return out


def run_benchmark(
    settings: Settings,
    *,
    overrides: Mapping[str, Any] | None = None,
    noise_free: bool = False,
    world_path: Path | None = None,
    sweep: dict[str, Sequence[float]] | None = None,
    out_dir: Path | None = None,
    plot: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Generate the world, run every case, and return the result document (the ``--json``
    shape). With ``out_dir`` it also writes ``eval_results.json`` and, with ``plot``,
    ``eval_tradeoff.png`` there."""
    runner = EvalRunner(settings, world_path=world_path, overrides=overrides, noise_free=noise_free, sweep=sweep)
    machine = describe_machine()  # before the run: its load average is the one the run started under
    records, elapsed = runner.run(progress)
    result = summarise(records, runner.table, runner.sweep, runner.config.model_dump())
    result["sweep_skipped"] = runner.sweep_skipped
    result["run"] = {"elapsed_seconds": round(elapsed, 2), "machine": machine,
                     "gate_policy_version": runner.policy.version, "config_hash": runner.policy.config_hash,
                     "world_file": str(runner.world_path)}
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        if plot:
            from .report import write_plot

            result["run"]["plot_path"] = str(write_plot(result, out_dir / "eval_tradeoff.png"))
        json_path = out_dir / "eval_results.json"
        result["run"]["json_path"] = str(json_path)
        json_path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result
