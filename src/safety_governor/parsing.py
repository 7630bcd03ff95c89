"""Turn an agent's text reply into one JSON object, or fail.

Accepted: plain JSON, fenced JSON (```json ... ```), or prose containing exactly one JSON object.
Anything else (no object, several different objects, garbage) is rejected: the pipeline then
fails closed with ``invalid_output``.
"""

from __future__ import annotations

import json
import re
from typing import Any

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)
MAX_REPLY_CHARS = 200_000


class ReplyParseError(ValueError):
    """The reply holds no single usable JSON object."""


def extract_json_object(text: str) -> dict[str, Any]:
    if not isinstance(text, str) or not text.strip():
        raise ReplyParseError("empty reply")
    if len(text) > MAX_REPLY_CHARS:
        raise ReplyParseError(f"reply longer than {MAX_REPLY_CHARS} characters")
    stripped = text.strip()
    candidates: list[dict[str, Any]] = []
    direct = _loads_object(stripped)
    if direct is not None:
        return direct
    for block in _FENCE.findall(stripped):
        obj = _loads_object(block.strip())
        if obj is not None:
            candidates.append(obj)
        else:
            candidates.extend(_scan_objects(block))
    # Objects in the prose around the fences count too: a second, different object is ambiguous.
    candidates.extend(_scan_objects(_FENCE.sub(" ", stripped)))
    unique = {json.dumps(c, sort_keys=True): c for c in candidates}
    if not unique:
        raise ReplyParseError("no JSON object found in the reply")
    if len(unique) > 1:
        raise ReplyParseError(f"{len(unique)} different JSON objects in the reply; expected one")
    return next(iter(unique.values()))


def _loads_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _scan_objects(text: str) -> list[dict[str, Any]]:
    """Top-level JSON objects embedded in prose, found with the JSON decoder itself."""
    decoder = json.JSONDecoder()
    found: list[dict[str, Any]] = []
    pos = 0
    while (start := text.find("{", pos)) != -1:
        try:
            value, end = decoder.raw_decode(text, start)
        except (json.JSONDecodeError, RecursionError):
            pos = start + 1
            continue
        if isinstance(value, dict):
            found.append(value)
        pos = end
    return found
