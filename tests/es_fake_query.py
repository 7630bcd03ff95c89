"""The search side of ``FakeElasticsearch``: the Query DSL subset the store sends, evaluated over
documents in memory, with Elasticsearch's own limits.

Built from the Elasticsearch reference (docs and the ``elasticsearch-specification``): ``bool``
(``must``/``filter``/``should``/``must_not``, ``minimum_should_match``), ``term`` (with
``case_insensitive``), ``terms``, ``exists``, ``range`` (``gt``/``gte``/``lt``/``lte``,
``format: epoch_millis``), ``prefix``, ``match_all``/``match_none``; ``sort`` with ``order``,
``unmapped_type`` and missing values last; ``search_after``; ``from``/``size`` limited by
``index.max_result_window`` (10,000: a larger ``from + size`` is a 400 whose reason names the
setting, "Paginate search results"); field aliases (``type: alias``, ``path``) resolved through the
mapping, as in ``kibana_sample_data_logs`` where ``timestamp`` is an alias of ``@timestamp``; a
field absent from the mapping and the documents matches nothing. Aggregations: ``filter``, ``avg``
(with ``missing``) and ``terms`` with sub-aggregations, over fields or over a ``runtime_mappings``
field whose script a test supplies in Python (the fake cannot run Painless). Anything else is a
400, so the store cannot come to depend on something the fake merely ignores.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

MAX_RESULT_WINDOW = 10_000
RuntimeScript = Callable[[dict[str, Any], dict[str, Any]], list[Any]]  # (source, params) -> emitted values


class QueryError(Exception):
    """A request Elasticsearch would refuse: (type, reason)."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


def _aliases(mapping: Mapping[str, Any] | None) -> dict[str, str]:
    out: dict[str, str] = {}

    def walk(props: Mapping[str, Any], prefix: str) -> None:
        for name, spec in props.items():
            if not isinstance(spec, Mapping):
                continue
            if spec.get("type") == "alias":
                out[prefix + name] = str(spec["path"])
            if isinstance(spec.get("properties"), Mapping):
                walk(spec["properties"], f"{prefix}{name}.")

    walk(((mapping or {}).get("mappings") or mapping or {}).get("properties") or {}, "")
    return out


class Searcher:
    """Evaluates one search body over ``docs`` (``{id: source}``) of an index with ``mapping``."""

    def __init__(self, mapping: Mapping[str, Any] | None, runtime_scripts: Mapping[str, RuntimeScript],
                 body: Mapping[str, Any]) -> None:
        self.aliases = _aliases(mapping)
        self.scripts = runtime_scripts
        self.runtime: dict[str, Any] = dict(body.get("runtime_mappings") or {})

    # --- fields -----------------------------------------------------------------------------

    def values(self, source: Mapping[str, Any], field: str) -> list[Any]:
        if field in self.runtime:
            spec = self.runtime[field]
            script = (spec.get("script") or {}) if isinstance(spec, Mapping) else {}
            fn = self.scripts.get(str(script.get("source")))
            if fn is None:
                raise QueryError("script_exception", f"fake: no Python stand-in for the script of [{field}]")
            return fn(dict(source), dict(script.get("params") or {}))
        field = self.aliases.get(field, field)
        if field.endswith(".keyword"):
            field = field[: -len(".keyword")]
        value: Any = source
        for part in field.split("."):
            if isinstance(value, Mapping) and part in value:
                value = value[part]
            elif isinstance(value, Mapping) and field in value:  # a dotted key stored flat
                value = value[field]
                break
            else:
                return []
        items = value if isinstance(value, list) else [value]
        return [v for v in items if v is not None]

    # --- queries ----------------------------------------------------------------------------

    def matches(self, source: Mapping[str, Any], query: Mapping[str, Any] | None) -> bool:
        if not query:
            return True
        (kind, spec), = query.items()
        if kind == "match_all":
            return True
        if kind == "match_none":
            return False
        if kind == "bool":
            return self._bool(source, spec)
        if kind == "term":
            (field, value), = spec.items()
            insensitive = False
            if isinstance(value, Mapping):
                insensitive = bool(value.get("case_insensitive"))
                value = value["value"]
            return any(_same(v, value, insensitive) for v in self.values(source, field))
        if kind == "terms":
            (field, wanted), = spec.items()
            return any(_same(v, w, False) for v in self.values(source, field) for w in wanted)
        if kind == "exists":
            return bool(self.values(source, spec["field"]))
        if kind == "prefix":
            (field, value), = spec.items()
            value = value["value"] if isinstance(value, Mapping) else value
            return any(str(v).startswith(str(value)) for v in self.values(source, field))
        if kind == "range":
            (field, bounds), = spec.items()
            return any(_in_range(v, bounds) for v in self.values(source, field))
        raise QueryError("parsing_exception", f"fake: unsupported query [{kind}]")

    def _bool(self, source: Mapping[str, Any], spec: Mapping[str, Any]) -> bool:
        def clauses(key: str) -> list[Mapping[str, Any]]:
            value = spec.get(key) or []
            return [value] if isinstance(value, Mapping) else list(value)

        if not all(self.matches(source, q) for q in clauses("must") + clauses("filter")):
            return False
        if any(self.matches(source, q) for q in clauses("must_not")):
            return False
        should = clauses("should")
        if not should:
            return True
        default = 0 if (clauses("must") or clauses("filter")) else 1
        wanted = int(spec.get("minimum_should_match", default))
        return sum(self.matches(source, q) for q in should) >= wanted

    # --- sorting and aggregations ---------------------------------------------------------------

    def sort_key(self, source: Mapping[str, Any], doc_id: str, sort: list[Any]) -> list[Any]:
        key = []
        for entry in sort:
            field = entry if isinstance(entry, str) else next(iter(entry))
            if field == "_doc" or field == "_shard_doc":
                key.append(doc_id)
                continue
            vals = self.values(source, field)
            key.append(vals[0] if vals else None)
        return key

    def aggregate(self, docs: list[dict[str, Any]], aggs: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, spec in aggs.items():
            sub = spec.get("aggregations") or spec.get("aggs") or {}
            if "filter" in spec:
                picked = [d for d in docs if self.matches(d, spec["filter"])]
                out[name] = {"doc_count": len(picked), **self.aggregate(picked, sub)}
            elif "avg" in spec:
                field, missing = spec["avg"]["field"], spec["avg"].get("missing")
                nums = []
                for d in docs:
                    vals = self.values(d, field)
                    if vals:
                        nums.append(float(vals[0]))
                    elif missing is not None:
                        nums.append(float(missing))
                out[name] = {"value": sum(nums) / len(nums) if nums else None}
            elif "terms" in spec:
                counts: dict[Any, list[dict[str, Any]]] = {}
                for d in docs:
                    for v in dict.fromkeys(self.values(d, spec["terms"]["field"])):
                        counts.setdefault(v, []).append(d)
                ordered = sorted(counts.items(), key=lambda kv: (-len(kv[1]), str(kv[0])))
                out[name] = {"buckets": [{"key": k, "doc_count": len(ds), **self.aggregate(ds, sub)}
                                         for k, ds in ordered[: int(spec["terms"].get("size", 10))]]}
            else:
                raise QueryError("parsing_exception", f"fake: unsupported aggregation in [{name}]")
        return out


def _same(stored: Any, wanted: Any, insensitive: bool) -> bool:
    if isinstance(stored, (int, float)) and not isinstance(stored, bool):
        try:
            return float(stored) == float(wanted)
        except (TypeError, ValueError):
            return False
    a, b = str(stored), str(wanted)
    return a.lower() == b.lower() if insensitive else a == b


def _number(value: Any, epoch_millis: bool) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value)
    if epoch_millis and text.lstrip("-").isdigit():
        return float(text)
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return None


