"""End-to-end LoRA training on tiny models of every family: loss falls, every LoRA weight
moves, the adapter folder reloads to the same logits, and the run folder describes itself."""

from __future__ import annotations

import json
import random

import pytest
import torch

from gemmaforge.config import Config
from gemmaforge.train.trainer import train

FAMILIES = ["gemma3", "gemma3n", "gemma4", "gemma4-moe", "gemma4-dense"]


def write_task(path, rows: int = 48, seed: int = 0):
    """A memorisable task: each of four questions has one fixed answer, so a tiny random model
    can drive its loss far down in a few dozen steps."""
    answers = {
        "What colour is the sky?": "The sky is blue.",
        "What do cows drink?": "Cows drink water.",
        "Name a prime number.": "Seven is prime.",
        "Which way is up?": "Up is away from the ground.",
    }
    rng = random.Random(seed)
    with path.open("w") as handle:
        for _ in range(rows):
            question = rng.choice(list(answers))
            messages = [
                {"role": "user", "content": question},
                {"role": "assistant", "content": answers[question]},
            ]
            handle.write(json.dumps({"messages": messages}) + "\n")
    return path


def run_config(model_dir, data, out, **train) -> Config:
    settings = {"max_steps": 30, "batch_size": 4, "lr": 1e-2, "eval_every": 10, "seed": 0}
    return Config.model_validate(
        {
            "model": {"name_or_path": str(model_dir)},
            "data": {"train": str(data)},
            "lora": {"r": 8, "alpha": 16},
            "train": {"output_dir": str(out), **settings, **train},
        }
    )


def losses(run) -> list[float]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines]


def lora_weights(model) -> dict[str, torch.Tensor]:
    return {
        n: p.detach().float().cpu().clone() for n, p in model.named_parameters() if "lora_" in n
    }


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "checkpointing"])
@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_family_trains(family, checkpointing, tiny_dir, tmp_path):
    from peft import PeftModel

    from gemmaforge.models.load import load_model
    from gemmaforge.models.lora import apply_lora
    from gemmaforge.models.lora_precision import compute_adapters_in_input_dtype

    data = write_task(tmp_path / "train.jsonl")
    cfg = run_config(tiny_dir(family), data, tmp_path / "run", gradient_checkpointing=checkpointing)
    result = train(cfg)
    assert result.model.get_base_model().is_activation_checkpointing == checkpointing

    metrics = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").open()]
    assert [m["step"] for m in metrics] == list(range(1, 31))
    first, last = metrics[0]["loss"], sum(m["loss"] for m in metrics[-5:]) / 5
    assert last < 0.35 * first, f"loss did not fall clearly: {first:.3f} -> {last:.3f}"
    assert all(m["tokens_per_second"] > 0 for m in metrics)
    assert [m["step"] for m in metrics if "eval_loss" in m] == [10, 20, 30]

    # Every LoRA tensor moved away from its initial value (same seed -> same init).
    trained = lora_weights(result.model)
    torch.manual_seed(cfg.train.seed)
    fresh, _ = apply_lora(load_model(cfg.model).model, cfg.lora)
    initial = lora_weights(fresh)
    assert trained.keys() == initial.keys() and trained
    unchanged = [n for n in trained if torch.equal(trained[n], initial[n])]
    assert not unchanged, f"LoRA tensors that never changed: {unchanged[:5]}"

    # The saved adapter reloads onto a fresh base and gives the same logits, computed the way
    # training computed them (plain PEFT runs the adapter in fp32: the same up to bf16 rounding).
    reloaded = PeftModel.from_pretrained(load_model(cfg.model).model, result.run_dir / "adapter")
    compute_adapters_in_input_dtype(reloaded)
    reloaded.eval()
    ids = torch.tensor([[2, 10, 11, 12, 13, 14, 15]])
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if family.startswith("gemma4"):
        inputs["mm_token_type_ids"] = torch.zeros_like(ids)
    with torch.no_grad():
        expected = result.model(**inputs).logits.float()
        got = reloaded(**inputs).logits.float()
    assert torch.allclose(expected, got, rtol=1e-3, atol=1e-3)
    # ...and differ from the base model's: the adapter is really applied.
    with torch.no_grad(), reloaded.disable_adapter():
        base = reloaded(**inputs).logits.float()
    assert not torch.allclose(base, got, atol=1e-2)


