"""Loading the knowledge base (``data/``) into a store: validated, all or nothing, idempotent.

A bad document stops the load with a message naming the file, the index, the position and the
field; nothing of that load is written. Ids are stable, so re-running creates no duplicates.
Log timestamps are rebased so the newest line lands at load time: a static slice then reads
as live telemetry.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .config import describe_validation_error
from .errors import InputError
from .models import KNOWLEDGE_MODELS
from .ports import Store

KNOWLEDGE_INDICES = ("runbooks", "evidence", "policies", "incidents", "logs")
# Without these the gate cannot vouch for anything (DESIGN principle 7): a data file that leaves
# one empty is refused, and a store with one empty blocks every decision (knowledge_unavailable).
CORE_INDICES = ("runbooks", "evidence", "policies")


def read_json(path: Path) -> Any:
    """Parse a JSON file; errors name the file (and line) in one sentence."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise InputError(f"{path}: file not found") from exc
    except IsADirectoryError as exc:
        raise InputError(f"{path}: is a folder, expected a JSON file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read ({exc})") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from exc


def validate_knowledge(data: Any, origin: str) -> dict[str, list[dict[str, Any]]]:
    """Check every document against its model; returns the documents (as given) per index."""
    if not isinstance(data, Mapping):
        raise InputError(f"{origin}: expected a JSON object with keys {', '.join(KNOWLEDGE_INDICES)}")
    unknown = sorted(set(data) - set(KNOWLEDGE_INDICES))
    if unknown:
        raise InputError(f"{origin}: unknown section(s) {', '.join(unknown)} (expected {', '.join(KNOWLEDGE_INDICES)})")
    out: dict[str, list[dict[str, Any]]] = {}
    for index in KNOWLEDGE_INDICES:
        docs = data.get(index, [])
        if not isinstance(docs, list):
            raise InputError(f"{origin}: '{index}' must be a list")
        seen: set[str] = set()
        for position, doc in enumerate(docs):
            where = f"{origin}: {index}[{position}]"
            if not isinstance(doc, Mapping):
                raise InputError(f"{where}: expected an object")
            try:
                KNOWLEDGE_MODELS[index].model_validate(doc)
            except ValidationError as exc:
                doc_id = f" (id {doc['id']})" if isinstance(doc.get("id"), str) else ""
                raise InputError(f"{where}{doc_id}: {describe_validation_error(exc)}") from exc
            if index != "logs":
                if doc["id"] in seen:
                    raise InputError(f"{where}: duplicate id {doc['id']}")
                seen.add(doc["id"])
        out[index] = [dict(d) for d in docs]
    return out


def merge_knowledge(
    base: Mapping[str, list[dict[str, Any]]], extra: Mapping[str, list[dict[str, Any]]], *, replace: bool = False
) -> dict[str, list[dict[str, Any]]]:
    """``extra`` added to ``base`` (same ids replaced), or instead of it when ``replace``."""
    if replace:
        return {index: list(extra.get(index, [])) for index in KNOWLEDGE_INDICES}
    merged: dict[str, list[dict[str, Any]]] = {}
    for index in KNOWLEDGE_INDICES:
        if index == "logs":
            merged[index] = [*base.get(index, []), *extra.get(index, [])]
            continue
        by_id = {d["id"]: d for d in base.get(index, [])}
        by_id.update({d["id"]: d for d in extra.get(index, [])})
        merged[index] = list(by_id.values())
    return merged


def log_id(doc: Mapping[str, Any]) -> str:
    """A stable id for a log line without one, so re-loading a slice creates no duplicates."""
    if doc.get("id"):
        return str(doc["id"])
    canonical = json.dumps(doc, default=str, sort_keys=True)
    return "log-" + hashlib.sha1(canonical.encode()).hexdigest()[:20]


def rebase_logs(logs: Iterable[Mapping[str, Any]], now: datetime | None = None) -> list[dict[str, Any]]:
    """Shift timestamps so the newest line is at ``now``; each line keeps a stable ``id``
    computed from its original content."""
    docs = [dict(d) for d in logs]
    if not docs:
        return []
    parsed = [datetime.fromisoformat(str(d["timestamp"]).replace("Z", "+00:00")) for d in docs]
    parsed = [p if p.tzinfo else p.replace(tzinfo=UTC) for p in parsed]
    shift = (now or datetime.now(UTC)) - max(parsed)
    out = []
    for doc, ts in zip(docs, parsed, strict=True):
        doc.setdefault("id", log_id(doc))
        doc["timestamp"] = (ts + shift).isoformat().replace("+00:00", "Z")
        out.append(doc)
    return out


@dataclass
class LoadReport:
    counts: dict[str, int]
    source: str


def load_knowledge_file(path: Path) -> dict[str, list[dict[str, Any]]]:
    """A data file (``data/sample_data.json``): validated, and with every core index non-empty."""
    knowledge = validate_knowledge(read_json(path), str(path))
    for index in CORE_INDICES:
        if not knowledge.get(index):
            raise InputError(f"{path}: key '{index}' is missing or empty; missing knowledge is not permission, "
                             "so the governor refuses to load it")
    return knowledge


def seed_store(
    store: Store,
    knowledge: Mapping[str, list[dict[str, Any]]],
    *,
    source: str,
    now: datetime | None = None,
) -> LoadReport:
    """Index every document in one transaction: all of it lands, or none."""
    counts: dict[str, int] = {}
    with store.atomic():
        for index in KNOWLEDGE_INDICES:
            docs = knowledge.get(index, [])
            if index == "logs":
                docs = rebase_logs(docs, now)
            counts[index] = store.index_documents(index, docs) if docs else 0
    return LoadReport(counts=counts, source=source)
