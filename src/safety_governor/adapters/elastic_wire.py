"""Talking to Elasticsearch: response bodies, and the client's exceptions translated into ours.

Vendor exceptions stop at the store: callers see ``StoreError`` / ``StoreUnavailable`` with one
clear sentence each (never the request, which would carry the API key).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from elasticsearch import (
    ApiError,
    AuthenticationException,
    AuthorizationException,
    ConnectionTimeout,
    TransportError,
    UnsupportedProductError,
)

from ..errors import StoreError, StoreUnavailable


class BulkWriteError(StoreError):
    """Some documents of a write were rejected; the write was undone. ``failures`` lists each
    rejected document as ``{"index", "id", "status", "type", "reason"}``."""

    def __init__(self, failures: list[dict[str, Any]], total: int, *, rolled_back: bool = True) -> None:
        self.failures = failures
        self.total = total
        self.rolled_back = rolled_back
        shown = "; ".join(f"{f['index']}/{f['id']}: {f['type']}: {f['reason']}" for f in failures[:3])
        more = f" (and {len(failures) - 3} more)" if len(failures) > 3 else ""
        kept = "nothing was kept" if rolled_back else "the undo failed, some documents may remain"
        super().__init__(f"{len(failures)} of {total} documents were rejected ({kept}): {shown}{more}")


def response_body(resp: Any) -> dict[str, Any]:
    """The JSON body of a client response (``ObjectApiResponse``) as a plain dict."""
    body = getattr(resp, "body", resp)
    return body if isinstance(body, dict) else {}


def short(text: Any, limit: int = 300) -> str:
    value = " ".join(str(text).split())
    return value if len(value) <= limit else value[: limit - 1] + "…"


def error_body(exc: ApiError) -> dict[str, Any]:
    body = exc.body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return body["error"]
    return {}


def error_type(exc: ApiError) -> str:
    return str(error_body(exc).get("type") or exc.message or "error")


def error_reason(exc: ApiError) -> str:
    err = error_body(exc)
    if err:
        return str(err.get("reason") or err.get("type") or "")
    return str(exc.body or exc.message)


def error_index(exc: ApiError) -> str:
    err = error_body(exc)
    return str(err.get("index") or err.get("resource.id") or "?")


@contextmanager
def translate_errors(what: str, location: str) -> Iterator[None]:
    """Translate the client's exceptions into ours, with one clear sentence each."""
    try:
        yield
    except UnsupportedProductError as exc:
        raise StoreUnavailable(f"{what}: the server at {location} is not Elasticsearch") from exc
    except AuthenticationException as exc:
        raise StoreUnavailable(
            f"{what}: Elasticsearch at {location} rejected the credentials (401); check ELASTIC_API_KEY"
        ) from exc
    except AuthorizationException as exc:
        raise StoreError(f"{what}: the API key lacks a privilege (403): {short(error_reason(exc))}") from exc
    except ApiError as exc:
        kind = error_type(exc)
        if kind == "media_type_header_exception":
            raise StoreUnavailable(
                f"{what}: {location} refused the 9.x client's compatibility headers; the elasticsearch "
                "9.x client needs Elasticsearch 9.x (for an 8.x cluster install elasticsearch>=8,<9)"
            ) from exc
        if kind == "index_not_found_exception":
            raise StoreError(
                f"{what}: index {error_index(exc)} does not exist on {location}; "
                "run `python load_to_elastic.py` to create and seed the indices"
            ) from exc
        raise StoreError(
            f"{what}: Elasticsearch answered {exc.meta.status} {kind}: {short(error_reason(exc))}"
        ) from exc
    except ConnectionTimeout as exc:
        raise StoreUnavailable(f"{what}: Elasticsearch at {location} did not answer in time") from exc
    except TransportError as exc:
        raise StoreUnavailable(
            f"{what}: cannot reach Elasticsearch at {location} ({type(exc).__name__})"
        ) from exc
