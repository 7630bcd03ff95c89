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


def _outcome(r: ScenarioResult) -> str:
    outcome = STATE_LABEL.get(r.final_state, r.final_state)
    if r.final_state == "pending_approval" and r.approval_required == "force_override":
        outcome = "needs override"
    elif r.final_state == "pending_approval" and r.approval_required == "forbidden":
        outcome = "forbidden"
    if r.approve_refused:
        outcome += " (APPROVE refused)"
    return outcome


def _longest_word(texts: list[str]) -> int:
    return max((len(w) for t in texts for w in t.replace(",", " ").split()), default=1)


def results_table(results: list[ScenarioResult], *, compact: bool = False) -> Table:
    """One row per scenario. ``compact`` (for terminals under ~110 columns) stacks the action, the
    rules and the outcome in one cell, so the table fits 80 columns. Each column is at least as wide
    as its longest word, so no word (an action id, a rule id) is split across lines; words are split
    only on a terminal too narrow for any of them."""
    expect = {None: Text("–", style="dim"), True: Text("✓", style="green"), False: Text("✗", style="bold red")}
    # A file's stem spelled with spaces, so a long name wraps between its words.
    names = [(Path(r.file).stem if r.file else r.scenario).replace("_", " ") for r in results]
    actions = [r.proposed_action or "(none)" for r in results]
    rules = [", ".join(r.rules) or "–" for r in results]
    outcomes = [_outcome(r) for r in results]
    table = Table(title="Scenario replay", expand=True, pad_edge=False)
    table.add_column("scenario", overflow="fold", min_width=max(8, _longest_word(names)))
    if compact:
        table.add_column("action · rules fired · outcome", overflow="fold",
                         min_width=_longest_word(actions + rules + outcomes))
    else:
        table.add_column("action", overflow="fold", min_width=_longest_word(actions))
    table.add_column("gate", no_wrap=True)
    if not compact:
        table.add_column("rules fired", overflow="fold", min_width=_longest_word(rules + ["fired"]))
    table.add_column("conf", justify="right", no_wrap=True)
    if not compact:
        table.add_column("outcome", overflow="fold", min_width=_longest_word(outcomes + ["outcome"]))
        table.add_column("naive", justify="center", no_wrap=True)
    table.add_column("ok", justify="center", no_wrap=True)
    for r, name, action, fired, outcome in zip(results, names, actions, rules, outcomes, strict=True):
        gate = Text(DECISION_LABEL[r.decision], style=DECISION_STYLE[r.decision])
        action_text = Text(action, style="dim" if not r.proposed_action else "")
        rules_text = Text(fired, style="dim" if not r.rules else "")
        if compact:
            details = Text("\n").join([action_text, rules_text, Text(outcome, style="italic")])
            table.add_row(name, details, gate, f"{r.confidence_final:.1f}", expect[r.expectations_met])
        else:
            table.add_row(name, action_text, gate, rules_text,
                          f"{r.confidence_initial:.1f}→{r.confidence_final:.1f}", outcome,
                          "exec" if r.baseline_executed else "–", expect[r.expectations_met])
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
