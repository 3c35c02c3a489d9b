"""Exact match and JSON validity, against expectations worked out by hand."""

from __future__ import annotations

import pytest

from gemmaforge.eval.metrics import exact_match, json_equal, json_validity, matches

REF = '{"name": "Maria Silva", "age": 34, "city": "Lisbon"}'


@pytest.mark.parametrize(
    "prediction",
    [
        REF,
        '  {"name":"Maria Silva","age":34,"city":"Lisbon"}\n',  # spacing and outer whitespace
        '{"city": "Lisbon", "name": "Maria Silva", "age": 34}',  # key order
        '{"name": "Maria Silva", "age": 34.0, "city": "Lisbon"}',  # 34.0 is the number 34
    ],
)
def test_json_reference_matches_equal_values(prediction):
    assert matches(prediction, REF)


@pytest.mark.parametrize(
    "prediction",
    [
        '{"name": "Maria Silva", "age": "34", "city": "Lisbon"}',  # a string is not a number
        '{"name": "maria silva", "age": 34, "city": "Lisbon"}',  # case counts in values
        '{"name": "Maria Silva", "age": 34}',  # missing key
        '{"name": "Maria Silva", "age": 34, "city": "Lisbon", "job": null}',  # extra key
        '{"name": "Maria Silva", "age": 34, "city": "Lisbon"',  # invalid JSON
        '```json\n{"name": "Maria Silva", "age": 34, "city": "Lisbon"}\n```',  # code fence
        'Sure! {"name": "Maria Silva", "age": 34, "city": "Lisbon"}',  # preamble
        "",
    ],
)
def test_json_reference_misses(prediction):
    assert not matches(prediction, REF)


def test_null_must_be_null():
    reference = '{"name": "Ben", "age": null, "city": "Oslo"}'
    assert matches('{"name": "Ben", "age": null, "city": "Oslo"}', reference)
    assert not matches('{"name": "Ben", "city": "Oslo"}', reference)
    assert not matches('{"name": "Ben", "age": 0, "city": "Oslo"}', reference)
    assert not matches('{"name": "Ben", "age": "null", "city": "Oslo"}', reference)


def test_booleans_are_not_numbers():
    # Python's == says True == 1; JSON's true is not 1.
    assert not json_equal(True, 1)
    assert not json_equal([0], [False])
    assert json_equal({"a": [1, True, None]}, {"a": [1.0, True, None]})
    assert not matches("1", "true")


def test_plain_text_reference_compares_stripped_strings():
    assert matches("  Paris\n", "Paris")
    assert not matches("paris", "Paris")
    assert not matches("Paris.", "Paris")
    assert not matches("Paris  France", "Paris France")


def test_exact_match_is_the_fraction_matched():
    predictions = [
        REF,
        '{"name": "Maria Silva"}',
        "not json",
        ' {"age":34,"name":"Maria Silva","city":"Lisbon"}',
    ]
    references = [REF, REF, REF, REF]
    assert exact_match(predictions, references) == 0.5  # rows 1 and 4 match
    assert exact_match(["a"], ["a"]) == 1.0
    assert exact_match(["a", "b", "c", "d", "e"], ["a", "x", "x", "x", "x"]) == 0.2


def test_json_validity_counts_parseable_replies():
    # Any JSON value counts: an object, a number, null; a fence or a trailing comma does not.
    replies = ['{"a": 1}', " 42 ", "null", "```json\n{}\n```", '{"a": 1,}', "hello"]
    assert json_validity(replies) == 0.5


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: exact_match(["a", "b"], ["a"]), "2 predictions but 1 references"),
        (lambda: exact_match([], []), "at least one"),
        (lambda: json_validity([]), "at least one"),
    ],
)
def test_bad_inputs_are_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()
