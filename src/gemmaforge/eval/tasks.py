"""Evaluation tasks: which metrics score a set of replies, chosen by short name.

Each task scores the whole set (`corpus`, a dict of named numbers; corpus-level where the
metric is defined that way, as BLEU is) and each reply on its own (`example`, for the
per-example table). Normalisation is stated per metric and kept small: case, punctuation and
spacing count unless a metric's own definition says otherwise, so a score never forgives
more than its name says.

| task | metrics | per example |
| --- | --- | --- |
| exact | exact_match (JSON-aware, see `metrics.matches`) | 1 / 0 |
| classification | accuracy, macro_f1 over the reference labels | 1 / 0 |
| json | json_validity, exact_match, field_accuracy and each field's accuracy | 1 / 0 |
| transcription | wer, cer (jiwer; lower is better) | wer |
| translation | bleu, chrf (sacrebleu, 0-100) | chrf |
| summary | rouge_l (F1 of the longest common subsequence of words) | rouge_l |
| tool_calls | exact_match (every call's name and arguments), name_accuracy | 1 / 0 |
| perplexity | perplexity only, no generation | - |
| preference | preference_accuracy: chosen reply the likelier (eval/preference.py) | - |

Every task also reports perplexity (computed in `eval/evaluate.py`, from the loss on the
references).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gemmaforge.eval.metrics import exact_match, json_equal, json_validity, matches
from gemmaforge.eval.metrics import parse_json as _parse

Scores = dict[str, float | dict[str, float]]


@dataclass(frozen=True)
class Task:
    name: str
    headline: str
    """The metric a one-line summary quotes."""
    lower_is_better: bool
    corpus: Callable[[Sequence[str], Sequence[str]], Scores] | None
    """Scores of all replies against their references; None: no generation (perplexity)."""
    example: Callable[[str, str], float] | None


def _exact(predictions: Sequence[str], references: Sequence[str]) -> Scores:
    return {"exact_match": exact_match(predictions, references)}


def _match(prediction: str, reference: str) -> float:
    return float(matches(prediction, reference))


def classification(predictions: Sequence[str], references: Sequence[str]) -> Scores:
    """Accuracy, and macro F1 over the labels that occur in the references.

    A label is the stripped text (case counts). A prediction outside the reference labels is
    wrong for its row's true label (lowers recall) and adds no class of its own.
    """
    predicted = [p.strip() for p in predictions]
    truth = [r.strip() for r in references]
    f1s = []
    for label in sorted(set(truth)):
        hits = sum(p == t == label for p, t in zip(predicted, truth, strict=True))
        said, real = predicted.count(label), truth.count(label)
        f1s.append(2 * hits / (said + real))
    accuracy = sum(p == t for p, t in zip(predicted, truth, strict=True)) / len(truth)
    return {"accuracy": accuracy, "macro_f1": sum(f1s) / len(f1s)}


def structured(predictions: Sequence[str], references: Sequence[str]) -> Scores:
    """JSON validity, exact match and field accuracy.

    field_accuracy: of all (reference object, key) pairs, the fraction where the reply is a
    JSON object with that key and an equal value (`json_equal`); `fields` has it per key.
    References that are not objects count only towards validity and exact match.
    """
    right: dict[str, int] = {}
    seen: dict[str, int] = {}
    for prediction, reference in zip(predictions, references, strict=True):
        expected = _parse(reference)
        if not isinstance(expected, dict):
            continue
        got = _parse(prediction)
        got = got if isinstance(got, dict) else {}
        for key, value in expected.items():
            seen[key] = seen.get(key, 0) + 1
            right[key] = right.get(key, 0) + (key in got and json_equal(got[key], value))
    scores: Scores = {
        "json_validity": json_validity(predictions),
        "exact_match": exact_match(predictions, references),
    }
    if seen:
        scores["field_accuracy"] = sum(right.values()) / sum(seen.values())
        scores["fields"] = {key: right[key] / seen[key] for key in seen}
    return scores


def transcription(predictions: Sequence[str], references: Sequence[str]) -> Scores:
    """Word and character error rates over the whole set (total edits / reference length).

    jiwer's default: surrounding and repeated spaces are ignored; case and punctuation count.
    """
    import jiwer

    refs, hyps = list(references), list(predictions)
    return {"wer": jiwer.wer(refs, hyps), "cer": jiwer.cer(refs, hyps)}


def _wer(prediction: str, reference: str) -> float:
    import jiwer

    return jiwer.wer(reference, prediction)


def translation(predictions: Sequence[str], references: Sequence[str]) -> Scores:
    """Corpus BLEU and chrF, with sacrebleu's defaults (13a tokenisation, case counts)."""
    import sacrebleu

    refs = [list(references)]
    return {
        "bleu": sacrebleu.corpus_bleu(list(predictions), refs).score,
        "chrf": sacrebleu.corpus_chrf(list(predictions), refs).score,
    }


