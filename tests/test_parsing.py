"""Agent replies arrive as text: plain JSON, fenced JSON or prose with one object; else rejected."""

from __future__ import annotations

import pytest

from safety_governor.parsing import ReplyParseError, extract_json_object


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
