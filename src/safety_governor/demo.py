"""The offline walkthrough behind ``make demo`` when no terminal dashboard is wanted:
seed the embedded store, replay ``scenarios/`` and print a readable report."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.panel import Panel
from rich.rule import Rule

from .bootstrap import open_store
from .config import Settings
from .knowledge import load_knowledge_file, seed_store
from .replay import replay
from .report import results_table, summary_panel


def run_demo(settings: Settings, scenarios: Path, console: Console | None = None) -> int:
    console = console or Console()
    console.print(Panel.fit(
        "[bold]Safety Governor[/] — offline walkthrough\n"
        "An agent proposes a remediation; the governor grounds it against its own evidence, "
        "policies and live logs, and a deterministic Python gate decides.",
        border_style="cyan"))
    data = settings.data_dir / "sample_data.json"
    knowledge = load_knowledge_file(data)
    store = open_store(settings)
    try:
        with console.status("Seeding the embedded store…"):
            report = seed_store(store, knowledge, source=str(data))
    finally:
        store.close()
    counts = ", ".join(f"{n} {index}" for index, n in report.counts.items())
    console.print(f"Seeded [bold]{settings.resolved_store_path}[/]: {counts}")
    console.print(Rule("Replaying scenarios (each in its own isolated store)"))
    with console.status("Replaying…"):
        results, summary = replay([scenarios], settings)
    console.print(results_table(results, compact=console.width < 110))
    console.print(summary_panel(summary, results))
    console.print(f"Audit trail: [bold]{settings.output_dir}[/]/*.jsonl")
    return 0 if summary["expectations_failed"] == 0 else 1
