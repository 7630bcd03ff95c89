"""CDCT / DDFT / EECT scores: the bundled offline table, and the hosted APIs when configured.

The hosted APIs are optional and flaky by nature: every call has a timeout, and any failure or
missing field falls back to the bundled table (``data/model_profiles.json``). Payload shapes
differ between deployments, so parsing accepts every documented variant. ECS is normalised to
the published 0-10 scale here, at the edge.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ..errors import ConfigError
from ..models import FrameworkScores

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)


def _norm(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


class BundledScores:
    """Per-model profiles from the bundled table, matched by name or alias (case-insensitive)."""

    def __init__(self, path: Path) -> None:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read the model profile table ({exc})") from exc
        self._by_name: dict[str, dict[str, Any]] = {}
        for profile in raw.get("profiles", []):
            for name in [profile["model"], *profile.get("aliases", [])]:
                self._by_name.setdefault(_norm(name), profile)

    def scores(self, model: str) -> FrameworkScores:
        profile = self._by_name.get(_norm(model))
        if profile is None:
            return FrameworkScores(model=model, source="none")
        return FrameworkScores(
            model=profile["model"],
            hoc=profile.get("hoc") or 0.0,
            ci=profile.get("ci") or 0.0,
            u_curve_magnitude=profile.get("u_curve_magnitude"),
            as_score=profile.get("as_score") or 0.0,
            act_rate=profile.get("act_rate") or 0.0,
            ecs=profile.get("ecs") or 0.0,
            source="bundled",
        )


def _first_number(payload: Any, *keys: str) -> float | None:
    """The first numeric value among ``keys`` (any case), in a dict, its ``details``, or a list's
    records (averaged)."""
    if isinstance(payload, list):
        values = [v for item in payload if (v := _first_number(item, *keys)) is not None]
        return sum(values) / len(values) if values else None
    if not isinstance(payload, Mapping):
        return None
    lowered = {str(k).lower(): v for k, v in payload.items()}
    for key in keys:
        value = lowered.get(key.lower())
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    details = payload.get("details")
    return _first_number(details, *keys) if details is not None else None


class HostedScores:
    """Scores from the hosted framework APIs (``GET {url}/score/{model}``), table as fallback."""

    def __init__(
        self,
        fallback: BundledScores,
        *,
        cdct_url: str | None = None,
        ddft_url: str | None = None,
        eect_url: str | None = None,
        timeout: float = 3.0,
        session: requests.Session | None = None,
    ) -> None:
        self.fallback = fallback
        self.urls = {"cdct": cdct_url, "ddft": ddft_url, "eect": eect_url}
        self.timeout = timeout
        import requests  # lazily: only hosted score APIs need it

        self.session = session or requests.Session()
        self._cache: dict[str, FrameworkScores] = {}

    def _get(self, api: str, model: str) -> Any:
        base = self.urls.get(api)
        if not base:
            return None
        import requests

        url = f"{base.rstrip('/')}/score/{quote(model, safe='')}"
        try:
            resp = self.session.get(url, timeout=self.timeout)
        except requests.RequestException as exc:
            log.warning("%s score API unreachable (%s); using the bundled table", api.upper(), type(exc).__name__)
            return None
        if resp.status_code != 200:
            log.warning("%s score API answered %s for %s; using the bundled table", api.upper(), resp.status_code, model)
            return None
        try:
            return resp.json()
        except ValueError:
            log.warning("%s score API returned non-JSON; using the bundled table", api.upper())
            return None

    def scores(self, model: str) -> FrameworkScores:
        if model in self._cache:
            return self._cache[model]
        base = self.fallback.scores(model)
        values = base.model_dump()
        hosted = False
        ddft = self._get("ddft", model)
        for field, keys in (("hoc", ("HOC", "AS")), ("ci", ("CI", "ER", "ci_score"))):
            value = _first_number(ddft, *keys)
            if value is not None and value > 0:
                values[field], hosted = value, True
        # The hosted CDCT API returns per-concept records without a u-curve magnitude; only an
        # explicit value is used, never a proxy.
        u_curve = _first_number(self._get("cdct", model), "u_curve_magnitude")
        if u_curve is not None:
            values["u_curve_magnitude"], hosted = u_curve, True
        eect = self._get("eect", model)
        ecs = _first_number(eect, "ECS", "ecs")
        if ecs is not None and ecs > 0:
            values["ecs"], hosted = (ecs * 10 if ecs <= 1 else ecs), True
        as_score = _first_number(eect, "AS", "as_score")
        if as_score is not None:
            values["as_score"], hosted = as_score, True
        if hosted:
            values["source"] = "hosted" if base.source == "none" else "hosted+bundled"
        result = FrameworkScores.model_validate(values)
        self._cache[model] = result
        return result
