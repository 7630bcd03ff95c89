"""Turn an agent's text reply into one JSON object, or fail.

Accepted: plain JSON, fenced JSON (```json ... ```), or prose containing exactly one JSON object.
Anything else (no object, several different objects, an object with a duplicated key, garbage, a
reply over ``MAX_REPLY_CHARS``) is rejected: the pipeline then fails closed with
``invalid_output``.

The work is linear in the reply's size: one pass finds the balanced ``{...}`` spans outside and
inside JSON strings, and only those spans (and, when a span is not JSON, its direct children)
are decoded. A reply of 200,000 ``{`` is refused in milliseconds, not by trying each brace.
"""

from __future__ import annotations

import json
import re
from typing import Any

_FENCE = re.compile(r"```(?:json|JSON)?[ \t]*\n?(.*?)```", re.DOTALL)
MAX_REPLY_CHARS = 200_000
# A reply is meant to hold one object; past this many spans it is refused without decoding them.
MAX_OBJECT_SPANS = 100


class ReplyParseError(ValueError):
    """The reply holds no single usable JSON object."""


class DuplicateKeyError(ValueError):
    """A JSON object names the same key twice (which value counts would be a guess)."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKeyError(f"duplicate key '{key}' in a JSON object")
        out[key] = value
    return out


_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates)


def extract_json_object(text: str) -> dict[str, Any]:
    if not isinstance(text, str) or not text.strip():
        raise ReplyParseError("empty reply")
    if len(text) > MAX_REPLY_CHARS:
        raise ReplyParseError(f"reply longer than {MAX_REPLY_CHARS} characters")
    try:
        return _extract(text.strip())
    except DuplicateKeyError as exc:
        raise ReplyParseError(str(exc)) from exc


def _extract(stripped: str) -> dict[str, Any]:
    direct = _loads_object(stripped)
    if direct is not None:
        return direct
    candidates: list[dict[str, Any]] = []
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
    """The object ``text`` holds, or ``None``; a duplicated key raises ``DuplicateKeyError``."""
    try:
        value = _DECODER.decode(text)
    except (json.JSONDecodeError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def brace_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of every balanced ``{...}`` in ``text`` (end exclusive), in one pass.
    Braces inside JSON strings do not count; quotes in the prose outside any brace do not open a
    string. An unbalanced brace is ignored."""
    spans: list[tuple[int, int]] = []
    stack: list[int] = []
    in_string = False
    escaped = False
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == "{":
            stack.append(i)
        elif ch == "}":
            if stack:
                spans.append((stack.pop(), i + 1))
        elif ch == '"' and stack:
            in_string = True
    return spans


def _scan_objects(text: str) -> list[dict[str, Any]]:
    """JSON objects embedded in prose: the outermost balanced spans. One that is not JSON is
    searched one level down (``{note: {"a": 1}}``); deeper nesting is not, so the work stays
    linear (each character is decoded at most twice)."""
    outer: list[tuple[int, int]] = []
    children: dict[int, list[tuple[int, int]]] = {}
    enclosing: list[tuple[int, int]] = []
    for start, end in sorted(brace_spans(text), key=lambda s: (s[0], -s[1])):
        while enclosing and enclosing[-1][1] <= start:
            enclosing.pop()
        if not enclosing:
            outer.append((start, end))
        elif len(enclosing) == 1:
            children.setdefault(enclosing[0][0], []).append((start, end))
        enclosing.append((start, end))
    if len(outer) > MAX_OBJECT_SPANS:
        raise ReplyParseError(f"more than {MAX_OBJECT_SPANS} brace-delimited spans in the reply; expected one object")
    found: list[dict[str, Any]] = []
    for start, end in outer:
        obj = _loads_object(text[start:end])
        if obj is not None:
            found.append(obj)
            continue
        for c_start, c_end in children.get(start, []):
            child = _loads_object(text[c_start:c_end])
            if child is not None:
                found.append(child)
    return found
