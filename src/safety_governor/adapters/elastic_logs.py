"""Log statistics on Elasticsearch: which log lines belong to a service, and the aggregation.

**The service of a log line is a mapping, not a field we assume.** Kibana's sample web logs
(``kibana_sample_data_logs``, a data stream; mapping in elastic/kibana's
``home/server/services/sample_data/data_sets/logs/field_mappings.ts``) have no ``service`` field:
a line has a ``host`` (``www.elastic.co``, ``artifacts.elastic.co``,
``cdn.elastic-elastic-elastic.org``, …) and a ``request`` path. ``LogService`` says where the
service comes from, as an ordered list of sources, the first present one deciding per line:

* a field name (``service``, ``service.name``): a keyword field holding the service;
* ``host``: the line's ``host.keyword``, through a host → service map, else the host itself;
* ``path``: the first segment of ``request.keyword`` (``/elasticsearch/x.zip`` → ``elasticsearch``).

The default, ``service,host`` with the hosts of Kibana's sample data mapped to the demo services
(``www.elastic.co`` and ``artifacts.elastic.co`` → ``elastic-downloads``,
``cdn.elastic-elastic-elastic.org`` → ``cdn-edge``), works on the logs ``load_to_elastic.py``
loads (they carry ``service``) and on Kibana's sample data as Kibana ships it. Every source becomes
plain Query DSL (``term``/``prefix`` on keyword fields, ``exists`` for "absent"), so the filter
uses the index, no script runs per document, and any 7.x+ cluster accepts it.

**5xx on a text ``response``.** In the sample data ``response`` is ``text`` with a ``.keyword``
sub-field, so a range on it would compare strings. A search-time runtime field
``sg_response_code`` (type ``long``) parses the digits of ``response.keyword`` with a fixed
Painless script (anything else emits nothing), and 4xx and 5xx are disjoint numeric ``range``
filters on it.
The time filter is on ``timestamp``: a date in our mapping, an alias of ``@timestamp`` in Kibana's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..errors import InputError
from ..models import LogSummary

RESPONSE_CODE_FIELD = "sg_response_code"
# Parses the HTTP status from the keyword sub-field; emits nothing for a missing or non-numeric
# value. The field name arrives as a parameter; the source never changes.
RESPONSE_CODE_SCRIPT = (
    "String f = params.field; "
    "if (doc.containsKey(f) && doc[f].size() > 0) { "
    "String s = doc[f].value.trim(); "
    "boolean ok = s.length() > 0 && s.length() < 10; "
    "for (int i = 0; ok && i < s.length(); ++i) { ok = Character.isDigit(s.charAt(i)); } "
    "if (ok) { emit(Long.parseLong(s)); } }"
)
DEFAULT_LOG_SERVICE = "service,host"
# Kibana's sample-data hosts, as the demo's services (data/sample_data.json uses the same hosts).
DEFAULT_SERVICE_HOSTS = "www.elastic.co=elastic-downloads,artifacts.elastic.co=elastic-downloads," \
                        "cdn.elastic-elastic-elastic.org=cdn-edge"
HOST_FIELD = "host.keyword"
PATH_FIELD = "request.keyword"


@dataclass(frozen=True)
class LogService:
    """Where the service of a log line comes from (see the module docstring).

    Args:
        sources: field names, ``host`` and ``path``, in order; the first present one decides.
        hosts: host (lower case) -> service, for the ``host`` source.
    """

    sources: tuple[str, ...] = ("service", "host")
    hosts: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, sources: str = DEFAULT_LOG_SERVICE, hosts: str = DEFAULT_SERVICE_HOSTS) -> LogService:
        """From ``ELASTIC_LOG_SERVICE`` (``service,host``) and ``ELASTIC_LOG_SERVICE_HOSTS``
        (``host=service,…``); a malformed value is an ``InputError`` naming the variable."""
        names = tuple(s.strip() for s in sources.split(",") if s.strip())
        if not names:
            raise InputError("ELASTIC_LOG_SERVICE: name at least one source (a field, host or path)")
        for name in names:
            if not all(part and (part[0].isalpha() or part[0] in "_@") and all(c.isalnum() or c in "_-@" for c in part)
                       for part in name.split(".")):
                raise InputError(f"ELASTIC_LOG_SERVICE: {name!r} is not a field name, host or path")
        pairs: dict[str, str] = {}
        for item in (i.strip() for i in hosts.split(",") if i.strip()):
            host, sep, service = item.partition("=")
            if not sep or not host.strip() or not service.strip():
                raise InputError(f"ELASTIC_LOG_SERVICE_HOSTS: expected host=service, got {item!r}")
            pairs[host.strip().lower()] = service.strip().lower()
        return cls(names, pairs)

    def describe(self) -> str:
        return ", then ".join(s if s in ("host", "path") else f"field {s}" for s in self.sources)

    def _source_clause(self, source: str, service: str) -> tuple[dict[str, Any], str]:
        """(the clause matching ``service`` from this source, the field whose presence means the
        source applies)."""
        if source == "host":
            hosts = [h for h, s in self.hosts.items() if s == service] + [service]
            terms = [{"term": {HOST_FIELD: {"value": h, "case_insensitive": True}}} for h in dict.fromkeys(hosts)]
            return {"bool": {"should": terms, "minimum_should_match": 1}}, HOST_FIELD
        if source == "path":
            return {"bool": {"should": [
                {"term": {PATH_FIELD: {"value": f"/{service}", "case_insensitive": True}}},
                {"prefix": {PATH_FIELD: {"value": f"/{service}/", "case_insensitive": True}}},
            ], "minimum_should_match": 1}}, PATH_FIELD
        return {"term": {source: {"value": service, "case_insensitive": True}}}, source

    def clause(self, service: str) -> dict[str, Any]:
        """The filter selecting the lines of ``service``: source i counts only where the sources
        before it are absent."""
        wanted = service.strip().lower()
        options: list[dict[str, Any]] = []
        earlier: list[str] = []
        for source in self.sources:
            match, present = self._source_clause(source, wanted)
            options.append({"bool": {"filter": [match],
                                     "must_not": [{"exists": {"field": f}} for f in earlier]}}
                           if earlier else match)
            earlier.append(present)
        return options[0] if len(options) == 1 else {"bool": {"should": options, "minimum_should_match": 1}}


def _epoch_ms(ts: datetime) -> int:
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return int(ts.timestamp() * 1000)


def log_stats_request(
    log_service: LogService, *, service: str | None, start: datetime, end: datetime, top_n: int
) -> dict[str, Any]:
    """The search body of ``log_stats`` (kept apart so it can be inspected)."""
    filters: list[dict[str, Any]] = [
        {"range": {"timestamp": {"gt": _epoch_ms(start), "lte": _epoch_ms(end), "format": "epoch_millis"}}}
    ]
    if service:
        filters.append(log_service.clause(service))
    errors = {"range": {RESPONSE_CODE_FIELD: {"gte": 400}}}
    errors_4xx = {"range": {RESPONSE_CODE_FIELD: {"gte": 400, "lt": 500}}}
    errors_5xx = {"range": {RESPONSE_CODE_FIELD: {"gte": 500, "lt": 600}}}
    return {
        "size": 0,
        "track_total_hits": True,
        "runtime_mappings": {
            RESPONSE_CODE_FIELD: {
                "type": "long",
                "script": {"source": RESPONSE_CODE_SCRIPT, "params": {"field": "response.keyword"}},
            }
        },
        "query": {"bool": {"filter": filters}},
        "aggregations": {
            "errors_4xx": {"filter": errors_4xx},
            "errors_5xx": {"filter": errors_5xx},
            "avg_bytes": {"avg": {"field": "bytes", "missing": 0}},
            "failing": {
                "filter": errors,
                "aggregations": {
                    "paths": {
                        "terms": {"field": "request.keyword", "size": max(1, int(top_n)),
                                  "order": [{"_count": "desc"}, {"_key": "asc"}]},
                        "aggregations": {"errors_5xx": {"filter": errors_5xx}},
                    }
                },
            },
        },
    }


def log_summary(resp: Mapping[str, Any], *, service: str | None, window_minutes: int, top_n: int) -> LogSummary:
    """A ``LogSummary`` from the response to ``log_stats_request``."""
    total_raw = resp.get("hits", {}).get("total", 0)
    total = int(total_raw.get("value", 0) if isinstance(total_raw, Mapping) else total_raw or 0)
    aggs = resp.get("aggregations", {})
    e4 = int(aggs.get("errors_4xx", {}).get("doc_count", 0))
    e5 = int(aggs.get("errors_5xx", {}).get("doc_count", 0))
    avg = aggs.get("avg_bytes", {}).get("value")
    buckets = aggs.get("failing", {}).get("paths", {}).get("buckets", []) if top_n > 0 else []
    return LogSummary.of_counts(
        service=service,
        window_minutes=window_minutes,
        total=total,
        errors_4xx=e4,
        errors_5xx=e5,
        avg_bytes=avg,
        top_failing_paths=[
            {"request": str(b["key"]), "errors": int(b["doc_count"]),
             "errors_5xx": int(b.get("errors_5xx", {}).get("doc_count", 0))}
            for b in buckets
        ],
    )
