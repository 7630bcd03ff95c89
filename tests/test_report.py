"""The replay table in narrow and wide terminals: every column fits, and no word (a scenario's
words, an action id, a rule id, an outcome) is ever split across lines."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from rich.console import Console

from safety_governor.config import Settings
from safety_governor.replay import replay
from safety_governor.report import results_table

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    found, _ = replay([ROOT / "scenarios"], Settings(output_dir=tmp_path_factory.mktemp("report")))
    return found


@pytest.mark.parametrize("width", [80, 100, 120, 160])
def test_the_replay_table_fits_the_terminal_and_never_splits_a_word(results, width):
    console = Console(width=width, file=io.StringIO(), color_system=None, legacy_windows=False)
    console.print(results_table(results, compact=width < 110))
    text = console.file.getvalue()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width
    cells = [cell.strip() for line in lines for cell in re.split(r"[│┃]", line)]
    words = {w for r in results for w in [*(r.proposed_action or "").split(), *r.rules, "awaiting", "override"]}
    words |= {w for r in results for w in Path(r.file).stem.replace("_", " ").split()}
    for word in sorted(w for w in words if w):
        assert any(re.search(rf"(?<![\w]){re.escape(word)}(?![\w])", c) for c in cells) or \
            any(word in c for c in cells if "_" in c), f"{word!r} is split at width {width}"
    for outcome in ("awaiting human", "needs override", "executed"):
        assert any(outcome in c for c in cells) or width < 110, outcome
