"""Each guardrail blocks in the dashboard too: the guardrail scenarios replayed through the real
dashboard under tmux, read back from the pane; then the ``F`` key freezes it and the header says
who froze it and why, the same state the CLI reads from the store."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from test_tui_smoke import ROOT, Pane, pytestmark  # noqa: F401  (tmux marks: slow, skipped without tmux)

SCENARIOS = ("60_frozen_confident_agent_blocked", "63_change_freeze_window_blocks", "66_rate_limit_per_service",
             "70_circuit_open_after_failed_verifications")
RULES = ("frozen", "change_freeze", "rate_limited", "circuit_open")


@pytest.fixture
def pane():
    p = Pane(f"sg-guard-{uuid.uuid4().hex[:8]}")
    yield p
    subprocess.run(["tmux", "-L", p.socket, "kill-server"], capture_output=True, timeout=10)


def test_each_guardrail_blocks_in_the_dashboard_and_the_f_key_freezes_it(pane, tmp_path: Path):
    output = tmp_path / "output"
    files = " ".join(f"--scenario scenarios/{name}.json" for name in SCENARIOS)
    # COLUMNS/LINES from the test's environment would override the pane's size.
    script = (f"cd {shlex.quote(str(ROOT))} && unset COLUMNS LINES "
              f"&& export GOVERNOR_OUTPUT_DIR={shlex.quote(str(output))} "
              f"&& {shlex.quote(sys.executable)} demo_rich_agentic.py {files}; echo EXIT=$?; sleep 60")
    pane.tmux("new-session", "-d", "-s", "smoke", "-x", "170", "-y", "50", script)

    def blocked_on_every_rule(screen: str) -> bool:
        gated = [line for line in screen.splitlines() if "gate BLOCKED rollback_last_deploy" in line]
        return all(any(f": {rule};" in line for line in gated) for rule in RULES)

    screen = pane.wait_for(blocked_on_every_rule, timeout=150)
    assert "audit     ✓ jsonl" in screen and "guardrails✓" in screen

    pane.tmux("send-keys", "-t", "smoke", "F")
    pane.tmux("send-keys", "-t", "smoke", "-l", "failover drill")
    pane.tmux("send-keys", "-t", "smoke", "Enter")
    screen = pane.wait_for(lambda s: "FROZEN by oncall" in s.splitlines()[0], timeout=45)
    assert "failover drill" in screen.splitlines()[0]
    status = subprocess.run([sys.executable, "-m", "safety_governor", "freeze", "status", "--json"], cwd=ROOT,
                            env={"PATH": "/usr/bin:/bin", "GOVERNOR_OUTPUT_DIR": str(output)},
                            capture_output=True, text=True, timeout=60)
    last = json.loads(status.stdout)
    assert last["frozen"] and last["last"]["by"] == "oncall" and last["last"]["reason"] == "failover drill"

    pane.tmux("send-keys", "-t", "smoke", "q")
    assert "EXIT=0" in pane.wait_for(lambda s: "EXIT=" in s, timeout=60)
    kinds = [json.loads(line).get("kind") for line in (output / "workflow_events.jsonl").read_text().splitlines()]
    assert "guardrail_freeze" in kinds
