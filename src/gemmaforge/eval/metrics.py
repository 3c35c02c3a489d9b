"""Generation metrics: exact match (JSON-aware) and JSON validity.

Every metric takes the model's replies as plain strings and returns a fraction in [0, 1], so
base and adapter scores are directly comparable. The normalisation is small and fixed, and
documented on each function, because a metric that forgives more than its name says hides
exactly the errors fine-tuning is meant to fix.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

_NOT_JSON = object()
"""Marker for text that does not parse as JSON (None is a valid JSON value: null)."""


def parse_json(text: str) -> Any:
    """The JSON value in `text` after stripping surrounding whitespace, or `_NOT_JSON`."""
    try:
        return json.loads(text.strip())
    except ValueError:
        return _NOT_JSON


def json_equal(a: Any, b: Any) -> bool:
    """Equality of parsed JSON values that, unlike Python's `==`, keeps booleans apart from
    numbers (`true` is not `1`). Key order is ignored; `34` equals `34.0`."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and a == b


def matches(prediction: str, reference: str) -> bool:
    """Whether one prediction exactly matches its reference, after normalisation.

    - Surrounding whitespace is stripped from both.
    - If the reference is valid JSON, the prediction must be valid JSON with an equal value
      (`json_equal`): spacing, key order and `34` vs `34.0` do not count; anything else does,
      including extra text around the JSON (a code fence, a preamble). Invalid JSON is a miss.
    - Otherwise the stripped strings must be identical (case and inner spacing count).
    """
    expected = parse_json(reference)
    if expected is _NOT_JSON:
        return prediction.strip() == reference.strip()
    got = parse_json(prediction)
    return got is not _NOT_JSON and json_equal(got, expected)


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Fraction of predictions that match their reference (see `matches` for the rules)."""
    _check_lengths(predictions, references)
    return sum(matches(p, r) for p, r in zip(predictions, references, strict=True)) / len(
        predictions
    )


def json_validity(predictions: Sequence[str]) -> float:
    """Fraction of predictions that parse as JSON once surrounding whitespace is stripped.

    Any JSON value counts (an object, a list, a number, a string, true/false/null).
    """
    if not predictions:
        raise ValueError("json_validity needs at least one prediction")
    return sum(parse_json(p) is not _NOT_JSON for p in predictions) / len(predictions)


def _check_lengths(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(
            f"{len(predictions)} predictions but {len(references)} references: "
            "they must pair up one to one"
        )
    if not predictions:
        raise ValueError("exact_match needs at least one prediction")