def _in_range(value: Any, bounds: Mapping[str, Any]) -> bool:
    epoch = bounds.get("format") == "epoch_millis"
    v = _number(value, False)
    if v is None:
        return False
    for op, check in (("gt", lambda a, b: a > b), ("gte", lambda a, b: a >= b),
                      ("lt", lambda a, b: a < b), ("lte", lambda a, b: a <= b)):
        if op in bounds:
            b = _number(bounds[op], epoch)
            if b is None or not check(v, b):
                return False
    return True


def _cmp_key(values: list[Any], orders: list[str]) -> tuple[Any, ...]:
    """A sort key: missing values last whatever the order (Elasticsearch's default ``_last``)."""
    out = []
    for value, order in zip(values, orders, strict=True):
        if value is None:
            out.append((1, 0))
        elif isinstance(value, (int, float)):
            out.append((0, -value if order == "desc" else value))
        else:
            text = str(value)
            out.append((0, tuple(-ord(c) for c in text) + (1,) if order == "desc" else text))
    return tuple(out)


def search(docs: Mapping[str, dict[str, Any]], body: Mapping[str, Any], *, index: str,
           mapping: Mapping[str, Any] | None = None,
           runtime_scripts: Mapping[str, RuntimeScript] | None = None) -> dict[str, Any]:
    """A ``_search`` response for ``body`` over ``docs``; raises ``QueryError`` as Elasticsearch would."""
    size = int(body.get("size", 10))
    start = int(body.get("from", 0))
    if start + size > MAX_RESULT_WINDOW:
        raise QueryError(
            "illegal_argument_exception",
            f"Result window is too large, from + size must be less than or equal to: [{MAX_RESULT_WINDOW}] "
            f"but was [{start + size}]. See the scroll api for a more efficient way to request large data sets. "
            "This limit can be set by changing the [index.max_result_window] index level setting.")
    s = Searcher(mapping, runtime_scripts or {}, body)
    matched = [(doc_id, src) for doc_id, src in docs.items() if s.matches(src, body.get("query"))]
    sort = list(body.get("sort") or [])
    if body.get("search_after") is not None and not sort:
        raise QueryError("illegal_argument_exception", "Sort must contain at least one field.")
    orders = [("asc" if isinstance(e, str) else str((next(iter(e.values())) or {}).get("order", "asc")))
              for e in sort]
    keyed = [(s.sort_key(src, doc_id, sort), doc_id, src) for doc_id, src in matched]
    if sort:
        keyed.sort(key=lambda item: _cmp_key(item[0], orders))
        after = body.get("search_after")
        if after is not None:
            if len(after) != len(sort):
                raise QueryError("illegal_argument_exception",
                                 f"search_after has {len(after)} value(s) but sort has {len(sort)}.")
            bound = _cmp_key(list(after), orders)
            keyed = [item for item in keyed if _cmp_key(item[0], orders) > bound]
    page = keyed[start : start + size]
    response: dict[str, Any] = {
        "took": 1, "timed_out": False,
        "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
        "hits": {"max_score": None, "hits": [
            {"_index": index, "_id": doc_id, "_score": None, "_source": src, **({"sort": key} if sort else {})}
            for key, doc_id, src in page]},
    }
    if body.get("track_total_hits", True) is not False:
        response["hits"]["total"] = {"value": len(matched), "relation": "eq"}
    if body.get("aggregations") or body.get("aggs"):
        response["aggregations"] = s.aggregate([src for _, src in matched],
                                               body.get("aggregations") or body.get("aggs"))
    return response
