"""The dashboard's renderables: each builds its panel from one immutable ``DashboardState``.

``dashboard.Dashboard`` picks a layout for the terminal size (one column of compact panels below 140x34,
two columns from there) in named regions: ``header``, ``status``, ``metrics``, ``telemetry``,
``queue``, ``activity``, ``reasoning``, ``approvals``, ``footer``. Each panel reads the size
Layout gives it and renders only what fits, so a frame costs the same with 10 incidents or
10,000. Panels are built from plain ``Text`` lines with known widths rather than ``Table``:
measuring tables was most of a frame's cost.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rich.console import Console, ConsoleOptions, RenderResult
from rich.panel import Panel
from rich.text import Text

from .state import AWAITING_HUMAN, TERMINAL_STATES, DashboardState, IncidentView, ThreadEntry

SPARK = "▁▂▃▄▅▆▇█"
WIDE = 140  # columns (and WIDE_HEIGHT rows) from which the two-column layout is used
WIDE_HEIGHT = 34
SEV_SHORT = {"low": "low", "medium": "med", "high": "high", "critical": "CRIT"}
NEWLINE = Text("\n")


def _panel(body: object, title: str, *, subtitle: str | None = None, height: int | None = None) -> Panel:
    # ``height``: a renderable that yields its panel must pass it on (Rich resets the height
    # for yielded renderables), or the panel would not fill its layout region.
    return Panel(body, title=Text(title, style="panel.title"), title_align="left", border_style="panel.border",
                 subtitle=subtitle, subtitle_align="right", padding=(0, 1), height=height)


def _lines(lines: Sequence[Text]) -> Text:
    """Lines that already fit, as one ``Text`` (cheaper to render than a group of them)."""
    text = NEWLINE.join(lines)
    text.no_wrap = True
    text.overflow = "ellipsis"
    text.end = ""
    return text


def _fit(value: str, width: int) -> str:
    """``value`` padded or cut (with an ellipsis) to exactly ``width`` cells (ASCII-ish text)."""
    if width <= 0:
        return ""
    return value.ljust(width) if len(value) <= width else value[: width - 1] + "…"


def _uptime(state: DashboardState) -> str:
    # Minutes: the header changes once a minute, so an idle dashboard repaints at the data's rate.
    seconds = max(0, int((state.now - state.started_at).total_seconds()))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _pct(value: float) -> str:
    return f"{value * 100:.1f}%" if value < 0.1 else f"{value * 100:.0f}%"


def sparkline(series: Iterable[float], width: int, *, ceiling: float = 0.25, hot: float = 0.1) -> Text:
    """Error rates as block characters, right-aligned (the newest at the right edge); bars at or
    above ``hot`` are styled ``telemetry.spark``."""
    values = list(series)[-width:] if width > 0 else []
    top = max([ceiling, *values])
    text = Text(" " * (width - len(values)), end="")
    run_style, run = "", []
    for value in values:
        level = min(len(SPARK) - 1, int(value / top * (len(SPARK) - 1) + 0.5)) if top > 0 else 0
        style = "telemetry.spark" if value >= hot else "telemetry.calm"
        if style != run_style and run:
            text.append("".join(run), style=run_style)
            run = []
        run_style = style
        run.append(SPARK[level])
    if run:
        text.append("".join(run), style=run_style)
    return text


def state_text(state: str) -> Text:
    return Text(state, style=f"state.{state.lower()}")


def severity_text(severity: str, *, short: bool = False) -> Text:
    return Text(SEV_SHORT.get(severity, severity) if short else severity, style=f"sev.{severity}")


def labelled(console: Console, rows: Iterable[tuple[str, Text]], width: int, label_width: int) -> list[Text]:
    """``label value`` lines; a value that does not fit wraps under itself (hanging indent)."""
    out: list[Text] = []
    value_width = max(8, width - label_width - 1)
    indent = " " * (label_width + 1)
    for label, value in rows:
        head = Text(_fit(label, label_width) + " ", style="label", end="")
        if value.cell_len <= value_width and "\n" not in value.plain:
            out.append(head + value)
            continue
        for n, line in enumerate(value.wrap(console, value_width)):
            out.append((head if n == 0 else Text(indent, end="")) + line)
    return out


# --- header and footer ----------------------------------------------------------------------


class HeaderBar:
    def __init__(self, state: DashboardState) -> None:
        self.state = state

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        s = self.state
        narrow = options.max_width < 100
        waiting = sum(1 for v in s.incidents[-200:] if v.state in AWAITING_HUMAN)
        text = Text(" SAFETY GOVERNOR ", style="header", end="")
        text.append(f" {s.mode.upper()} ", style="header.mode")
        for flag in s.flags:
            text.append(f" {flag} ", style="header.flag")
        if narrow:
            text.append(f"  {s.now:%H:%M} UTC  {len(s.incidents)} incidents", style="header")
        else:
            text.append(f"  {s.now:%H:%M} UTC  up {_uptime(s)}  incidents {len(s.incidents)}", style="header")
        if s.frozen:  # the kill switch outranks everything else on the line
            text.append(f"  {s.frozen} ", style="header.alert")
        if waiting:
            text.append(f"  {waiting} waiting " if narrow else f"  {waiting} awaiting a human ", style="header.alert")
        if options.max_width > text.cell_len:
            text.append(" " * (options.max_width - text.cell_len), style="header")
        text.no_wrap = True
        text.overflow = "ellipsis"
        yield text


KEYS = (("↑↓", "select"), ("a", "APPROVE"), ("f", "FORCE_OVERRIDE"), ("h", "HOLD"), ("r", "REJECT"))
KEYS_SHORT = (("↑↓", "select"), ("a", "APPROVE"), ("f", "OVERRIDE"), ("h", "HOLD"), ("r", "REJECT"))


def footer_keys(mode: str, wide: bool) -> tuple[tuple[str, str], ...]:
    """The keys the footer lists: ``space`` only where it does something (present mode), and
    ``l`` (approve the selection's learned runbook) where the line has room for it."""
    present = mode == "present"
    if wide:
        extra = (("l", "runbook" if present else "approve runbook"),) + ((("space", "continue"),) if present else ())
        return (*KEYS, *extra, ("F", "freeze"), ("q", "quit"))
    return (*KEYS_SHORT, ("spc", "go on") if present else ("l", "runbook"), ("q", "quit"))


class FooterBar:
    """Keys, or present mode's pause banner, or the FORCE_OVERRIDE reason being typed."""

    def __init__(self, state: DashboardState) -> None:
        self.state = state

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        s = self.state
        if s.prompt is not None:
            text = Text(f" {s.prompt.label}: ", style="prompt", end="")
            text.append(s.prompt.text + "▌", style="prompt")
            text.append("   Enter submit · Esc cancel", style="prompt")
        elif s.banner:
            text = Text(f" ⏸ {s.banner} ", style="banner", end="")
        else:
            text = Text(" ", style="footer", end="")
            for key, label in footer_keys(s.mode, options.max_width >= 100):
                text.append(key, style="footer.key")
                text.append(f" {label}  ", style="footer")
            if s.hint:
                text.append(f"│ {s.hint}", style="footer.hint")
        if options.max_width > text.cell_len:
            text.append(" " * (options.max_width - text.cell_len), style=text.style)
        text.no_wrap = True
        text.overflow = "ellipsis"
        yield text


# --- status, metrics ------------------------------------------------------------------------


class StatusPanel:
    """Integrations (store, tickets, agent, approvals, executor), logs processed, knowledge base,
    worker health."""

    def __init__(self, state: DashboardState, *, compact: bool = False) -> None:
        self.state = state
        self.compact = compact

    def _workers(self) -> Text:
        text = Text(end="")
        for w in self.state.workers:
            text.append(f"{w.name}{'✓' if w.ok else '✗'} ", style="ok" if w.ok else "bad")
        bad = [w for w in self.state.workers if not w.ok]
        if bad:
            text.append(f" {bad[0].name}: {bad[0].detail}", style="bad")
        return text

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        s = self.state
        t = s.telemetry
        if self.compact:
            marks = Text(end="")
            for i in s.integrations:
                if i.role in ("store", "tickets", "agent", "approvals"):
                    marks.append("✓" if i.ok else "✗", style="ok" if i.ok else "bad")
                    marks.append(f"{i.role} ")
            if not s.integrations:
                marks.append("starting…", style="muted")
            logs = Text.assemble((f"{t.processed:,}", "value"), f" logs · {t.per_second:.0f}/s", end="")
            kb = Text.assemble(("kb ", "label"), (f"+{s.metrics.kb_learned}", "value"), " learned",
                               (f" ({s.metrics.kb_pending} to review)" if s.metrics.kb_pending else "", "warn"),
                               " · ", (str(s.metrics.kb_runbooks), "value"), " runbooks", end="")
            body = _lines([marks, logs, kb, self._workers()])
        else:
            rows: list[tuple[str, Text]] = []
            for i in s.integrations:
                rows.append((i.role, Text.assemble(("✓ " if i.ok else "✗ ", "ok" if i.ok else "bad"), (i.name, "value"),
                                                   (f"  {i.detail}", "muted"), end="")))
            rows.append(("logs", Text.assemble((f"{t.processed:,}", "value"), f" processed · {t.per_second:.0f}/s",
                                               end="")))
            rows.append(("knowledge", Text.assemble((f"+{s.metrics.kb_learned}", "value"), " learned",
                                                    (f" ({s.metrics.kb_pending} to review, key l)"
                                                     if s.metrics.kb_pending else "", "warn"),
                                                    " · ", (str(s.metrics.kb_runbooks), "value"), " runbooks",
                                                    end="")))
            rows.append(("workers", self._workers()))
            body = _lines([Text(_fit(label, 9) + " ", style="label", end="") + value for label, value in rows])
        yield _panel(body, "System status", height=options.height)


METRICS = (("unsafe blocked", "blocked", "unsafe_blocked", "metric.bad"),
           ("auto-executed", "auto-exec", "auto_executed", "metric.good"),
           ("overrides", "overrides", "overrides", "metric.warn"),
           ("refusals", "refusals", "refusals", "metric.bad"),
           ("approved", "approved", "approved", "value"),
           ("rejected", "rejected", "rejected", "value"),
           ("resolved", "resolved", "resolved", "metric.good"),
           ("escalated", "escalated", "escalated", "metric.warn"))


class MetricsPanel:
    """Unsafe actions blocked, auto-executed, overrides, refusals, and the other outcomes."""

    def __init__(self, state: DashboardState, *, compact: bool = False) -> None:
        self.state = state
        self.compact = compact

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        m = self.state.metrics
        columns = 3 if self.compact else 2
        cell = max(8, (options.max_width - 4) // columns)
        lines = []
        for start in range(0, len(METRICS), columns):
            line = Text(end="")
            for long, short, name, style in METRICS[start : start + columns]:
                value = getattr(m, name)
                number = f"{value:>2} " if self.compact else f"{value:>3} "
                line.append(number, style=style if value else "muted")
                line.append(_fit(short if self.compact else long, cell - len(number)), style="label")
            lines.append(line)
        yield _panel(_lines(lines), "Operational metrics", height=options.height)


# --- telemetry ------------------------------------------------------------------------------


class TelemetryPanel:
    """Error-rate sparkline, per-service rates (when there is room) and the newest log lines."""

    def __init__(self, state: DashboardState) -> None:
        self.state = state

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        t = self.state.telemetry
        rows = max(1, (options.height or 8) - 2)
        inner = max(10, options.max_width - 4)
        label = Text.assemble(("err ", "label"), (f"{_pct(t.error_rate):>5} ", "value"), end="")
        lines: list[Text] = [label + sparkline(t.series, inner - label.cell_len)]
        if rows >= 5 and t.services:
            svc = Text(end="")
            for rate in t.services:
                style = "log.5xx" if rate.error_rate >= 0.15 else "log.4xx" if rate.error_rate >= 0.07 else "muted"
                svc.append(f"{rate.service} ", style="label")
                svc.append(f"{_pct(rate.error_rate)}  ", style=style)
            lines.append(svc)
        room = rows - len(lines)
        recent = list(t.recent)[-room:] if room > 0 else []
        path_width = max(4, inner - 34)
        for line in recent:
            style = "log.5xx" if line.status >= 500 else "log.4xx" if line.status >= 400 else "log.ok"
            lines.append(Text.assemble((f"{line.at:%H:%M:%S} ", "muted"), (f"{line.status} ", style),
                                       (f"{_fit(line.service, 20)} ", "label"),
                                       (_fit(line.request, path_width), style if line.status >= 400 else ""), end=""))
        title = f"Live telemetry · {t.per_second:.0f} logs/s · {t.bucket_seconds}s buckets"
        yield _panel(_lines(lines), title, height=options.height)


# --- queue ----------------------------------------------------------------------------------


class QueuePanel:
    """The remediation queue, newest first, windowed around the selection."""

    def __init__(self, state: DashboardState, *, wide: bool = False) -> None:
        self.state = state
        self.wide = wide

    def _columns(self, width: int) -> list[int]:
        # ticket, service, sev, state, action, conf (wide only)
        if self.wide:
            fixed = [8, 18, 8, 16, 0, 9]
        else:
            fixed = [8, 0, 4, 16, 0]
        gaps = len(fixed) - 1
        free = max(0, width - sum(fixed) - gaps)
        if self.wide:
            fixed[4] = max(8, free)
        else:
            fixed[1] = max(6, free * 2 // 5)
            fixed[4] = max(6, free - fixed[1])
        return fixed

    def _row(self, view: IncidentView, widths: list[int], selected: bool) -> Text:
        r = view.reasoning
        state = view.state + (" !" if view.error else "")
        cells: list[tuple[str, str]] = [
            (_fit(view.ticket or "–", widths[0]), "value" if view.ticket else "muted"),
            (_fit(view.service, widths[1]), ""),
            (_fit(view.severity if self.wide else SEV_SHORT.get(view.severity, view.severity), widths[2]),
             f"sev.{view.severity}"),
            (_fit(state, widths[3]), f"state.{view.state.lower()}"),
            (_fit(r.proposed_action or "(none)" if r else "…", widths[4]),
             "gate.block" if r and r.decision == "block_and_escalate" else "muted" if r is None else ""),
        ]
        if self.wide:
            conf = f"{r.confidence_initial:.1f}→{r.confidence_final:.1f}" if r else ""
            cells.append((conf.rjust(widths[5]), "muted"))
        text = Text(style="selected" if selected else "", end="")
        for n, (value, style) in enumerate(cells):
            if n:
                text.append(" ")
            text.append(value, style=style)
        return text

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        s = self.state
        order = s.display_order()
        rows = max(1, (options.height or 10) - 3)
        widths = self._columns(max(20, options.max_width - 4))
        index = next((i for i, v in enumerate(order) if v.id == s.selected), 0)
        start = max(0, min(index - rows // 2, len(order) - rows))
        window = order[start : start + rows]
        names = ["ticket", "service", "sev", "state", "action", "conf"]
        header = Text(" ".join(_fit(n, w) if n != "conf" else n.rjust(w) for n, w in zip(names, widths)),
                      style="label", end="")
        lines = [header] + [self._row(v, widths, v.id == s.selected) for v in window]
        if not order:
            lines.append(Text("watching the telemetry for error clusters…", style="muted", end=""))
        active = sum(1 for v in order if v.state not in TERMINAL_STATES)
        more = f"{start} above · {len(order) - start - len(window)} below" if len(order) > rows else None
        yield _panel(_lines(lines), f"Remediation queue · {active} active · {len(order)} total", subtitle=more,
                     height=options.height)


# --- reasoning and approvals ----------------------------------------------------------------


def _selected_title(view: IncidentView | None, prefix: str) -> str:
    if view is None:
        return prefix
    return f"{prefix} · {view.ticket or view.id}"


class ReasoningPanel:
    """Plan, evidence counts, rules fired, confidence shift and outcome of the selection."""

    def __init__(self, state: DashboardState, *, compact: bool = False) -> None:
        self.state = state
        self.compact = compact

    def rows(self, view: IncidentView) -> list[tuple[str, Text]]:
        c = self.compact
        head = Text.assemble(state_text(view.state), " ", severity_text(view.severity, short=c), end="")
        if not c:
            head.append(f"  {view.id}", style="muted")
        rows: list[tuple[str, Text]] = [("state", head)]
        r = view.reasoning
        if r is None:
            rows.append(("plan", Text("analysing…" if view.state == "ANALYZING" else "waiting for the agent",
                                      style="muted")))
        else:
            passed = r.decision == "execute"
            verdict = ("PASSED" if passed else "BLOCKED") if c else r.decision.upper()
            decision = Text(verdict, style="gate.execute" if passed else "gate.block")
            if r.rules:
                decision.append(" " + ", ".join(rule for rule, _ in r.rules), style="bad")
            runbooks = f"  from {', '.join(r.retrieved[:2])}" if r.retrieved and not c else ""
            rows.append(("plan", Text.assemble((r.proposed_action or "(no plan)", "value"), (runbooks, "muted"))))
            rows.append(("gate", decision))
            if not c:
                rows.extend(("", Text(f"{rule}: {message}", style="muted")) for rule, message in r.rules[:3])
            if c:
                evidence = Text.assemble((str(r.supporting), "ok"), " for · ",
                                         (str(r.contradicting), "bad" if r.contradicting else "muted"),
                                         f" against · {r.coverage:.0%} cov")
            else:
                conflicts = ", ".join(r.policy_conflicts) or "none"
                evidence = Text.assemble((str(r.supporting), "ok"), " supporting · ",
                                         (str(r.contradicting), "bad" if r.contradicting else "muted"),
                                         f" contradicting · coverage {r.coverage:.0%} · policy conflicts: {conflicts}")
            rows.append(("evid" if c else "evidence", evidence))
            delta = r.confidence_final - r.confidence_initial
            confidence = Text.assemble((f"{r.confidence_initial:.1f} → {r.confidence_final:.1f}", "value"),
                                       (f" ({delta:+.1f})", "bad" if delta < 0 else "ok"))
            if not c:
                confidence.append(f"  {r.context_mode} · {r.tool_calls} tool calls", style="muted")
            rows.append(("conf" if c else "confidence", confidence))
            if r.approval_required != "none" and view.state in AWAITING_HUMAN:
                rows.append(("needs", Text(r.approval_required.upper(), style="warn")))
            rows.extend(("agent", Text(e, style="warn")) for e in r.errors[:2])
        if view.error:
            rows.append(("error", Text(f"{view.error} (attempt {view.attempts})", style="bad")))
        if view.outcome:
            rows.append(("outcome", Text(view.outcome, style="ok" if view.state == "RESOLVED" else "warn")))
        if view.learned:
            pending = view.learned_status == "pending_review"
            rows.append(("runbook" if not c else "rbk", Text.assemble(
                (view.learned, "value"), (f" {view.learned_status or ''}", "warn" if pending else "ok"),
                (" · l approves" if pending else "", "muted"), end="")))
        rows.append(("summary", Text(view.summary, style="muted")))
        if view.preview and not c:
            rows.append(("preview", Text(view.preview, style="muted")))
        return rows

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        view = self.state.selected_incident
        if view is None:
            yield _panel(Text("No incident selected.", style="muted"), "Governor reasoning", height=options.height)
            return
        width = max(10, options.max_width - 4)
        lines = labelled(console, self.rows(view), width, 7 if self.compact else 10)
        if options.height:
            lines = lines[: max(1, options.height - 2)]
        title = f"{_selected_title(view, 'Reasoning' if self.compact else 'Governor reasoning')} {view.service}"
        yield _panel(_lines(lines), title, height=options.height)


def _entry_text(entry: ThreadEntry) -> Text:
    text = Text.assemble((f"{entry.at:%H:%M:%S} ", "muted"), (f"{entry.author}: ", "thread.reply"), end="")
    if entry.kind == "request":
        text.append(entry.text, style="thread.request")
    elif entry.kind == "notify":
        text.append(entry.text, style="thread.notify")
    else:
        text.append(entry.text, style="value")
        if entry.outcome:
            mark = {"accepted": "✓", "refused": "✗", "unauthorized": "✗", "invalid": "✗"}.get(entry.outcome, "·")
            text.append(f"  {mark} {entry.outcome}", style=f"thread.{entry.outcome}")
    return text


class ApprovalsPanel:
    """The approval thread of the selection: the request, replies and what the rules made of them."""

    def __init__(self, state: DashboardState) -> None:
        self.state = state

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        view = self.state.selected_incident
        title = _selected_title(view, "Approval thread")
        if view is None or not view.thread:
            note = "no approval requested" if view is not None else "select an incident"
            yield _panel(Text(note, style="muted"), title, height=options.height)
            return
        rows = max(1, (options.height or 8) - 2)
        width = max(10, options.max_width - 4)
        picked: list[Text] = []
        for entry in reversed(view.thread):  # the newest entries are the ones that fit
            wrapped = list(_entry_text(entry).wrap(console, width))
            if len(picked) + len(wrapped) > rows:
                if not picked:
                    picked = wrapped[-rows:]
                break
            picked = wrapped + picked
        yield _panel(_lines(picked), title, height=options.height)


class ActivityPanel:
    """The newest lines of what the workers did."""

    def __init__(self, state: DashboardState) -> None:
        self.state = state

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        rows = max(1, (options.height or 6) - 2)
        lines = [Text(line, style="bad" if "✗" in line else "", end="") for line in self.state.activity[-rows:]]
        body = _lines(lines) if lines else Text("quiet", style="muted")
        yield _panel(body, "Activity", height=options.height)
