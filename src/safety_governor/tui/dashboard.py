"""The whole screen: the panels in named regions for the terminal's size, and ``render_text``.

``Dashboard`` lays the panels of ``panels`` out (two columns from 140x34, one below) and draws
each through the panel cache (``frames.Cached``), so a frame rebuilds only the panels whose part
of the snapshot changed.
"""

from __future__ import annotations

import io

from rich.console import Console, ConsoleOptions, RenderResult
from rich.layout import Layout

from .frames import Cached, PanelCache
from .panels import (
    WIDE,
    WIDE_HEIGHT,
    ActivityPanel,
    ApprovalsPanel,
    FooterBar,
    HeaderBar,
    MetricsPanel,
    QueuePanel,
    ReasoningPanel,
    StatusPanel,
    TelemetryPanel,
)
from .state import DashboardState


class Dashboard:
    """The full screen for one snapshot; the layout follows the terminal size.

    Args:
        state: the snapshot.
        cache: keeps each panel's rendered lines while its part of the snapshot is the same
            (``frames.PanelCache``); ``None`` renders every panel (tests, benchmarks).
    """

    def __init__(self, state: DashboardState, cache: PanelCache | None = None) -> None:
        self.state = state
        self.cache = cache

    def panels(self, compact: bool) -> dict[str, Cached]:
        """Each region's panel with the snapshot parts it reads (its cache key)."""
        s, c = self.state, self.cache
        t, selected = s.telemetry, s.selected_incident
        return {
            "telemetry": Cached(c, "telemetry", (t,), TelemetryPanel(s)),
            "queue": Cached(c, "queue", (s.incidents, s.selected), QueuePanel(s, wide=not compact)),
            "activity": Cached(c, "activity", (s.activity,), ActivityPanel(s)),
            "status": Cached(c, "status", (s.integrations, t, s.metrics, s.workers), StatusPanel(s, compact=compact)),
            "metrics": Cached(c, "metrics", (s.metrics,), MetricsPanel(s, compact=compact)),
            "reasoning": Cached(c, "reasoning", (selected,), ReasoningPanel(s, compact=compact)),
            "approvals": Cached(c, "approvals", (selected,), ApprovalsPanel(s)),
        }

    def layout(self, width: int, height: int) -> Layout:
        s = self.state
        root = Layout(name="root")
        header = Layout(HeaderBar(s), name="header", size=1)
        footer = Layout(FooterBar(s), name="footer", size=1)
        body = Layout(name="body")
        if width >= WIDE and height >= WIDE_HEIGHT:
            p = self.panels(compact=False)
            left = Layout(name="left", ratio=9)
            right = Layout(name="right", ratio=7)
            left.split_column(
                Layout(p["telemetry"], name="telemetry", size=max(6, min(12, height // 4))),
                Layout(p["queue"], name="queue", ratio=1, minimum_size=5),
                Layout(p["activity"], name="activity", ratio=1, minimum_size=4),
            )
            right.split_column(
                Layout(p["status"], name="status", size=len(s.integrations) + 5),
                Layout(p["metrics"], name="metrics", size=6),
                Layout(p["reasoning"], name="reasoning", ratio=3),
                Layout(p["approvals"], name="approvals", ratio=2, minimum_size=4),
            )
            body.split_row(left, right)
        else:
            p = self.panels(compact=True)
            top = Layout(name="top", size=6 if height >= 30 else 5)
            top.split_row(Layout(p["status"], name="status", ratio=1),
                          Layout(p["metrics"], name="metrics", ratio=1))
            bottom = Layout(name="bottom", ratio=5, minimum_size=6)
            bottom.split_row(Layout(p["reasoning"], name="reasoning", ratio=1),
                             Layout(p["approvals"], name="approvals", ratio=1))
            body.split_column(
                top,
                Layout(p["telemetry"], name="telemetry", size=4 if height < 30 else 7),
                Layout(p["queue"], name="queue", ratio=4, minimum_size=5),
                bottom,
            )
        root.split_column(header, body, footer)
        return root

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.layout(options.max_width, options.height or console.height)


def render_text(state: DashboardState, *, width: int = 100, height: int = 30) -> str:
    """The dashboard as plain text (tests and benchmarks)."""
    from .theme import THEME

    console = Console(record=True, width=width, height=height, color_system=None, file=io.StringIO(),
                      theme=THEME, legacy_windows=False, _environ={})
    console.print(Dashboard(state), height=height)
    return console.export_text()
