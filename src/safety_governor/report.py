"""Rich renderings of replay results (tables for humans; ``--json`` is for machines)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from .replay import ScenarioResult

DECISION_STYLE = {"execute": "bold green", "block_and_escalate": "bold red"}


DECISION_LABEL = {"execute": "EXECUTE", "block_and_escalate": "BLOCK"}
STATE_LABEL = {"executed": "executed", "pending_approval": "awaiting human", "rejected": "rejected",
               "held": "held", "execution_refused": "refused by executor", "audit_failed": "audit failed"}


def results_table(results: list[ScenarioResult], *, compact: bool = False) -> Table:
    """One row per scenario. ``compact`` (for terminals under ~110 columns) drops the naive-agent
    column and shows only the final confidence."""
    table = Table(title="Scenario replay", expand=True, pad_edge=False)
    table.add_column("scenario", overflow="fold", ratio=4, min_width=16)
    table.add_column("action", overflow="fold", ratio=3, min_width=10)
    table.add_column("gate", no_wrap=True)
    table.add_column("rules fired", overflow="fold", ratio=3, min_width=10)
    table.add_column("conf", justify="right", no_wrap=True)
    table.add_column("outcome", overflow="fold", ratio=2, min_width=8)
    if not compact:
        table.add_column("naive", justify="center", no_wrap=True)
    table.add_column("ok", justify="center", no_wrap=True)
    for r in results:
        expect = {None: Text("–", style="dim"), True: Text("✓", style="green"),
                  False: Text("✗", style="bold red")}[r.expectations_met]
        outcome = STATE_LABEL.get(r.final_state, r.final_state)
        if r.final_state == "pending_approval" and r.approval_required == "force_override":
            outcome = "needs override"
        elif r.final_state == "pending_approval" and r.approval_required == "forbidden":
            outcome = "forbidden"
        if r.approve_refused:
            outcome += " (APPROVE refused)"
        cells = [
            Path(r.file).stem if r.file else r.scenario,
            r.proposed_action or Text("(none)", style="dim"),
            Text(DECISION_LABEL[r.decision], style=DECISION_STYLE[r.decision]),
            ", ".join(r.rules) or Text("–", style="dim"),
            f"{r.confidence_final:.1f}" if compact else f"{r.confidence_initial:.1f}→{r.confidence_final:.1f}",
            outcome,
            *([] if compact else ["exec" if r.baseline_executed else "–"]),
            expect,
        ]
        table.add_row(*cells)
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
