#!/usr/bin/env python3
"""Safety Governor dashboard (``make demo``): the Rich TUI with its four workers.

Offline by default: an embedded store, a simulated production with injected faults, local
tickets and a local approval inbox answered from the keyboard. ``--help`` lists the modes;
without a terminal it falls back to plain lines with a scripted on-call (``--no-tui
--autopilot``) and ends when the storyline is over. The non-interactive walkthrough report is
still ``python -m safety_governor demo``.
"""

import sys

from safety_governor.tui.app import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
