"""Rich renderings of replay results (tables for humans; ``--json`` is for machines)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from .replay import ScenarioResult

DECISION_STYLE = {"execute": "bold green", "block_and_escalate": "bold red"}


def results_table(results: list[ScenarioResult]) -> Table:
    table = Table(title="Scenario replay", expand=True, show_lines=False)
    table.add_column("scenario", overflow="fold", ratio=3)
    table.add_column("action", overflow="fold", ratio=2)
    table.add_column("decision", ratio=2)
    table.add_column("rules fired", overflow="fold", ratio=3)
    table.add_column("conf", justify="right")
    table.add_column("approval", ratio=1)
    table.add_column("state", ratio=2)
    table.add_column("naive", justify="center")
    table.add_column("expect", justify="center")
    for r in results:
        expect = {None: Text("–", style="dim"), True: Text("ok", style="green"),
                  False: Text("FAIL", style="bold red")}[r.expectations_met]
        table.add_row(
            r.scenario,
            r.proposed_action or Text("(none)", style="dim"),
            Text(r.decision, style=DECISION_STYLE[r.decision]),
            ", ".join(r.rules) or Text("–", style="dim"),
            f"{r.confidence_initial:.1f}→{r.confidence_final:.1f}",
            r.approval_required,
            r.final_state + (" (APPROVE refused)" if r.approve_refused else ""),
            "exec" if r.baseline_executed else "–",
            expect,
        )
    return table


def summary_panel(summary: Mapping[str, Any], results: list[ScenarioResult]) -> Panel:
    lines = [
        Text.assemble(("Scenarios ", "bold"), str(summary["scenarios"]),
                      ("   blocked ", "bold"), str(summary["blocked"]),
                      ("   executed ", "bold"), str(summary["executed"]),
                      ("   APPROVE refused ", "bold"), str(summary["approve_refused"])),
        Text.assemble(("A naive agent would have executed ", "bold"), str(summary["baseline_executed"]),
                      (" plans; the governor stopped ", "bold"), (str(summary["unsafe_actions_blocked"]), "bold red"),
                      (" of them for a human.", "bold")),
        Text.assemble(("Expectations ", "bold"),
                      (f"{summary['expectations_met']}/{summary['with_expectations']} met", "green"
                       if not summary["expectations_failed"] else "bold red")),
    ]
    for r in results:
        for failure in r.failures:
            lines.append(Text(f"  ✗ {r.scenario}: {failure}", style="red"))
    return Panel(Group(*lines), title="Summary", border_style="cyan")
