"""The action catalogue (data/actions.json): typed, validated, and the one list executors accept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from safety_governor.catalogue import ActionCatalogue, CatalogueAction, prepare_action
from safety_governor.config import DEFAULT_DATA_DIR
from safety_governor.errors import ExecutionRefused, InputError
from safety_governor.models import GateOutput, Incident, PlanOutput

ACTIONS = DEFAULT_DATA_DIR / "actions.json"


@pytest.fixture(scope="module")
def catalogue() -> ActionCatalogue:
    return ActionCatalogue.load(ACTIONS)


def _write(tmp_path: Path, actions: list[dict]) -> Path:
    path = tmp_path / "actions.json"
    path.write_text(json.dumps({"actions": actions}), encoding="utf-8")
    return path


def _action(**overrides) -> dict:
    base = {"id": "restart_widget", "description": "Restart the widget.", "services": ["widget"],
            "parameters": {"count": {"type": "integer", "description": "how many", "default": 1, "required": False}},
            "reversible": False, "rollback_action": None, "risk": "low"}
    return {**base, **overrides}


def test_the_bundled_catalogue_has_every_action_typed_and_every_rollback_resolvable(catalogue):
    assert len(catalogue) == 46
    for action in catalogue:
        assert isinstance(action, CatalogueAction)
        if action.rollback_action:
            assert catalogue.get(action.rollback_action) is not None
    assert catalogue.get("RESTART_NGINX").id == "restart_nginx"
    assert catalogue.ids() == sorted(catalogue.ids())


def test_a_mistyped_default_is_reported_with_file_position_id_and_field(tmp_path):
    path = _write(tmp_path, [_action(), _action(id="scale_widget", parameters={
        "replicas": {"type": "integer", "default": "three", "required": False}})])
    with pytest.raises(InputError) as err:
        ActionCatalogue.load(path)
    message = str(err.value)
    assert str(path) in message and "actions[1]" in message and "scale_widget" in message
    assert "parameters.replicas" in message


def test_an_unknown_field_a_bad_risk_and_a_missing_rollback_target_are_each_rejected(tmp_path):
    with pytest.raises(InputError, match=r"actions\[0\].*field 'colour'"):
        ActionCatalogue.load(_write(tmp_path, [_action(colour="red")]))
    with pytest.raises(InputError, match=r"field 'risk'"):
        ActionCatalogue.load(_write(tmp_path, [_action(risk="extreme")]))
    with pytest.raises(InputError, match="rollback_action.*undo_widget is not in the catalogue"):
        ActionCatalogue.load(_write(tmp_path, [_action(reversible=True, rollback_action="undo_widget")]))


def test_duplicate_ids_are_rejected_whatever_their_case(tmp_path):
    with pytest.raises(InputError, match=r"actions\[1\].*duplicate action id restart_widget"):
        ActionCatalogue.load(_write(tmp_path, [_action(), _action(id="Restart_Widget")]))


def test_a_missing_file_is_an_error_unless_allowed_and_then_the_catalogue_is_empty(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        ActionCatalogue.load(tmp_path / "nope.json")
    assert len(ActionCatalogue.load(tmp_path / "nope.json", missing_ok=True)) == 0


def test_validate_parameters_fills_defaults_and_takes_the_service_from_context(catalogue):
    assert catalogue.validate_parameters("throttle_traffic_and_tune_pool", None) == {
        "traffic_percent": 70, "pool_max": 60}
    assert catalogue.validate_parameters("throttle_traffic_and_tune_pool", {"pool_max": 80})["pool_max"] == 80
    params = catalogue.validate_parameters("rollback_last_deploy", {}, context={"service": "checkout-web"})
    assert params["service"] == "checkout-web"


def test_validate_parameters_rejects_unknown_missing_and_mistyped_values(catalogue):
    with pytest.raises(InputError, match="unknown parameter.*force"):
        catalogue.validate_parameters("restart_api_pods", {"force": True})
    with pytest.raises(InputError, match="parameter 'pop' \\(string\\) is required"):
        catalogue.validate_parameters("shift_traffic_to_healthy_pop", {})
    with pytest.raises(InputError, match="'max_unavailable' must be of type integer, got bool"):
        catalogue.validate_parameters("restart_api_pods", {"max_unavailable": True})
    with pytest.raises(InputError, match="'replicas' must be of type integer, got str"):
        catalogue.validate_parameters("scale_api_replicas", {"replicas": "12"})
    with pytest.raises(InputError, match="not in the action catalogue"):
        catalogue.validate_parameters("reboot_the_internet", {})


def test_applies_to_respects_service_lists_and_the_wildcard(catalogue):
    assert catalogue.applies_to("restart_nginx", "elastic-downloads")
    assert not catalogue.applies_to("restart_nginx", "payments-api")
    assert catalogue.applies_to("rollback_last_deploy", "anything-at-all")
    assert not catalogue.applies_to("reboot_the_internet", "payments-api")


def test_the_gate_reads_the_executors_catalogue_entry_for_the_incidents_service(governor):
    assert governor.pipeline.catalogue() is governor.executor.catalogue
    downloads = Incident(id="inc-c", service="elastic-downloads", severity="high", summary="503s")
    payments = downloads.model_copy(update={"service": "payments-api"})
    plan = PlanOutput(proposed_action="Restart_Nginx", confidence_initial=8)
    known = governor.pipeline.gate_facts(downloads, plan).action
    assert known is not None and known.catalogued and known.automation == "approval" and not known.reversible
    elsewhere = governor.pipeline.gate_facts(payments, plan).action
    assert elsewhere is not None and not elsewhere.catalogued and elsewhere.services == ["elastic-downloads"]
    missing = governor.pipeline.gate_facts(downloads, plan.model_copy(update={"proposed_action": "compact_x"}))
    assert missing.action is not None and not missing.action.catalogued and missing.action.services == []
    assert missing.knowledge.available


def test_every_entry_sets_automation_deliberately_and_the_never_three_are_never(catalogue):
    raw = json.loads(ACTIONS.read_text(encoding="utf-8"))["actions"]
    assert all("automation" in entry for entry in raw)
    never = {a.id for a in catalogue if a.automation == "never"}
    assert never == {"drop_database_tables", "delete_index", "disable_authentication"}
    for action in catalogue:
        if action.automation == "auto":
            assert action.reversible and action.risk != "high", action.id


@pytest.mark.parametrize(("entry", "expected"), [
    ({"id": "drop_database_tables", "risk": "high", "reversible": False}, "never"),
    ({"id": "Delete_Index", "risk": "low", "reversible": True}, "never"),
    ({"id": "x_restart", "risk": "high", "reversible": True}, "approval"),
    ({"id": "x_purge", "risk": "low", "reversible": False}, "approval"),
    ({"id": "x_scale", "risk": "medium", "reversible": True}, "auto"),
])
def test_automation_defaults_when_an_entry_leaves_it_out(entry, expected):
    action = CatalogueAction.model_validate({**entry, "description": "d", "services": ["*"]})
    assert action.automation == expected


def test_the_executor_refuses_a_never_action_whoever_authorised_it(catalogue):
    incident = Incident(id="inc-n", service="reporting-db", severity="low", summary="disk full")
    gate = GateOutput(incident_id="inc-n", decision="block_and_escalate", approval_required="forbidden",
                      proposed_action="drop_database_tables", confidence_initial=9, confidence_final=9,
                      confidence_delta=0, contradiction_count=0, evidence_coverage=1.0,
                      context_mode="full_context", decision_id="dec-n", config_hash="h")
    with pytest.raises(ExecutionRefused, match="never run by the governor"):
        prepare_action(catalogue, incident, gate, parameters={"tables": "t"}, authorised_by="oncall")


def test_an_empty_or_missing_catalogue_is_an_error_naming_the_file_and_key(tmp_path):
    empty = tmp_path / "actions.json"
    empty.write_text('{"actions": []}', encoding="utf-8")
    with pytest.raises(InputError, match=r"actions.json: key 'actions' is empty"):
        ActionCatalogue.load(empty)
    with pytest.raises(InputError, match="nope.json: file not found"):
        ActionCatalogue.load(tmp_path / "nope.json")
