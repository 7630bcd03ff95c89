"""Kibana's sample web logs as Kibana ships them, for ``FakeElasticsearch``.

The mapping is elastic/kibana's
``src/platform/plugins/shared/home/server/services/sample_data/data_sets/logs/field_mappings.ts``
(field for field: no ``service``; ``@timestamp`` a date and ``timestamp`` an alias of it;
``response``, ``host`` and ``request`` text with ``.keyword`` sub-fields), and the index is a data
stream (``isDataStream: true`` in that data set's ``index.ts``). The documents follow the data
set's shape: ``response`` is a number in ``_source``, hosts are the data set's four
(``www.elastic.co``, ``artifacts.elastic.co``, ``cdn.elastic-elastic-elastic.org``,
``elastic-elastic-elastic.org``), requests are download paths.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

INDEX = "kibana_sample_data_logs"


def _text_keyword(ignore_above: int | None = 256, **extra: Any) -> dict[str, Any]:
    keyword: dict[str, Any] = {"type": "keyword", **extra}
    if ignore_above is not None:
        keyword["ignore_above"] = ignore_above
    return {"type": "text", "fields": {"keyword": keyword}}


MAPPING: dict[str, Any] = {"mappings": {"properties": {
    "request": _text_keyword(None, time_series_dimension=True),
    "geo": {"properties": {"srcdest": {"type": "keyword"}, "src": {"type": "keyword"}, "dest": {"type": "keyword"},
                           "coordinates": {"type": "geo_point"}}},
    "utc_time": {"type": "date"},
    "url": _text_keyword(),
    "message": _text_keyword(),
    "host": _text_keyword(),
    "clientip": {"type": "ip"},
    "response": _text_keyword(),
    "machine": {"properties": {"ram": {"type": "long"}, "os": _text_keyword()}},
    "agent": _text_keyword(),
    "bytes": {"type": "long"},
    "tags": _text_keyword(),
    "referer": {"type": "keyword"},
    "ip": {"type": "ip"},
    "ip_range": {"type": "ip_range"},
    "@timestamp": {"type": "date"},
    "timestamp": {"type": "alias", "path": "@timestamp"},
    "timestamp_range": {"type": "date_range"},
    "phpmemory": {"type": "long"},
    "bytes_counter": {"type": "long", "time_series_metric": "counter"},
    "bytes_gauge": {"type": "long", "time_series_metric": "gauge"},
    "memory": {"type": "double"},
    "extension": _text_keyword(),
    "event": {"properties": {"dataset": {"type": "keyword"}}},
}}}


def line(at: datetime, host: str, request: str, response: int, nbytes: int) -> dict[str, Any]:
    """One sample log line (the keys the data set's documents carry; no ``service``)."""
    stamp = at.isoformat().replace("+00:00", "Z")
    return {"@timestamp": stamp, "utc_time": stamp, "host": host, "request": request, "response": response,
            "bytes": nbytes, "url": f"https://{host}{request}", "extension": request.rsplit(".", 1)[-1],
            "clientip": "176.25.204.175", "agent": "Mozilla/5.0", "tags": ["success", "info"],
            "message": f'176.25.204.175 - - [{stamp}] "GET {request} HTTP/1.1" {response} {nbytes} "-" "Mozilla/5.0"',
            "machine": {"os": "ios", "ram": 13958643712}, "event": {"dataset": "sample_web_logs"}}


def documents(now: datetime) -> dict[str, dict[str, Any]]:
    """A slice of sample logs around ``now``: id -> source."""
    rows = [
        (1, "www.elastic.co", "/elasticsearch/elasticsearch-6.3.2.zip", 200, 5464),
        (2, "artifacts.elastic.co", "/kibana/kibana-6.3.2-linux-x86_64.tar.gz", 503, 0),
        (3, "artifacts.elastic.co", "/beats/filebeat/filebeat-6.3.2-amd64.deb", 404, 0),
        (4, "www.elastic.co", "/elasticsearch/elasticsearch-6.3.2.zip", 503, 0),
        (5, "cdn.elastic-elastic-elastic.org", "/styles/main.css", 200, 2048),
        (6, "elastic-elastic-elastic.org", "/people/type:astronauts/name:gregory", 200, 3150),
        (40, "www.elastic.co", "/elasticsearch/elasticsearch-6.3.2.zip", 503, 0),  # outside a 15-minute window
    ]
    return {f"sample-{n}": line(now - timedelta(minutes=minutes), host, request, response, nbytes)
            for n, (minutes, host, request, response, nbytes) in enumerate(rows)}


def response_code(source: dict[str, Any], params: dict[str, Any]) -> list[int]:
    """What the store's Painless script emits for ``sg_response_code``: the digits of the
    ``response.keyword`` value (a number in ``_source`` is indexed as its text), nothing else."""
    value = source.get(str(params["field"]).removesuffix(".keyword"))
    text = str(value).strip() if value is not None else ""
    return [int(text)] if text.isdigit() and len(text) < 10 else []
