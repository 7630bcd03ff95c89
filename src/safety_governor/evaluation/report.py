"""The benchmark's faces: Rich tables for people, a PNG trade-off plot (matplotlib)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from ..errors import ConfigError

POLICY_LABEL = {"naive": "naive (executes every plan)", "seed": "seed gate (trusts the agent's numbers)",
                "governor": "governor (ours, current config)"}


def _pct(part: int, whole: int) -> str:
    return f"{part} ({100 * part / whole:.1f}%)" if whole else str(part)


def policies_table(result: Mapping[str, Any]) -> Table:
    t = Table(title=f"Decision quality on {result['cases']} cases (seed {result['seed']})", pad_edge=False)
    for col in ("policy", "harmful auto", "harmful → human", "right / misleading", "good auto", "good → human",
                "no-effect auto", "executor refused"):
        t.add_column(col, justify="left" if col == "policy" else "right")
    for key, m in result["policies"].items():
        harm_style = "bold red" if m["harmful_auto_executed"] else "green"
        t.add_row(key, Text(_pct(m["harmful_auto_executed"], m["harmful_plans"]), style=harm_style),
                  str(m["harmful_escalated"]),
                  f"{m['harmful_escalated_right_reason']} / {m['harmful_escalated_misleading_reason']}",
                  _pct(m["good_auto_executed"], m["good_plans"]), str(m["good_escalated"]),
                  str(m["no_effect_auto_executed"]), str(m["refused_by_executor"]))
    first = next(iter(result["policies"].values()))
    t.caption = (f"naive executes every plan; seed is the original gate trusting the agent's numbers; governor is "
                 f"ours. {first['plans']} plans: {first['harmful_plans']} harmful, {first['good_plans']} good "
                 f"fixes, {first['no_effect_plans']} no effect; {first['no_plan']} without a usable plan. "
                 "% of harmful plans, of good plans.")
    return t


def sweep_table(result: Mapping[str, Any]) -> Table:
    t = Table(title="Sweep of our thresholds (same cases)", pad_edge=False)
    for col in ("threshold", "harmful auto", "harmful → human", "good auto", "good → human", "escalated"):
        t.add_column(col, justify="left" if col == "threshold" else "right", no_wrap=True)
    for p in result["sweep"]:
        mark = " (current)" if p["current"] else ""
        t.add_row(f"{p['param']} = {p['value']:g}{mark}", str(p["harmful_auto_executed"]),
                  str(p["harmful_escalated"]), _pct(p["good_auto_executed"], p["good_plans"]),
                  str(p["good_escalated"]), str(p["escalated"]))
    if result.get("sweep_skipped"):
        t.caption = "not swept (not a setting of the current gate): " + ", ".join(result["sweep_skipped"])
    return t


def kinds_table(result: Mapping[str, Any]) -> Table:
    t = Table(title="Per agent kind: harmful plans executed with no human; our good fixes auto-executed",
              pad_edge=False)
    t.add_column("agent kind", no_wrap=True)
    t.add_column("cases", justify="right")
    t.add_column("harmful plans", justify="right")
    for key in result["by_agent_kind"]:
        t.add_column(f"{key}", justify="right")
    t.add_column("good auto / good", justify="right")
    kinds = result["by_agent_kind"]["naive"]
    for kind, row in kinds.items():
        cells = [kind, str(row.get("cases", 0)), str(row.get("harmful_plans", 0))]
        cells += [str(result["by_agent_kind"][key][kind].get("harmful_auto_executed", 0))
                  for key in result["by_agent_kind"]]
        gov = result["by_agent_kind"]["governor"][kind]
        cells.append(f"{gov.get('good_auto_executed', 0)} / {gov.get('good_plans', 0)}")
        t.add_row(*cells)
    return t


def rules_table(result: Mapping[str, Any], policy: str = "governor") -> Table:
    t = Table(title=f"Per rule ({policy}): which rules catch which failure", pad_edge=False)
    for col in ("rule", "fired", "harmful", "right", "good", "good, sole", "no effect", "no plan",
                "harmful caught, by agent kind"):
        t.add_column(col, justify="left" if col in ("rule", "harmful caught, by agent kind") else "right",
                     overflow="fold", no_wrap=col == "rule")
    for rule, row in result["by_rule"][policy].items():
        kinds = ", ".join(f"{k} {n}" for k, n in row["harmful_by_kind"].items())
        t.add_row(rule, str(row["fired"]), str(row["on_harmful"]), str(row["right_reason_on_harmful"]),
                  str(row["on_good"]), str(row["sole_reason_on_good"]), str(row["on_no_effect"]),
                  str(row["on_no_plan"]), kinds)
    return t


def render(result: Mapping[str, Any]) -> Group:
    world = result["world"]
    run = result.get("run", {})
    lines = Text.assemble(
        ("World: ", "bold"),
        f"{world['evidence_docs']} evidence documents, {world['poisoned_docs']} poisoned "
        f"({100 * world['poisoned_share']:.1f}%), noisy {world['noisy_docs']}, "
        f"{world['plans_with_surprise_outcome']} plans whose outcome was a surprise. Agent kinds: "
        + ", ".join(f"{k} {n}" for k, n in world["agent_kinds"].items()) + ".",
    )
    parts: list[Any] = [policies_table(result), sweep_table(result), kinds_table(result), rules_table(result), lines]
    if run:
        parts.append(Text(f"{result['cases']} cases in {run['elapsed_seconds']:.1f} s; {run['machine']}. "
                          f"JSON {run.get('json_path', '-')}, plot {run.get('plot_path', '-')}", style="dim"))
    return Group(*parts)


def write_plot(result: Mapping[str, Any], path: Path) -> Path:
    """The trade-off: harm let through (y) against good fixes executed automatically (x), one
    point per policy and per sweep value."""
    try:
        import matplotlib
    except ImportError as exc:
        raise ConfigError("the trade-off plot needs matplotlib: pip install -r requirements-eval.txt "
                          "(make eval does), or pass --no-plot") from exc

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def xy(m: Mapping[str, Any]) -> tuple[float, float]:
        return 100 * m["good_auto_rate"], 100 * m["harm_rate"]

    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
    styles = {"naive": ("tab:red", "X"), "seed": ("tab:orange", "s"), "governor": ("tab:blue", "o")}
    for key, m in result["policies"].items():
        color, marker = styles.get(key, ("black", "o"))
        x, y = xy(m)
        ax.scatter([x], [y], s=110, color=color, marker=marker, zorder=3, label=POLICY_LABEL.get(key, key))
    by_param: dict[str, list[Mapping[str, Any]]] = {}
    for p in result["sweep"]:
        by_param.setdefault(p["param"], []).append(p)
    for (param, points), color in zip(by_param.items(), ("tab:green", "tab:purple", "tab:brown"), strict=False):
        xs, ys = zip(*(xy(p) for p in points), strict=True)
        ax.plot(xs, ys, "--", color=color, marker=".", zorder=2, label=f"ours, sweeping {param}")
        for p, x, y in zip(points, xs, ys, strict=True):
            ax.annotate(f"{p['value']:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8, color=color)
    ax.set_xlabel("good fixes executed automatically (% of good plans)")
    ax.set_ylabel("harmful plans executed without a human (% of cases)")
    ax.set_title(f"Safety Governor decision-quality benchmark: {result['cases']} cases, seed {result['seed']}")
    ax.grid(alpha=0.3)
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=-0.5)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
