"""`merged` and `peft` exports reload in plain transformers / PEFT and compute what the run's
base + adapter computes."""

from __future__ import annotations

import json

import pytest
import torch

from gemmaforge.export import export
from gemmaforge.infer.load import load_run
from gemmaforge.runs import open_run
from test_train import run_config, write_task

IDS = [2, 10, 11, 12, 13, 14, 15, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52]


@pytest.fixture(scope="module")
def gemma4_run(tiny_dir, tmp_path_factory):
    """A short LoRA run on the tiny multimodal Gemma 4 (E2B-like)."""
    from gemmaforge.train.trainer import train

    tmp = tmp_path_factory.mktemp("gemma4-run")
    data = write_task(tmp / "train.jsonl", rows=16)
    return train(run_config(tiny_dir("gemma4"), data, tmp / "run", max_steps=3)).run_dir


def reference(run_dir, ids=IDS, **inputs) -> torch.Tensor:
    """Logits of the run's base + adapter, unmerged, in fp32."""
    _, model = load_run(open_run(run_dir), device="cpu", dtype="fp32")
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids]), **inputs).logits.float()


def test_merged_gemma3_loads_with_auto_classes_and_matches(tiny_run, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = tiny_run("plain")
    out = export(run, "merged", tmp_path / "merged")
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.dtype == torch.float32  # the tiny base's own dtype
    assert not any("lora" in name for name, _ in model.named_parameters())
    with torch.no_grad():
        got = model(input_ids=torch.tensor([IDS])).logits
    expected = reference(run)
    assert torch.allclose(got, expected, atol=1e-4), (got - expected).abs().max()

    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template
    end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    assert end_of_turn in model.generation_config.eos_token_id


def test_merged_differs_from_the_base(tiny_run, tiny_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    out = export(tiny_run("plain"), "merged", tmp_path / "merged")
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(out)(input_ids=torch.tensor([IDS])).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_dir("gemma3"))(
            input_ids=torch.tensor([IDS])
        ).logits
    assert (merged - base).abs().max() > 0.1


def test_merged_gemma4_keeps_its_towers_and_processor(gemma4_run, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    out = export(gemma4_run, "merged", tmp_path / "merged")
    model = AutoModelForImageTextToText.from_pretrained(out)
    assert model.model.vision_tower is not None and model.model.audio_tower is not None
    assert AutoProcessor.from_pretrained(out).tokenizer.chat_template
    types = torch.zeros(1, len(IDS), dtype=torch.long)
    with torch.no_grad():
        got = model(input_ids=torch.tensor([IDS]), mm_token_type_ids=types).logits
    expected = reference(gemma4_run, mm_token_type_ids=types)
    assert torch.allclose(got, expected, atol=1e-4), (got - expected).abs().max()


def test_peft_folder_reloads_with_the_model_card(tiny_run, tiny_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run = tiny_run("plain")
    out = export(run, "peft", tmp_path / "peft")
    assert (out / "README.md").read_text() == (run / "README.md").read_text()
    assert (
        json.loads((out / "run.json").read_text())["base_sha256"] in (out / "README.md").read_text()
    )
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_dir("gemma3")), out)
    with torch.no_grad():
        got = model(input_ids=torch.tensor([IDS])).logits
    assert torch.allclose(got, reference(run), atol=1e-5)
