"""The action catalogue (``data/actions.json``): every remediation the governor may run.

Each action has a description, the services it applies to (``["*"]`` means any), typed
parameters, whether it is reversible and its rollback action, a risk level and an automation
level (``auto``: the gate may execute it; ``approval``: a human must approve it; ``never``: the
governor never runs it). ``lookup`` is the one way to read an action for a service: the executors
refuse through it (``prepare_action``) and the pipeline builds the gate's ``ActionFacts`` from it,
so a gate ``execute`` is always an action the executor accepts.

Pure logic plus one file read; a bad catalogue stops the load with a message naming the file,
the position and the field.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .config import describe_validation_error
from .errors import ExecutionRefused, InputError
from .knowledge import read_json
from .models import ActionFacts, Automation, GateOutput, Identifier, Incident, NonEmptyText, OptionalIdentifier, Risk, normalise_action

ParamType = Literal["string", "integer", "number", "boolean"]
# Never automated, whatever the file says is absent: they destroy data or open the front door.
NEVER_AUTOMATED = frozenset({"drop_database_tables", "delete_index", "disable_authentication"})


def default_automation(action_id: str, risk: str, reversible: bool) -> Automation:
    """``never`` for the three destructive actions, ``approval`` for high risk or irreversible,
    else ``auto``: what an entry without ``automation`` gets."""
    if normalise_action(action_id) in NEVER_AUTOMATED:
        return "never"
    if risk == "high" or not reversible:
        return "approval"
    return "auto"


def value_has_type(value: Any, kind: str) -> bool:
    """Strict JSON-style type check: ``True`` is not an integer, ``"3"`` is not a number."""
    if kind == "boolean":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind == "integer":
        return isinstance(value, int)
    if kind == "number":
        return isinstance(value, (int, float))
    if kind == "string":
        return isinstance(value, str)
    return False


class ActionParameter(BaseModel):
    """One typed parameter of a catalogued action. ``default`` is absent when not set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: ParamType
    description: str = ""
    default: str | int | float | bool | None = None
    required: bool = False

    @model_validator(mode="after")
    def _default_matches_type(self) -> ActionParameter:
        if "default" in self.model_fields_set and self.default is not None:
            if not value_has_type(self.default, self.type):
                raise ValueError(f"default {self.default!r} is not of type {self.type}")
        return self

    @property
    def has_default(self) -> bool:
        return "default" in self.model_fields_set and self.default is not None


