"""Phase prompts, kept as files so they can be read and reviewed apart from the code."""

from __future__ import annotations

from importlib import resources
from string import Template
from typing import Any


def render(name: str, **values: Any) -> str:
    text = resources.files(__package__).joinpath(f"{name}.txt").read_text(encoding="utf-8")
    return Template(text).safe_substitute({k: str(v) for k, v in values.items()})
