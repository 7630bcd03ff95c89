"""Cheap frames: a panel is rebuilt only when its part of the snapshot changed, and the painter
writes only the lines that differ from what the terminal shows."""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from rich.console import Console

from safety_governor.tui.frames import PanelCache, ScreenPainter
from safety_governor.tui.dashboard import Dashboard, render_text
from safety_governor.tui.state import DashboardState, LogLine, Metrics, TelemetryView
from safety_governor.tui.theme import THEME

NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)


def state() -> DashboardState:
    return DashboardState(mode="fast", started_at=NOW, now=NOW, activity=("12:00:00 agent  hello",),
                          telemetry=TelemetryView(processed=10, recent=(LogLine(NOW, "api", "GET /x", 200),)))


def console(width: int = 140, height: int = 45) -> Console:
    return Console(file=io.StringIO(), width=width, height=height, force_terminal=True, color_system="truecolor",
                   theme=THEME, legacy_windows=False, _environ={})


def draw(c: Console, s: DashboardState, cache: PanelCache) -> str:
    c.file = io.StringIO()
    c.print(Dashboard(s, cache=cache), height=c.height)
    return c.file.getvalue()


def test_only_the_panels_whose_data_changed_are_rebuilt_and_the_frame_is_the_same_as_without_cache() -> None:
    c, cache, s = console(), PanelCache(), state()
    first = draw(c, s, cache)
    assert cache.misses == 7 and cache.hits == 0
    assert draw(c, replace(s, now=NOW + timedelta(seconds=5)), cache) == first  # same minute: same frame
    assert cache.hits == 7
    moved = replace(s, telemetry=replace(s.telemetry, processed=11))
    draw(c, moved, cache)
    assert cache.misses == 7 + 2  # telemetry and status read it; the other five come from the cache
    more = replace(moved, metrics=Metrics(resolved=1))
    assert "resolved" in render_text(more, width=140, height=45)
    assert draw(c, more, cache) == draw(c, more, PanelCache())  # cached panels draw what fresh ones do


def test_the_painter_writes_the_whole_screen_once_then_only_the_lines_that_changed() -> None:
    c = console()
    painter = ScreenPainter(c)
    s = state()
    full = painter.paint(Dashboard(s))
    assert full > 0
    assert painter.paint(Dashboard(s)) == 0  # nothing changed: nothing written
    changed = painter.paint(Dashboard(replace(s, activity=(*s.activity, "12:00:01 agent  another line"))))
    assert 0 < changed < full / 5
    painter.invalidate()
    assert painter.paint(Dashboard(s)) >= full * 0.9  # after a resize the screen is written whole