class CatalogueAction(BaseModel):
    """A remediation action the governor may run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Identifier
    description: NonEmptyText
    services: list[Identifier] = Field(min_length=1)
    parameters: dict[str, ActionParameter] = Field(default_factory=dict)
    reversible: bool
    rollback_action: OptionalIdentifier | None = None
    risk: Risk
    automation: Automation

    @model_validator(mode="before")
    @classmethod
    def _default_automation(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("automation") is None:
            ident, risk, reversible = data.get("id"), data.get("risk"), data.get("reversible")
            if isinstance(ident, str) and isinstance(risk, str) and isinstance(reversible, bool):
                return {**data, "automation": default_automation(ident, risk, reversible)}
        return data

    @field_validator("id", mode="after")
    @classmethod
    def _normalise_id(cls, value: str) -> str:
        return normalise_action(value)

    @field_validator("rollback_action", mode="after")
    @classmethod
    def _normalise_rollback(cls, value: str | None) -> str | None:
        return normalise_action(value) if value and value.strip() else None

    @field_validator("services", mode="after")
    @classmethod
    def _normalise_services(cls, value: list[str]) -> list[str]:
        return [s.strip().lower() for s in value]

    def applies_to(self, service: str) -> bool:
        return "*" in self.services or service.strip().lower() in self.services


def render_action(
    action: CatalogueAction, service: str, params: Mapping[str, Any], missing: Iterable[str] = ()
) -> str:
    """A deterministic one-line rendering: ``restart_nginx(nodes='all') on elastic-downloads``;
    a missing required parameter shows as ``pop=<required string>``."""
    values = {name: repr(value) for name, value in params.items()}
    values.update({name: f"<required {action.parameters[name].type}>" for name in missing})
    args = ", ".join(f"{name}={values[name]}" for name in sorted(values))
    return f"{action.id}({args}) on {service}"


def parse_entries(raw: Any, origin: str) -> list[CatalogueAction]:
    """The entries of ``{"actions": [...]}``, each validated (ids unique; rollback actions are
    checked by ``ActionCatalogue`` once every entry is known)."""
    actions = raw.get("actions") if isinstance(raw, Mapping) else None
    if not isinstance(actions, list):
        raise InputError(f"{origin}: expected an object with an 'actions' list")
    parsed: list[CatalogueAction] = []
    seen: set[str] = set()
    for position, item in enumerate(actions):
        where = f"{origin}: actions[{position}]"
        if not isinstance(item, Mapping):
            raise InputError(f"{where}: expected an object")
        if isinstance(item.get("id"), str) and item["id"].strip():
            where += f" (id {item['id'].strip()})"
        try:
            action = CatalogueAction.model_validate(item)
        except ValidationError as exc:
            raise InputError(f"{where}: {describe_validation_error(exc)}") from exc
        if action.id in seen:
            raise InputError(f"{where}: field 'id': duplicate action id {action.id}")
        seen.add(action.id)
        parsed.append(action)
    return parsed


class ActionCatalogue:
    """The loaded catalogue, keyed by lower-cased action id.

    Args:
        actions: the validated actions (ids must be unique; rollback actions must exist).
        source: where they came from, for messages.
    """

    def __init__(self, actions: Iterable[CatalogueAction], source: str = "actions") -> None:
        self.source = source
        self._actions: dict[str, CatalogueAction] = {}
        for action in actions:
            if action.id in self._actions:
                raise InputError(f"{source}: duplicate action id {action.id}")
            self._actions[action.id] = action
        for action in self._actions.values():
            if action.rollback_action and action.rollback_action not in self._actions:
                raise InputError(
                    f"{source}: action {action.id}: field 'rollback_action': "
                    f"{action.rollback_action} is not in the catalogue"
                )

    @classmethod
    def from_data(cls, raw: Any, origin: str) -> ActionCatalogue:
        """Validate ``{"actions": [...]}``; errors name ``origin``, the position and the field."""
        return cls(parse_entries(raw, origin), source=origin)

    @classmethod
    def load(cls, path: Path, *, missing_ok: bool = False) -> ActionCatalogue:
        """Load ``data/actions.json``. A missing file or an empty ``actions`` list is an error
        naming the file (and the key) unless ``missing_ok`` (tests: then the catalogue may be
        empty, every executor refuses every action and the gate blocks on
        ``knowledge_unavailable``)."""

        if missing_ok and not Path(path).exists():
            return cls([], source=str(path))
        catalogue = cls.from_data(read_json(Path(path)), str(path))
        if not missing_ok and not len(catalogue):
            raise InputError(f"{path}: key 'actions' is empty; the governor needs a catalogue to execute anything")
        return catalogue

    def merged(self, extra: Iterable[CatalogueAction], source: str) -> ActionCatalogue:
        """This catalogue with ``extra`` entries added, replacing same ids (scenario knowledge)."""
        by_id = {a.id: a for a in self}
        by_id.update({a.id: a for a in extra})
        return ActionCatalogue(by_id.values(), source=source)

    # --- lookups ---------------------------------------------------------------------------

    def __contains__(self, action_id: object) -> bool:
        return isinstance(action_id, str) and normalise_action(action_id) in self._actions

    def __iter__(self) -> Iterator[CatalogueAction]:
        return iter(self._actions.values())

    def __len__(self) -> int:
        return len(self._actions)

    def get(self, action_id: str) -> CatalogueAction | None:
        """The action with this id (case-insensitive), or ``None``."""
        return self._actions.get(normalise_action(action_id or ""))

    def ids(self) -> list[str]:
        """Every action id, lower-cased and sorted."""
        return sorted(self._actions)

    def applies_to(self, action_id: str, service: str) -> bool:
        """True when the action is catalogued and may run on ``service``."""
        return self.lookup(action_id, service)[0] is not None

    def lookup(self, action_id: str, service: str) -> tuple[CatalogueAction | None, str]:
        """The entry of ``action_id`` for ``service`` (catalogued for it or for ``*``), or
        ``(None, why not)``. The executors and the gate's facts read actions only through this."""
        action = self.get(action_id)
        if action is None:
            return None, f"action '{action_id}' is not in the action catalogue"
        if not action.applies_to(service):
            return None, (f"action {action.id} does not apply to service {service} "
                          f"(catalogued for {', '.join(action.services)})")
        return action, ""

    def facts(self, action_id: str, service: str) -> ActionFacts:
        """What the gate reads about ``action_id`` on ``service`` (see ``lookup``)."""
        action, _ = self.lookup(action_id, service)
        if action is None:
            other = self.get(action_id)
            return ActionFacts(action=normalise_action(action_id), catalogued=False,
                               services=list(other.services) if other else [])
        return ActionFacts(action=action.id, catalogued=True, services=list(action.services),
                           automation=action.automation, risk=action.risk, reversible=action.reversible)

    def validate_parameters(
        self,
        action_id: str,
        params: Mapping[str, Any] | None,
        *,
        context: Mapping[str, Any] | None = None,
        skip: Iterable[str] = (),
    ) -> dict[str, Any]:
        """The parameters to run ``action_id`` with: given values checked, defaults filled.

        Args:
            action_id: a catalogued action id.
            params: the values supplied (``None`` means none).
            context: values a parameter of the same name takes when not supplied, before its
                default (the executors pass ``{"service": incident.service}``).
            skip: required parameters to leave out instead of rejecting (dry-run placeholders).

        Raises ``InputError`` naming the action and the parameter when the action is not
        catalogued, a parameter is unknown, a required one is missing or a value has the
        wrong type.
        """
        action = self.get(action_id)
        if action is None:
            raise InputError(f"action '{action_id}' is not in the action catalogue")
        given = dict(params or {})
        skipped = set(skip)
        unknown = sorted(set(given) - set(action.parameters))
        if unknown:
            raise InputError(f"action {action.id}: unknown parameter(s) {', '.join(unknown)}")
        out: dict[str, Any] = {}
        for name, spec in action.parameters.items():
            if name in given and given[name] is not None:
                value = given[name]
            elif context and context.get(name) is not None:
                value = context[name]
            elif spec.has_default:
                value = spec.default
            elif spec.required and name not in skipped:
                raise InputError(f"action {action.id}: parameter '{name}' ({spec.type}) is required")
            else:
                continue
            if not value_has_type(value, spec.type):
                raise InputError(
                    f"action {action.id}: parameter '{name}' must be of type {spec.type}, got {type(value).__name__}"
                )
            out[name] = value
        return out

    def missing_parameters(
        self, action_id: str, params: Mapping[str, Any] | None = None, *, context: Mapping[str, Any] | None = None
    ) -> list[str]:
        """Required parameters that neither ``params``, ``context`` nor a default supply."""
        action = self.get(action_id)
        if action is None:
            return []
        given = {k: v for k, v in (params or {}).items() if v is not None}
        ctx = {k: v for k, v in (context or {}).items() if v is not None}
        return [n for n, s in action.parameters.items()
                if s.required and not s.has_default and n not in given and n not in ctx]


