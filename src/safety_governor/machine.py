"""The machine a benchmark ran on, printed with every benchmark's figures.

Absolute timings only compare on one machine; the CPU model, the cores and the load at the start
tell a reader which machine (and how quiet) that was.
"""

from __future__ import annotations

import os
import platform
import sqlite3
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def describe_machine() -> str:
    """One line: CPU model, logical cores (usable by this process), load average, Python, SQLite."""
    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return (f"machine: {cpu_model()}, {cores} logical cores ({usable} usable), load average "
            f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} at start; Python {platform.python_version()}, "
            f"SQLite {sqlite3.sqlite_version}")
