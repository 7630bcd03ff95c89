#!/usr/bin/env python3
"""Seed the configured store from data/: the embedded SQLite store unless ELASTIC_URL is set.

Idempotent (stable ids); a bad document stops the load with file, index and position, and
nothing of that load is written. Options: --data FILE, --store PATH.
"""

import sys

from safety_governor.cli import main

if __name__ == "__main__":
    sys.exit(main(["seed", *sys.argv[1:]]))
