"""Preference tuning: per-row log-probabilities of the fused head, the losses against TRL, the
row formats, and tiny training runs where DPO learns a preference and KTO lowers bad replies."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from gemmaforge.config import DataConfig, TrainConfig
from gemmaforge.data.examples.preference import preference_kind, to_preference
from gemmaforge.data.read.records import Record
from gemmaforge.train.loss import _LinearTokenLogProbs
from gemmaforge.train.preference import objective_losses


def _full_row_logps(hidden, weight, labels, softcap):
    logits = (hidden @ weight.T).float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    targets = labels[:, 1:]
    keep = targets != -100
    picked = logp.gather(-1, targets.clamp(min=0)[..., None])[..., 0]
    return (picked * keep).sum(dim=1)


def _chunked_row_logps(hidden, weight, labels, softcap, chunk):
    targets = labels[:, 1:]
    keep = targets != -100
    token = _LinearTokenLogProbs.apply(hidden[:, :-1][keep], weight, targets[keep], softcap, chunk)
    sums = torch.zeros(labels.shape[0]).index_add(0, keep.nonzero()[:, 0], token)
    return sums


@pytest.mark.parametrize("chunk", [1, 5, 4096])
@pytest.mark.parametrize("softcap", [None, 3.0])
def test_row_log_probs_and_gradients_match_full_logits(chunk, softcap):
    """Per-row sums, pushed through a DPO-shaped non-linear loss (so every row's gradient has
    its own weight), give the same value and gradients (rows and head) as full logits."""
    torch.manual_seed(chunk)
    hidden = torch.randn(4, 9, 16, requires_grad=True)
    weight = torch.randn(300, 16, requires_grad=True)
    labels = torch.randint(0, 300, (4, 9))
    labels[:, :3] = -100  # the prompt
    labels[3, 6:] = -100  # padding
    ref = torch.randn(4)

    def dpo(logps):
        margin = (logps[:2] - ref[:2]) - (logps[2:] - ref[2:])
        return -F.logsigmoid(0.1 * margin).mean()

    expected = dpo(_full_row_logps(hidden, weight, labels, softcap))
    expected_grads = torch.autograd.grad(expected, (hidden, weight))
    got = dpo(_chunked_row_logps(hidden, weight, labels, softcap, chunk))
    grads = torch.autograd.grad(got, (hidden, weight))
    assert torch.allclose(got, expected, atol=1e-6)
    for a, b in zip(grads, expected_grads, strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def _record(row, path="t.jsonl"):
    return Record(row=row, path=path, line=1)


PROMPT = [{"role": "user", "content": "Pick a colour."}]
CHOSEN = [{"role": "assistant", "content": "Blue."}]
REJECTED = [{"role": "assistant", "content": "Seven."}]


@pytest.mark.parametrize(
    "row",
    [
        {"prompt": "Pick a colour.", "chosen": "Blue.", "rejected": "Seven."},
        {"prompt": PROMPT, "chosen": CHOSEN, "rejected": REJECTED},
        {"chosen": PROMPT + CHOSEN, "rejected": PROMPT + REJECTED},
        {"chosen_messages": PROMPT + CHOSEN, "rejected_messages": PROMPT + REJECTED},
        {
            "conversations": [{"from": "human", "value": "Pick a colour."}],
            "chosen": {"from": "gpt", "value": "Blue."},
            "rejected": {"from": "gpt", "value": "Seven."},
        },
        {"instruction": "Pick a colour.", "input": "", "chosen": "Blue.", "rejected": "Seven."},
    ],
    ids=["trl-standard", "trl-conversational", "trl-implicit", "lf-v1", "lf-sharegpt", "lf-alpaca"],
)
def test_every_pair_format_gives_the_same_pair(row):
    assert preference_kind(row) == "pair"
    pref = to_preference(_record(row), DataConfig())
    assert (pref.prompt, pref.chosen, pref.rejected) == (PROMPT, CHOSEN, REJECTED)


def test_unpaired_kto_row_and_media_placeholders(tmp_path):
    row = {
        "prompt": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}
        ],
        "completion": [{"role": "assistant", "content": "A cat."}],
        "label": False,
        "images": ["cat.png"],
    }
    assert preference_kind(row) == "unpaired"
    pref = to_preference(_record(row, str(tmp_path / "k.jsonl")), DataConfig())
    assert pref.desirable is False and pref.rejected is None
    image, text = pref.prompt[0]["content"]
    assert image["type"] == "image" and image["ref"].endswith("cat.png")
    assert text == {"type": "text", "text": "Hi"}


def test_implicit_prompt_needs_a_shared_start():
    from gemmaforge.errors import UserError

    row = {"chosen": CHOSEN, "rejected": REJECTED}
    with pytest.raises(UserError, match="same prompt"):
        to_preference(_record(row), DataConfig())


def test_dpo_matches_trl_dpo_trainer(tiny_dir, tmp_path):
    """Loss and LoRA gradients of one batch equal TRL's DPOTrainer (PEFT, reference = adapter
    disabled) on the same tiny model, data and seed, fp32: to 1e-5 relative (measured: loss
    equal to 1e-7, gradients within 2e-6 of their largest entry)."""
    pytest.importorskip("trl")
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from gemmaforge.train.preference import PreferenceLoss

    model_dir = tiny_dir("gemma3")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    rows = [
        {"prompt": "Pick a colour.", "chosen": " Blue.", "rejected": " Seven, I think."},
        {"prompt": "Say hi.", "chosen": " Hello there!", "rejected": " No."},
    ]
    args = DPOConfig(
        output_dir=str(tmp_path / "trl"),
        per_device_train_batch_size=2,
        beta=0.1,
        report_to=[],
        use_cpu=True,
        bf16=False,
        max_length=None,
        dataset_num_proc=None,
    )
    # A new adapter (peft_config), so TRL's reference is the adapter-disabled base as ours is
    # (given an already-adapted PeftModel it would keep a copy of that adapter as reference).
    trainer = DPOTrainer(
        model=base,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=lora,
    )
    model = trainer.model
    # Non-zero B so the policy differs from the reference and the margin is not 0.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    batch = next(iter(trainer.get_train_dataloader()))
    model.train()
    trl_loss = trainer.compute_loss(model, batch)
    params = [p for p in model.parameters() if p.requires_grad]
    trl_grads = torch.autograd.grad(trl_loss, params)

    mask = batch["completion_mask"]
    ours = {
        "input_ids": batch["input_ids"],
        "attention_mask": batch["attention_mask"],
        "labels": batch["input_ids"].masked_fill(mask == 0, -100),
        "pairs": torch.tensor(2),
    }
    module = PreferenceLoss(model, TrainConfig(objective="dpo", beta=0.1, loss_chunk_size=7))
    loss = module(ours) / 2
    grads = torch.autograd.grad(loss, params)
    assert abs(loss.item() - trl_loss.item()) < 1e-5 * max(1.0, abs(trl_loss.item()))
    assert abs(loss.item() - 0.6931) > 1e-3  # a real margin, not the untrained log 2
    for a, b in zip(grads, trl_grads, strict=True):
        # fp32 sums in a different order: within 1e-5 of the tensor's largest entry.
        assert (a - b).abs().max() <= 1e-5 * b.abs().max()


@pytest.mark.parametrize("objective", ["simpo", "orpo", "kto"])
def test_other_objectives_match_their_formulas(objective):
    """SimPO (TRL CPO simpo), ORPO (TRL ORPOTrainer's odds-ratio term) and KTO values on
    known log-probabilities."""
    logps = torch.tensor([-2.0, -3.0, -4.0, -3.5])
    counts = torch.tensor([2, 3, 4, 7])
    ref = torch.tensor([-2.5, -2.5, -3.0, -3.0])
    cfg = TrainConfig(objective=objective)
    if objective == "kto":
        batch = {"desirable": torch.tensor([True, True, False, False])}
        losses, _ = objective_losses(cfg, logps, counts, ref, batch)
        ratio = logps - ref
        z = ratio.mean().clamp(min=0)
        want = torch.cat(
            [1 - torch.sigmoid(0.1 * (ratio[:2] - z)), 1 - torch.sigmoid(0.1 * (z - ratio[2:]))]
        )
    else:
        losses, stats = objective_losses(cfg, logps, counts, None, {"pairs": torch.tensor(2)})
        avg_c, avg_r = logps[:2] / counts[:2], logps[2:] / counts[2:]
        if objective == "simpo":
            want = -F.logsigmoid(2.0 * (avg_c - avg_r) - 1.0)
        else:
            log_odds = (avg_c - avg_r) - (
                torch.log1p(-torch.exp(avg_c)) - torch.log1p(-torch.exp(avg_r))
            )
            want = -avg_c - 0.1 * F.logsigmoid(log_odds)
        assert stats["units"] == 2
    assert torch.allclose(losses, want, atol=1e-6)


def write_pairs(path, rows):
    with path.open("w") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    return path


GOOD = ("blue", "green", "red", "gold", "pink", "grey", "teal", "white")
BAD = ("cat", "dog", "fish", "bird", "cow", "frog", "mouse", "horse")


def preference_rows(n, seed, prompts):
    """Pairs where a colour is preferred to an animal, whatever the prompt."""
    import random

    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        prompt = rng.choice(prompts)
        good, bad = rng.choice(GOOD), rng.choice(BAD)
        rows.append(
            {
                "prompt": [{"role": "user", "content": prompt}],
                "chosen": [{"role": "assistant", "content": f"I pick {good}."}],
                "rejected": [{"role": "assistant", "content": f"I pick {bad}."}],
            }
        )
    return rows


TRAIN_PROMPTS = [f"Question {i}: pick one thing." for i in range(12)]
HELD_OUT_PROMPTS = [f"Another one, number {i}?" for i in range(6)]


def pref_config(model_dir, train, val, out, **train_kwargs):
    from gemmaforge.config import Config

    return Config.model_validate(
        {
            "model": {"name_or_path": str(model_dir), "dtype": "fp32"},
            "data": {"train": str(train), "validation": str(val)},
            "lora": {"r": 8, "alpha": 16},
            "train": {
                "output_dir": str(out),
                "batch_size": 8,
                "lr": 5e-3,
                "warmup_steps": 0,
                "seed": 0,
                **train_kwargs,
            },
        }
    )


def accuracy(model, loaded, val_path, cfg):
    from gemmaforge.data.batches.collate import collator_for
    from gemmaforge.data.batches.pairs import PairCollator
    from gemmaforge.data.examples.preference import load_preference_datasets
    from gemmaforge.data.read.sources import open_sources
    from gemmaforge.train.preference import evaluate_pairs

    data = cfg.data.model_copy(update={"train": str(val_path), "validation": None})
    data = data.model_copy(update={"val_fraction": 0.0})
    examples, _, _ = load_preference_datasets(
        data, open_sources(data), loaded.family, loaded.tokenizer, 0, "orpo"
    )
    scoring = cfg.train.model_copy(update={"objective": "orpo"})  # needs no reference
    collate = PairCollator(collator_for(loaded))
    return evaluate_pairs(model, examples, collate, 16, loaded.device, scoring)


@pytest.mark.slow
def test_dpo_learns_a_held_out_preference(tiny_dir, tmp_path):
    """The base model picks colours over animals at about chance on held-out prompts; after
    DPO it does on > 90% of them. Reward metrics are logged every step."""
    from gemmaforge.models.load import load_model
    from gemmaforge.train.trainer import train

    train_path = write_pairs(tmp_path / "train.jsonl", preference_rows(64, 0, TRAIN_PROMPTS))
    val_path = write_pairs(tmp_path / "val.jsonl", preference_rows(32, 1, HELD_OUT_PROMPTS))
    cfg = pref_config(
        tiny_dir("gemma3"),
        train_path,
        val_path,
        tmp_path / "run",
        objective="dpo",
        max_steps=12,
        beta=0.5,
        lr=1e-2,
        eval_every=6,
    )
    loaded = load_model(cfg.model)
    before = accuracy(loaded.model, loaded, val_path, cfg)["preference_accuracy"]
    result = train(cfg, loaded)
    after = accuracy(result.model, loaded, val_path, cfg)["preference_accuracy"]
    assert before < 0.75
    assert after > 0.9
    metrics = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").open()]
    for key in ("reward_margin", "reward_accuracy", "logp_chosen", "logp_rejected"):
        assert key in metrics[-1]
    assert metrics[-1]["reward_margin"] > metrics[0]["reward_margin"]
    assert metrics[-1]["eval_reward_accuracy"] > 0.9

    # `eval` picks the preference task for a DPO run and scores the run's validation pairs.
    from gemmaforge.eval.evaluate import evaluate

    report = evaluate(result.run_dir, device="cpu")
    assert report["task"] == "preference" and report["examples_scored"] == 32
    scores = report["metrics"]
    assert scores["base"]["preference_accuracy"] == pytest.approx(before)
    assert scores["adapter"]["preference_accuracy"] == pytest.approx(after)
    assert report["reward_accuracy"] > 0.9
    assert "preference_accuracy" in (result.run_dir / "eval" / "report.md").read_text()


@pytest.mark.slow
def test_kto_lowers_undesirable_replies(tiny_dir, tmp_path):
    """KTO on labelled replies (colour replies desirable, animal ones not, as unpaired rows)
    lowers the log-probability of held-out undesirable replies and raises desirable ones."""
    from gemmaforge.models.load import load_model
    from gemmaforge.train.trainer import train

    rows = []
    for row in preference_rows(48, 0, TRAIN_PROMPTS):
        rows.append({"prompt": row["prompt"], "completion": row["chosen"], "label": True})
        rows.append({"prompt": row["prompt"], "completion": row["rejected"], "label": False})
    train_path = write_pairs(tmp_path / "train.jsonl", rows)
    val_path = write_pairs(tmp_path / "val.jsonl", preference_rows(32, 1, HELD_OUT_PROMPTS))
    cfg = pref_config(
        tiny_dir("gemma3"),
        train_path,
        val_path,
        tmp_path / "run",
        objective="kto",
        max_steps=10,
        beta=0.5,
        lr=1e-2,
        precompute_ref_logps=True,
    )
    loaded = load_model(cfg.model)
    before = accuracy(loaded.model, loaded, val_path, cfg)
    result = train(cfg, loaded)
    after = accuracy(result.model, loaded, val_path, cfg)
    assert after["logp_rejected"] < before["logp_rejected"] - 1.0
    assert after["logp_chosen"] > before["logp_chosen"]
    assert (result.run_dir / "ref_logps.json").is_file()
    metrics = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").open()]
    assert metrics[-1]["reward_margin"] > metrics[0]["reward_margin"]


def test_data_check_suggests_the_objective(tiny_dir, tmp_path):
    """Under sft, preference rows are one finding whose fix names the objective; with
    train.objective=dpo the same file checks clean."""
    from typer.testing import CliRunner

    from gemmaforge.cli import app

    path = write_pairs(tmp_path / "train.jsonl", preference_rows(6, 0, TRAIN_PROMPTS))
    runner = CliRunner()
    sft = runner.invoke(
        app, ["data", "check", str(path), "--model", str(tiny_dir("gemma3")), "--json"]
    )
    assert sft.exit_code == 1, sft.output
    findings = json.loads(sft.stdout)["findings"]
    # One finding for the file (not one per row); training sft would have nothing left.
    assert [f["kind"] for f in findings] == ["preference_data", "no_examples"]
    assert "set train.objective=dpo" in findings[0]["message"]
    dpo = runner.invoke(
        app,
        [
            "data",
            "check",
            str(path),
            "--model",
            str(tiny_dir("gemma3")),
            "--json",
            "train.objective=dpo",
        ],
    )
    assert dpo.exit_code == 0, dpo.output
    assert json.loads(dpo.stdout)["findings"] == []


def test_plan_counts_two_sequences_and_the_reference_forward(tiny_dir):
    """DPO rows cost two sequences of activations and a reference forward's compute; the
    cached reference log-probs take that forward away; plan says so."""
    from typer.testing import CliRunner

    from gemmaforge.cli import app
    from gemmaforge.config import Config
    from gemmaforge.perf.plan import predict, settings_from_config
    from gemmaforge.perf.shapes import model_shape, read_config

    folder = str(tiny_dir("gemma3"))
    shape = model_shape(read_config(folder))

    def settings(**train):
        cfg = Config.model_validate({"model": {"name_or_path": folder}, "train": train})
        return settings_from_config(cfg, shape, 2, (), 1 << 40)

    sft, dpo = settings(), settings(objective="dpo")
    cached = settings(objective="dpo", precompute_ref_logps=True)
    assert (dpo.sequences_per_row, dpo.reference_forward) == (2, True)
    assert (cached.sequences_per_row, cached.reference_forward) == (2, False)
    p_sft, p_dpo, p_cached = (predict(shape, s) for s in (sft, dpo, cached))
    assert p_dpo.parts["activations"] == 2 * p_sft.parts["activations"]
    assert p_dpo.step_flops > p_cached.step_flops > 1.9 * p_sft.step_flops
    out = CliRunner().invoke(app, ["plan", "--model", folder, "train.objective=dpo"])
    assert out.exit_code == 0, out.output
    assert "2 sequences per row" in " ".join(out.output.split())


@pytest.mark.slow
def test_dpo_resumes_where_it_stopped(tiny_dir, tmp_path):
    """A DPO run stopped at a checkpoint and resumed logs the same losses and rewards as one
    that never stopped (constant learning rate, so the shorter first leg's schedule is the
    same)."""
    from gemmaforge.train.trainer import train

    train_path = write_pairs(tmp_path / "train.jsonl", preference_rows(24, 0, TRAIN_PROMPTS))
    val_path = write_pairs(tmp_path / "val.jsonl", preference_rows(4, 1, HELD_OUT_PROMPTS))

    def run(out, steps, **extra):
        cfg = pref_config(
            tiny_dir("gemma3"),
            train_path,
            val_path,
            out,
            objective="dpo",
            batch_size=4,
            max_steps=steps,
            scheduler="constant",
            save_every=2,
            **extra,
        )
        return train(cfg).run_dir

    whole = run(tmp_path / "whole", 4)
    run(tmp_path / "parts", 2)
    # A constant schedule is the same over 2 or 4 steps: extending it is a deliberate reschedule.
    parts = run(tmp_path / "parts", 4, resume=True, reschedule=True)

    def lines(folder):
        return [json.loads(line) for line in (folder / "metrics.jsonl").open()]

    a, b = lines(whole), lines(parts)
    assert [m["step"] for m in b] == [1, 2, 3, 4]
    for x, y in zip(a, b, strict=True):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-5, abs=1e-6)
        assert x["reward_margin"] == pytest.approx(y["reward_margin"], rel=1e-4, abs=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize(
    "settings",
    [{"objective": "orpo"}, {"objective": "simpo"}, {"objective": "dpo", "dpo_loss": "ipo"}],
    ids=["orpo", "simpo", "ipo"],
)
def test_other_objectives_train_and_log_rewards(settings, tiny_dir, tmp_path):
    """ORPO, SimPO and IPO train end to end: the reward margin grows over a few steps."""
    from gemmaforge.train.trainer import train

    train_path = write_pairs(tmp_path / "train.jsonl", preference_rows(16, 0, TRAIN_PROMPTS))
    val_path = write_pairs(tmp_path / "val.jsonl", preference_rows(4, 1, HELD_OUT_PROMPTS))
    cfg = pref_config(
        tiny_dir("gemma3"),
        train_path,
        val_path,
        tmp_path / "run",
        max_steps=6,
        lr=1e-2,
        **settings,
    )
    run = train(cfg).run_dir
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    assert metrics[-1]["reward_margin"] > metrics[0]["reward_margin"]
    assert "eval_preference_accuracy" in metrics[-1]
