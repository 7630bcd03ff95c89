#!/usr/bin/env python3
"""Safety Governor demo entry (``make demo``): runs offline on the embedded defaults."""

import sys

from safety_governor.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
