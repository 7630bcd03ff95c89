"""Creating the Elasticsearch indices from ``mappings/`` (the setup half of ``ElasticStore``).

A missing index is created with its mapping file; an existing one is left alone, and Kibana's
sample logs, a data stream, are reported as such (they are read as Kibana ships them).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from elasticsearch import ApiError, Elasticsearch

from ..config import ELASTIC_INDEXES
from ..errors import InputError
from .elastic_wire import error_type, response_body


class ElasticSetup:
    """Index creation for ``ElasticStore``, which provides the attributes below and ``_errors``."""

    client: Elasticsearch
    indices: dict[str, str]
    mappings_dir: Path

    def mapping_for(self, logical: str) -> dict[str, Any]:
        """The body of ``mappings/<default index name>.json`` for a logical index."""
        path = self.mappings_dir / f"{ELASTIC_INDEXES[logical]}.json"
        try:
            body = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise InputError(f"{path}: mapping file not found") from exc
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from exc
        if not isinstance(body, dict) or not isinstance(body.get("mappings"), dict):
            raise InputError(f"{path}: expected an object with 'mappings' (and optional 'settings')")
        return body

    def is_data_stream(self, logical: str) -> bool:
        with self._errors(f"inspect {self.indices[logical]}"):
            resp = response_body(self.client.options(ignore_status=404).indices.get_data_stream(name=self.indices[logical]))
        return bool(resp.get("data_streams"))

    def ensure_indices(self) -> list[tuple[str, str, str]]:
        """Create every missing index with its mapping. Returns ``(logical, index, state)`` with
        state ``created``, ``exists`` or ``data stream``."""
        report = []
        for logical, name in self.indices.items():
            body = self.mapping_for(logical)
            with self._errors(f"create index {name}"):
                if self.client.indices.exists(index=name):
                    state = "data stream" if logical == "logs" and self.is_data_stream(logical) else "exists"
                else:
                    try:
                        self.client.indices.create(
                            index=name, mappings=body["mappings"], settings=body.get("settings") or None
                        )
                        state = "created"
                    except ApiError as exc:
                        if error_type(exc) != "resource_already_exists_exception":
                            raise
                        state = "exists"  # another loader created it meanwhile
            report.append((logical, name, state))
        return report