class PreparedAction(BaseModel):
    """A catalogued action checked for one incident, with its validated parameters."""

    model_config = ConfigDict(frozen=True)

    action: CatalogueAction
    service: str
    parameters: dict[str, Any]
    missing: list[str] = Field(default_factory=list)

    @property
    def rendered(self) -> str:
        return render_action(self.action, self.service, self.parameters, self.missing)

    def describe(self) -> str:
        """``restart_nginx(nodes='all') on elastic-downloads [risk high, irreversible]``."""
        a = self.action
        if a.reversible:
            undo = f"reversible via {a.rollback_action}" if a.rollback_action else "reversible"
        else:
            undo = "irreversible"
        return f"{self.rendered} [risk {a.risk}, {undo}]"


def prepare_action(
    catalogue: ActionCatalogue,
    incident: Incident,
    gate: GateOutput,
    *,
    parameters: Mapping[str, Any] | None = None,
    authorised_by: str | None = None,
    allow_missing: bool = False,
) -> PreparedAction:
    """Every check an executor makes before it runs anything. ``authorised_by=None`` skips the
    authorisation check (for previews); otherwise a blocked decision needs a human (anyone but
    ``"gate"``) to have authorised it. ``allow_missing`` lets required parameters nobody
    supplied through as ``missing`` (a dry run renders them as placeholders; nothing real runs).

    Raises ``ExecutionRefused`` with one line saying why.
    """
    action_id = (gate.proposed_action or "").strip()
    if not action_id:
        raise ExecutionRefused(f"{incident.id}: no action to execute")
    if gate.incident_id != incident.id:
        raise ExecutionRefused(f"{incident.id}: the decision {gate.decision_id} is for {gate.incident_id}")
    if authorised_by is not None and gate.decision != "execute" and authorised_by.strip() in ("", "gate"):
        raise ExecutionRefused(f"{incident.id}: the gate blocked this action and no human authorised it")
    action, why_not = catalogue.lookup(action_id, incident.service)
    if action is None:
        raise ExecutionRefused(f"{incident.id}: {why_not}")
    if action.automation == "never":
        raise ExecutionRefused(f"{incident.id}: action {action.id} is never run by the governor "
                               "(catalogue automation 'never'); do it by hand, outside the governor")
    context = {"service": incident.service}
    missing = catalogue.missing_parameters(action.id, parameters, context=context) if allow_missing else []
    try:
        params = catalogue.validate_parameters(action.id, parameters, context=context, skip=missing)
    except InputError as exc:
        raise ExecutionRefused(f"{incident.id}: {exc}") from exc
    return PreparedAction(action=action, service=incident.service.strip().lower(), parameters=params,
                          missing=missing)
