"""Smoke test in a real terminal: ``make demo``'s command under tmux, read back from the pane."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")]


class Pane:
    def __init__(self, socket: str) -> None:
        self.socket = socket

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], check=True, capture_output=True, text=True,
                              timeout=10).stdout

    def text(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "smoke")

    def wait_for(self, check, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.text()
            if check(screen):
                return screen
            time.sleep(0.5)
        raise AssertionError(f"the pane never showed what was expected; last screen:\n{screen}")


@pytest.fixture
def pane(tmp_path: Path):
    p = Pane(f"sg-smoke-{uuid.uuid4().hex[:8]}")
    yield p
    subprocess.run(["tmux", "-L", p.socket, "kill-server"], capture_output=True, timeout=10)


def test_make_demos_command_detects_gates_and_resolves_an_incident_in_a_real_terminal_and_quits_cleanly(pane, tmp_path):
    command = f"{shlex.quote(sys.executable)} demo_rich_agentic.py --fast --autopilot --duration 40"
    script = (f"cd {shlex.quote(str(ROOT))} && export GOVERNOR_OUTPUT_DIR={shlex.quote(str(tmp_path / 'output'))} "
              f"&& before=$(stty -g) && {command}; code=$?; "
              f"[ \"$before\" = \"$(stty -g)\" ] && echo TERMINAL-RESTORED; echo EXIT=$code; sleep 60")
    pane.tmux("new-session", "-d", "-s", "smoke", "-x", "100", "-y", "30", script)

    def checkout_rolled_back(screen: str) -> bool:
        """The storyline's first fault (a bad checkout-web release): detected, ticketed, passed by
        the gate, rolled back and verified: its queue row reads RESOLVED with rollback_last_deploy."""
        rows = [line for line in screen.splitlines() if "SRE-1" in line and "checkout-web" in line]
        return any("RESOLVED" in row and "rollback_last" in row for row in rows)

    screen = pane.wait_for(checkout_rolled_back, timeout=60)
    assert "SAFETY GOVERNOR" in screen and "FAST" in screen and "autopilot" in screen
    assert "Live telemetry" in screen and "System status" in screen and "Operational metrics" in screen
    assert "auto-exec" in screen and "q quit" in screen and "Remediation queue" in screen

    pane.tmux("send-keys", "-t", "smoke", "q")
    after = pane.wait_for(lambda s: "EXIT=" in s, timeout=15)
    assert "EXIT=0" in after and "TERMINAL-RESTORED" in after
    assert "Safety Governor:" in after and "resolved" in after
    events = [json.loads(line) for line in (tmp_path / "output" / "workflow_events.jsonl").read_text().splitlines()]
    executed = [e for e in events if e.get("kind") == "execution" and e.get("action") == "rollback_last_deploy"]
    assert executed and executed[0]["authorised_by"] == "gate"  # passed by the gate, not by a human
