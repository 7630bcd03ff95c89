"""Drawing frames cheaply: rebuild only the panels whose data changed, write only changed lines.

* ``PanelCache`` keeps each panel's rendered lines with the snapshot parts it was built from
  (compared by identity: a snapshot part is immutable and replaced, never mutated, when its data
  changes). ``Cached`` is the renderable a layout region gets: on a hit it yields the kept lines,
  so a frame where only the telemetry moved renders the telemetry panel and nothing else.
* ``ScreenPainter`` replaces ``Live``'s full repaint: it renders the screen to lines, compares
  each with what the terminal already shows and writes only the lines that differ (cursor moves
  plus the line). An idle dashboard then writes a few hundred bytes a frame instead of the
  whole screen.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.segment import Segment


class PanelCache:
    """Rendered panel lines per region name, valid while the key parts and the size are the same."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[tuple[Any, ...], int, int | None, list[list[Segment]]]] = {}
        self.hits = 0
        self.misses = 0

    def lines(self, name: str, key: tuple[Any, ...], options: ConsoleOptions,
              render: Callable[[], list[list[Segment]]]) -> list[list[Segment]]:
        entry = self._entries.get(name)
        if (entry is not None and entry[1] == options.max_width and entry[2] == options.height
                and len(entry[0]) == len(key) and all(a is b for a, b in zip(entry[0], key, strict=True))):
            self.hits += 1
            return entry[3]
        self.misses += 1
        lines = render()
        self._entries[name] = (key, options.max_width, options.height, lines)
        return lines


class Cached:
    """A panel drawn through a ``PanelCache`` (``cache`` ``None``: drawn every time)."""

    def __init__(self, cache: PanelCache | None, name: str, key: tuple[Any, ...], panel: RenderableType) -> None:
        self.cache = cache
        self.name = name
        self.key = key
        self.panel = panel

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if self.cache is None:
            yield self.panel
            return
        lines = self.cache.lines(self.name, self.key, options,
                                 lambda: console.render_lines(self.panel, options, pad=True))
        new_line = Segment.line()
        for n, line in enumerate(lines):
            yield from line
            if n + 1 < len(lines):
                yield new_line


class ScreenPainter:
    """Paints frames on the alternate screen, writing only the lines that changed."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._shown: list[str] = []
        self._size: tuple[int, int] | None = None
        self.bytes_written = 0

    def __enter__(self) -> ScreenPainter:
        self.console.set_alt_screen(True)
        self.console.show_cursor(False)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.console.show_cursor(True)
        self.console.set_alt_screen(False)

    def invalidate(self) -> None:
        """Forget what the terminal shows (after a resize): the next frame is written whole."""
        self._shown = []

    def paint(self, renderable: RenderableType) -> int:
        """Draw ``renderable`` full-screen; returns the bytes written."""
        console = self.console
        width, height = console.size
        if (width, height) != self._size:
            self._size, self._shown = (width, height), []
            console.file.write("\x1b[2J")
        options = console.options.update(width=width, height=height)
        lines = console.render_lines(renderable, options, pad=True)[:height]
        # Rich's own encoder for one line of segments (styles to escape codes for this terminal).
        encoded = [console._render_buffer(line) for line in lines]
        out = [f"\x1b[{y + 1};1H{text}" for y, text in enumerate(encoded)
               if y >= len(self._shown) or self._shown[y] != text]
        self._shown = encoded
        if not out:
            return 0
        data = "".join(out)
        console.file.write(data)
        console.file.flush()
        self.bytes_written += len(data)
        return len(data)
