"""Task metrics against expectations worked out by hand (no model)."""

from __future__ import annotations

import pytest

from gemmaforge.eval.tasks import (
    TASKS,
    classification,
    lcs_length,
    pick_task,
    rouge_l,
    rouge_words,
    structured,
    summary,
    transcription,
    translation,
)
from gemmaforge.infer.stream import first_stop, held_back


def test_classification_accuracy_and_macro_f1():
    predictions = ["cat", "dog", " cat\n", "bird"]
    references = ["cat", "dog", "dog", "cat"]
    scores = classification(predictions, references)
    # Rows 0 and 1 right. cat: 1 hit, predicted twice, true twice -> F1 2*1/(2+2) = 0.5.
    # dog: 1 hit, predicted once, true twice -> 2/3. "bird" adds no class of its own.
    assert scores["accuracy"] == 0.5
    assert scores["macro_f1"] == pytest.approx((0.5 + 2 / 3) / 2)


def test_classification_case_counts():
    assert classification(["Cat"], ["cat"]) == {"accuracy": 0.0, "macro_f1": 0.0}


def test_structured_fields():
    references = ['{"a": 1, "b": "x"}', '{"a": 2, "b": "y"}', '{"a": 3, "b": "w"}']
    predictions = ['{"b": "x", "a": 1}', '{"a": 2, "b": "z"}', "not json"]
    scores = structured(predictions, references)
    assert scores["json_validity"] == pytest.approx(2 / 3)
    assert scores["exact_match"] == pytest.approx(1 / 3)
    # a: right in rows 0 and 1; b: only in row 0; row 2 is not an object -> 3 of 6 fields.
    assert scores["fields"] == {"a": pytest.approx(2 / 3), "b": pytest.approx(1 / 3)}
    assert scores["field_accuracy"] == 0.5


def test_structured_true_is_not_one():
    scores = structured(['{"ok": 1}'], ['{"ok": true}'])
    assert scores["fields"] == {"ok": 0.0}


def test_transcription_word_and_character_error_rates():
    references = ["the cat sat", "hello world"]
    predictions = ["the cat sit", "hello"]
    scores = transcription(predictions, references)
    # Words: one substitution + one deletion over 5 reference words.
    assert scores["wer"] == pytest.approx(2 / 5)
    # Characters: a->i (1) and " world" deleted (6) over 11 + 11 reference characters.
    assert scores["cer"] == pytest.approx(7 / 22)
    assert transcription(["  the   cat sat "], ["the cat sat"])["wer"] == 0.0


def test_translation_bleu_and_chrf_bounds():
    same = translation(["the cat sat on the mat"], ["the cat sat on the mat"])
    assert same["bleu"] == pytest.approx(100.0)
    assert same["chrf"] == pytest.approx(100.0)
    other = translation(["zzz qqq"], ["the cat sat on the mat"])
    assert other["bleu"] == pytest.approx(0.0)
    partial = translation(["the cat sat on a mat"], ["the cat sat on the mat"])
    assert 0 < partial["bleu"] < 100 and 0 < partial["chrf"] < 100


def test_rouge_l():
    assert lcs_length(list("ABCBDAB"), list("BDCABA")) == 4  # the textbook example
    assert rouge_words("The cat, the MAT!") == ["the", "cat", "the", "mat"]
    # LCS the-cat-on-the-mat = 5 words of 6 in each: F1 = 2*5/12.
    assert rouge_l("the cat sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6)
    assert rouge_l("The cat!", "the cat") == 1.0
    assert rouge_l("", "the cat") == 0.0
    assert summary(["a b", "x"], ["a b", "y"]) == {"rouge_l": 0.5}


def test_auto_task_from_references():
    assert pick_task("auto", ['{"a": 1}', "[1, 2]"]).name == "json"
    assert pick_task("auto", ['{"a": 1}', "yes"]).name == "exact"
    assert pick_task("auto", ["42"]).name == "exact"  # a bare number is not structured output
    assert pick_task("auto", None).name == "perplexity"
    assert pick_task("translation", ["x"]) is TASKS["translation"]


def test_auto_picks_classification_for_a_small_label_set():
    labels = ["positive", "negative", "neutral"] * 6
    assert pick_task("auto", labels).name == "classification"
    # Free-text replies, all different, stay exact match; so do long repeated replies.
    assert pick_task("auto", [f"The answer is {i}." for i in range(18)]).name == "exact"
    assert pick_task("auto", ["x" * 80, "y" * 80] * 5).name == "exact"
    assert pick_task("auto", ["yes", "no"]).name == "exact"  # too few to tell
    assert TASKS["transcription"].lower_is_better and not TASKS["summary"].lower_is_better


def test_stop_strings_hold_back_only_what_could_start_one():
    assert held_back("The sky is bl", ["blue"]) == 2
    assert held_back("ab", ["bc", "abx"]) == 2  # the longest over all stop strings
    assert held_back("The sky", ["blue"]) == 0
    assert first_stop("The sky is blue.", ["blue", "sky"], 0) == 4
    assert first_stop("The sky is blue.", ["blue"], 11) == 11
    assert first_stop("The sky", ["blue"], 0) is None