def _chrf(prediction: str, reference: str) -> float:
    import sacrebleu

    return sacrebleu.sentence_chrf(prediction, [reference]).score


def rouge_words(text: str) -> list[str]:
    """ROUGE's tokenisation: lower-case, runs of letters and digits (punctuation dropped)."""
    return re.findall(r"[^\W_]+", text.lower())


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (dynamic programming, O(len(a) * len(b)))."""
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1: the harmonic mean of LCS/len(prediction) and LCS/len(reference)."""
    pred, ref = rouge_words(prediction), rouge_words(reference)
    common = lcs_length(pred, ref)
    return 0.0 if common == 0 else 2 * common / (len(pred) + len(ref))


def summary(predictions: Sequence[str], references: Sequence[str]) -> Scores:
    """Mean ROUGE-L F1 over the examples."""
    scores = [rouge_l(p, r) for p, r in zip(predictions, references, strict=True)]
    return {"rouge_l": sum(scores) / len(scores)}


def _calls(text: str) -> list | None:
    value = _parse(text)
    return value if isinstance(value, list) else None


def _tool_match(prediction: str, reference: str) -> float:
    """1 when the predicted calls (a JSON list of {"name", "arguments"}) are the reference's:
    the same functions, in order, with equal arguments (JSON values compared, not text)."""
    predicted, expected = _calls(prediction), _calls(reference)
    return float(predicted is not None and predicted == expected)


def tool_calls(predictions: Sequence[str], references: Sequence[str]) -> Scores:
    names = [
        [c.get("name") for c in _calls(p) or [] if isinstance(c, dict)]
        == [c["name"] for c in _calls(r) or []]
        for p, r in zip(predictions, references, strict=True)
    ]
    exact = [_tool_match(p, r) for p, r in zip(predictions, references, strict=True)]
    n = max(len(references), 1)
    return {"exact_match": sum(exact) / n, "name_accuracy": sum(names) / n}


TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task("exact", "exact_match", False, _exact, _match),
        Task("classification", "accuracy", False, classification, _match),
        Task("json", "exact_match", False, structured, _match),
        Task("transcription", "wer", True, transcription, _wer),
        Task("translation", "chrf", False, translation, _chrf),
        Task("summary", "rouge_l", False, summary, rouge_l),
        Task("tool_calls", "exact_match", False, tool_calls, _tool_match),
        Task("perplexity", "perplexity", True, None, None),
        # Preference pairs: scored by eval/preference.py, no generation.
        Task("preference", "preference_accuracy", False, None, None),
    )
}


MAX_LABELS = 20
"""At most this many distinct short references make a label set (classification)."""
MAX_LABEL_CHARS = 40


def pick_task(name: str, references: Sequence[str] | None) -> Task:
    """The task called `name`; for "auto": json when every reference is a JSON object or
    array; classification when the references are a small set of short labels (each used
    at least twice on average, at most MAX_LABELS of them); else exact. `references` is None
    for completion-format data (no replies): then auto means perplexity."""
    if name != "auto":
        return TASKS[name]
    if references is None:
        return TASKS["perplexity"]
    if references and all(isinstance(_parse(r), dict | list) for r in references):
        return TASKS["json"]
    return TASKS["classification" if is_label_set(references) else "exact"]


def is_label_set(references: Sequence[str]) -> bool:
    labels = {r.strip() for r in references}
    short = all(len(label) <= MAX_LABEL_CHARS and "\n" not in label for label in labels)
    return len(references) >= 4 and len(labels) <= min(MAX_LABELS, len(references) / 2) and short