def test_run_folder_describes_itself(tiny_dir, tmp_path):
    import hashlib

    import yaml

    data = write_task(tmp_path / "train.jsonl")
    cfg = run_config(tiny_dir("gemma3"), data, tmp_path / "run", max_steps=4, save_every=2)
    run = train(cfg).run_dir

    for name in (
        "adapter/adapter_model.safetensors",
        "adapter/adapter_config.json",
        "adapter/tokenizer.json",
        "config.yaml",
        "metrics.jsonl",
        "README.md",
        "data_report.json",
        "manifest.json",
    ):
        assert (run / name).is_file(), name
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["max_steps"] == 4
    manifest = json.loads((run / "manifest.json").read_text())["files"]
    on_disk = {str(p.relative_to(run)) for p in run.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(manifest) == on_disk
    for name, digest in manifest.items():
        assert hashlib.sha256((run / name).read_bytes()).hexdigest() == digest
    card = (run / "README.md").read_text()
    data_hash = hashlib.sha256(data.read_bytes()).hexdigest()
    assert data_hash[:16] in card and "| train.jsonl |" in card and "| 48 |" in card
    assert "Base weights sha256" in card and "| lora.r | 8 |" in card
    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert checkpoints == ["step-00000002", "step-00000004"]


def test_existing_run_is_not_overwritten(tiny_dir, tmp_path):
    from gemmaforge.errors import UserError

    data = write_task(tmp_path / "train.jsonl")
    cfg = run_config(tiny_dir("gemma3"), data, tmp_path / "run", max_steps=2)
    train(cfg)
    before = (tmp_path / "run" / "metrics.jsonl").read_text()
    with pytest.raises(UserError, match=r"already holds a run.*--resume"):
        train(cfg)
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == before


def test_grad_accumulation_is_normalised_by_tokens(tiny_dir, tmp_path):
    """4 examples in one micro-batch and 2 x 2 accumulated give the same loss curve: every
    labelled token weighs the same whichever micro-batch it lands in."""
    data = write_task(tmp_path / "train.jsonl", rows=32)
    curves = []
    for batch, accum in [(4, 1), (2, 2)]:
        cfg = run_config(
            tiny_dir("gemma3"),
            data,
            tmp_path / f"run{batch}",
            max_steps=4,
            batch_size=batch,
            grad_accum=accum,
            eval_every=0,
        )
        cfg.model.dtype = "fp32"
        cfg.data.val_fraction = 0.0
        train(cfg)
        curves.append(losses(tmp_path / f"run{batch}"))
    assert curves[0] == pytest.approx(curves[1], rel=1e-4)


@pytest.mark.parametrize("method", ["rslora", "dora"])
def test_lora_variants_train(method, tiny_dir, tmp_path):
    data = write_task(tmp_path / "train.jsonl", rows=16)
    cfg = run_config(tiny_dir("gemma4"), data, tmp_path / "run", max_steps=8, eval_every=0)
    setattr(cfg.lora, method, True)
    result = train(cfg)
    adapter = json.loads((result.run_dir / "adapter" / "adapter_config.json").read_text())
    assert adapter["use_rslora" if method == "rslora" else "use_dora"] is True
    curve = losses(result.run_dir)
    assert curve[-1] < curve[0]


def test_a_missing_data_file_fails_before_the_model_loads(tmp_path):
    from gemmaforge.errors import UserError

    # The model path does not exist either: the data check must come first.
    cfg = run_config(tmp_path / "no-model", tmp_path / "no.jsonl", tmp_path / "run")
    with pytest.raises(UserError, match=r"data.train: .*no.jsonl: not found"):
        train(cfg)
    assert not (tmp_path / "run").exists()


def test_image_budget_on_a_text_only_model_is_an_error(tiny_dir, tmp_path):
    from gemmaforge.errors import UserError

    cfg = run_config(tiny_dir("gemma3"), write_task(tmp_path / "t.jsonl"), tmp_path / "run")
    cfg.data.image_budget = 140
    with pytest.raises(UserError, match="text-only model: it has no image processor"):
        train(cfg)


def test_data_errors_come_before_the_weights_load(tiny_dir, tmp_path, monkeypatch):
    """A broken row is reported without loading the model (seconds, not minutes)."""
    import gemmaforge.models.load as load
    from gemmaforge.errors import UserError
    from gemmaforge.train.trainer import train

    def no_weights(*args, **kwargs):
        raise AssertionError("the weights were loaded before the data was checked")

    monkeypatch.setattr(load, "load_model", no_weights)
    data = write_task(tmp_path / "train.jsonl", rows=8)
    with data.open("a") as handle:
        handle.write('{"messages": 5}\n{"oops": 1,\n')
    with pytest.raises(UserError) as err:
        train(run_config(tiny_dir("gemma3"), data, tmp_path / "run", max_steps=1))
    text = str(err.value)
    assert "train.jsonl:10: not valid JSON" in text
    assert "train.jsonl:9" in text  # messages is not a list
    assert not (tmp_path / "run").exists()
