"""Personal data: the detectors' measured precision and recall on a generated labelled set,
their checksum rules, `data check --pii` (counts per file and column, masked examples), and
`data.redact_pii` replacing identifiers in the very tokens training sees."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from gemmaforge.cli import app
from gemmaforge.data.examples.pii import (
    find_pii,
    iban_ok,
    luhn_ok,
    mask,
    redact_text,
    ssn_ok,
    steuer_id_ok,
)
from pii_samples import score


def test_precision_and_recall_on_the_labelled_set():
    table = score(find_pii)
    print("\nkind | precision | recall | tp | fp | fn")
    for kind, s in table.items():
        print(
            f"{kind} | {s['precision']:.3f} | {s['recall']:.3f} | {s['tp']} | {s['fp']} | {s['fn']}"
        )
    for kind, s in table.items():
        assert s["precision"] >= 0.9, (kind, s)
        assert s["recall"] >= 0.8, (kind, s)
    # The documented misses are real: nine bare digits and national phone forms.
    assert table["SSN"]["recall"] < 1 and table["PHONE"]["recall"] < 1
    # And the documented false positive: a random 16-digit number that happens to pass Luhn.
    assert table["CARD"]["fp"] > 0


def test_checksums():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("GB82 WEST 1234 5698 7654 32") and not iban_ok("GB83 WEST 1234 5698 7654 32")
    assert iban_ok("DE89370400440532013000")
    assert ssn_ok("123-45-6789") and not ssn_ok("666-45-6789") and not ssn_ok("900-45-6789")
    assert not ssn_ok("123-00-6789") and not ssn_ok("123-45-0000")
    assert steuer_id_ok("65929970489") and not steuer_id_ok("65929970488")
    assert not steuer_id_ok("01234567890")
    assert [
        f.kind for f in find_pii("NINO: AB 12 34 56 C, not BG 12 34 56 C nor QQ 12 34 56 C")
    ] == ["NINO"]


def test_redaction_and_masking():
    text = "Mail jane.doe@example.com, card 4111-1111-1111-1111, from 10.0.0.7 on v1.2.3."
    assert redact_text(text) == "Mail <EMAIL>, card <CARD>, from <IP> on v1.2.3."
    assert mask("jane.doe@example.com") == "j***@e***.com"
    assert mask("4111 1111 1111 1111") == "**** **** **** **11"


ROWS = [
    {
        "prompt": "Email jane.doe@example.com about it",
        "response": "Done, IBAN DE89370400440532013000.",
    },
    {"prompt": "What is two plus two?", "response": "Four."},
    {"prompt": "Call +44 20 7946 0958", "response": "Calling from 192.168.1.20 now."},
]


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


def test_data_check_pii_counts_per_file_and_column_masked(data_file, tiny_dir):
    model = str(tiny_dir("gemma3"))
    runner = CliRunner()
    done = runner.invoke(app, ["data", "check", str(data_file), "--model", model, "--pii"])
    assert done.exit_code == 0, done.output
    assert "4 possible identifiers in 3 rows" in done.output
    assert f"{data_file}:1: j***@e***.com" in done.output
    for raw in ("jane.doe@example.com", "DE89370400440532013000", "7946 0958", "192.168.1.20"):
        assert raw not in done.output
    as_json = runner.invoke(
        app, ["data", "check", str(data_file), "--model", model, "--pii", "--json"]
    )
    findings = json.loads(as_json.output)["pii"]["findings"]
    got = {(f["column"], f["kind"]): f["count"] for f in findings}
    assert got == {
        ("prompt", "EMAIL"): 1,
        ("response", "IBAN"): 1,
        ("prompt", "PHONE"): 1,
        ("response", "IP"): 1,
    }
    strict = runner.invoke(
        app, ["data", "check", str(data_file), "--model", model, "--pii", "--strict"]
    )
    assert strict.exit_code == 1


def test_redact_pii_reaches_the_tokens_training_sees(data_file, tiny_dir):
    from gemmaforge.config import Config
    from gemmaforge.data.examples.dataset import load_datasets
    from gemmaforge.data.read.sources import open_sources
    from gemmaforge.models.load import load_tokenizer

    cfg = Config.model_validate(
        {
            "model": {"name_or_path": str(tiny_dir("gemma3"))},
            "data": {"train": str(data_file), "validation": str(data_file), "redact_pii": True},
        }
    )
    tok = load_tokenizer(cfg.model)
    train, _, _ = load_datasets(cfg.data, open_sources(cfg.data), tok.family, tok.tokenizer, 0)
    text = " ".join(tok.tokenizer.decode(example.input_ids) for example in train)
    for placeholder in ("<EMAIL>", "<IBAN>", "<PHONE>", "<IP>"):
        assert placeholder in text
    for raw in ("jane.doe", "DE89370400440532013000", "7946", "192.168"):
        assert raw not in text
    assert "two plus two" in text
