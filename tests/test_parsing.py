"""Agent replies arrive as text: plain JSON, fenced JSON or prose with one object; else rejected."""

from __future__ import annotations

import json

import pytest

from safety_governor.models import PlanOutput, StressReport
from safety_governor.parsing import MAX_REPLY_CHARS, ReplyParseError, brace_spans, extract_json_object
from safety_governor.pipeline import parse_agent_output


def test_plain_json():
    assert extract_json_object('{"a": 1}') == {"a": 1}


def test_fenced_json_with_prose_around_it():
    text = 'Here is my plan:\n```json\n{"proposed_action": "x", "n": [1, 2]}\n```\nThanks.'
    assert extract_json_object(text) == {"proposed_action": "x", "n": [1, 2]}


def test_prose_with_one_embedded_object():
    assert extract_json_object('I propose {"a": {"b": "}"}} as the plan.') == {"a": {"b": "}"}}


def test_the_same_object_repeated_counts_once():
    assert extract_json_object('{"a": 1} and again {"a": 1}') == {"a": 1}


@pytest.mark.parametrize(
    "text",
    ["", "   ", "no json here at all", "[1, 2, 3]", '{"a": 1} or maybe {"a": 2}', "{not json}", '"just a string"'],
)
def test_anything_else_is_rejected(text):
    with pytest.raises(ReplyParseError):
        extract_json_object(text)


def test_a_fenced_object_plus_a_different_object_in_the_prose_is_ambiguous():
    text = 'Plan:\n```json\n{"proposed_action": "a"}\n```\nOn second thought: {"proposed_action": "b"}'
    with pytest.raises(ReplyParseError, match="2 different JSON objects"):
        extract_json_object(text)


# --- issue 10: duplicate keys, strict confidences, linear extraction ---------------------------


@pytest.mark.parametrize("text", [
    '{"proposed_action": "rollback_last_deploy", "proposed_action": "drop_database_tables"}',
    'Plan:\n```json\n{"a": {"b": 1, "b": 2}}\n```',
    'prose {"x": 1, "x": 1} more prose',
])
def test_a_duplicated_key_anywhere_fails_closed_even_with_equal_values(text):
    with pytest.raises(ReplyParseError, match="duplicate key"):
        extract_json_object(text)


@pytest.mark.parametrize("confidence", [True, False, "10", "7.5", None, [7]])
def test_a_confidence_that_is_not_a_json_number_is_invalid_output(confidence):
    reply = json.dumps({"proposed_action": "rollback_last_deploy", "confidence_initial": confidence})
    with pytest.raises(ValueError, match="confidence_initial"):
        parse_agent_output(reply, PlanOutput)
    stress = json.dumps({"claim_results": [], "confidence_post_stress": confidence})
    if confidence is not None:
        with pytest.raises(ValueError, match="confidence_post_stress"):
            parse_agent_output(stress, StressReport)


@pytest.mark.parametrize("confidence", [0, 7, 7.5, 10])
def test_integer_and_float_confidences_are_accepted(confidence):
    plan, _ = parse_agent_output(json.dumps({"proposed_action": "x", "confidence_initial": confidence}), PlanOutput)
    assert plan.confidence_initial == confidence


@pytest.mark.parametrize("text", ["{" * MAX_REPLY_CHARS, "{}" * (MAX_REPLY_CHARS // 2), '{"a":' * 40_000,
                                  "```" * 60_000])
def test_hostile_replies_at_the_size_cap_are_refused(text):
    # Speed is measured by bench/bench_parsing.py; here the outcome: no object, fail closed.
    with pytest.raises(ReplyParseError):
        extract_json_object(text)


def test_brace_spans_ignore_braces_in_strings_and_unbalanced_ones():
    text = 'say {"a": "}{", "b": {"c": 1}} and { unclosed'
    spans = [text[s:e] for s, e in brace_spans(text)]
    assert spans == ['{"c": 1}', '{"a": "}{", "b": {"c": 1}}']


def test_an_object_after_an_unclosed_brace_or_inside_non_json_braces_is_still_found():
    assert extract_json_object('prose { unclosed then {"a": 1} end') == {"a": 1}
    assert extract_json_object('note {x: {"a": 1}} end') == {"a": 1}
