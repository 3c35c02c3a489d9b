"""The one typed configuration tree. Every field's docstring is its help text.

Loading (YAML + `section.field=value` overrides + flags) and error reporting live in
`config_load.py`; this module only declares what can be configured.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Section(BaseModel):
    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, use_attribute_docstrings=True
    )


class ModelConfig(Section):
    name_or_path: str | None = None
    """Base model: a local folder, a .gguf file, or a Hugging Face hub id."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) to pin; ignored for local paths."""
    allow_download: bool = False
    """Allow downloading weights from the hub. Off by default: gemmaforge runs offline."""
    dtype: Literal["auto", "bf16", "fp32"] = "auto"
    """Weight/compute dtype. auto: bf16 where the device supports it, else fp32. Never fp16."""
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    """Device to train on. auto: cuda, then mps, then cpu."""
    quantize: Literal["none", "4bit"] = "none"
    """4bit: QLoRA. The language model's linear layers are stored in 4-bit NF4 (double
    quantisation, bf16 compute) through bitsandbytes; CUDA only, and a transformers folder
    (not a GGUF). Vision/audio towers, embeddings and the LM head stay unquantised."""


class DataConfig(Section):
    train: str | list[str] | None = None
    """Training data: a file (JSONL, CSV, TSV, Parquet), a glob, a folder (data files, a
    Hugging Face datasets save_to_disk folder, an imagefolder/audiofolder), an s3://, gs:// or
    https:// URL, or a list of those (docs/data.md, "Sources")."""
    validation: str | list[str] | None = None
    """Validation data, in any form data.train takes. Without it, a seeded split of the
    training data is held out."""
    format: Literal[
        "auto",
        "messages",
        "alpaca",
        "sharegpt",
        "instruction",
        "completion",
        "caption",
        "vqa",
        "transcription",
        "audio_qa",
        "audiovisual",
        "prompt_completion",
        "input_output",
    ] = "auto"
    """Row format; auto detects it from the first row's keys (the most specific match)."""
    messages_column: str = "messages"
    """Column holding chat messages (messages format)."""
    prompt_column: str = "prompt"
    """Column holding the prompt (instruction format)."""
    response_column: str = "response"
    """Column holding the response (instruction format)."""
    text_column: str = "text"
    """Column holding the text (completion format: every token is trained)."""
    system_column: str | None = None
    """Optional column holding a system prompt (instruction format)."""
    image_column: str = "image"
    """Column holding an image path or URL (caption, vqa, audiovisual formats)."""
    audio_column: str = "audio"
    """Column holding an audio path or URL (transcription, audio_qa, audiovisual formats)."""
    caption_column: str = "caption"
    """Column holding the caption (caption format)."""
    question_column: str = "question"
    """Column holding the question (vqa format)."""
    answer_column: str = "answer"
    """Column holding the answer (vqa format)."""
    caption_prompt: str = "Describe this image."
    """User prompt that goes with each image in the caption format."""
    transcription_prompt: str = "Transcribe this audio."
    """User prompt that goes with each clip in the transcription format (the reply is the
    text column)."""
    train_on: Literal["all", "last"] = "all"
    """Which assistant turns carry labels: all of them, or only the last."""
    train_thinking: bool = True
    """Train the reasoning (reasoning_content / thinking / reasoning fields, Gemma 4's thinking
    channel); false masks it and trains only the answer."""
    media_placeholders: bool = True
    """Read <image>, <audio>, <video> in message text as the places of the row's images /
    audios / videos lists (LLaMA-Factory); false keeps them as plain text."""
    max_seq_length: int = Field(1024, ge=8)
    """Longest example in tokens; longer ones are truncated or dropped (see overlong)."""
    overlong: Literal["truncate", "drop"] = "drop"
    """What to do with examples longer than max_seq_length."""
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    """Fraction of training rows held out for validation when no validation file is given."""
    val_max_rows: int = Field(200, ge=0)
    """At most this many rows are held out by the automatic split."""
    audio_overlong: Literal["truncate", "drop", "fail"] = "truncate"
    """Clips longer than the family's limit (Gemma 3n and Gemma 4: 30 s): cut them, drop the
    example, or stop with an error."""
    on_error: Literal["fail", "skip"] = "fail"
    """Rows that cannot be used (unreadable, bad schema, broken media): fail stops with every
    problem listed (before training, or at the row when streaming); skip leaves them out.
    Every row left out, for any reason, is written with the reason to OUT/skipped.jsonl."""
    streaming: Literal["auto", "on", "off"] = "auto"
    """Read training rows lazily instead of loading them all first. auto: on for remote
    (s3://, gs://, https://) sources. Needs train.max_steps."""
    shuffle_buffer: int = Field(10_000, ge=1)
    """Rows held in the shuffle buffer when streaming (memory grows with it, randomness too)."""
    packing: bool = False
    """Pack several text examples into each row of up to max_seq_length tokens, with
    positions restarting per example and no attention across examples: no compute on padding.
    batch_size then counts packed rows."""
    group_by_length: bool = False
    """Batch examples of similar length together (less padding; useful for images and audio,
    which are never packed). Batches are still drawn in a seeded random order."""
    image_budget: Literal[70, 140, 280, 560, 1120] | None = None
    """Gemma 4 soft tokens per image (the processor's default when unset). The same budget is
    used by evaluation, serving and export of the run."""
    video_fps: float = Field(1.0, gt=0, le=30)
    """Frames sampled per second of video (Gemma 4; each frame is an image run with its mm:ss
    timestamp); a longer video than video_max_frames allows is sampled evenly instead."""
    video_max_frames: int = Field(32, ge=1, le=512)
    """Most frames taken from one video: a longer one is sampled evenly across its whole
    length at a lower rate (the run's token cost per video is bounded by this)."""
    video_budget: Literal[70, 140, 280, 560, 1120] | None = None
    """Gemma 4 soft tokens per video frame (the processor's default, 70, when unset); the same
    budget is used by evaluation and serving of the run."""
    storage_options: dict[str, Any] = {}
    """Options for remote data and media URLs, passed to fsspec (e.g. for s3://: endpoint_url,
    key, secret, profile, anon; for gs://: token, project). Credentials otherwise come from the
    usual environment (AWS_* variables, ~/.aws, gcloud)."""
    media_cache_dir: str | None = None
    """Folder caching remote images and clips (and media embedded in Parquet / datasets);
    default: $XDG_CACHE_HOME/gemmaforge/media, else ~/.cache/gemmaforge/media."""
    media_cache_mb: int = Field(2048, ge=0)
    """Size cap of the remote media cache in MiB; least recently used files are evicted."""
    retries: int = Field(5, ge=0)
    """Retries of a remote read that fails transiently (connection errors, timeouts, HTTP 429 /
    5xx, S3 SlowDown), with exponential backoff from 0.5 s."""
    allow_hosts: list[str] = []
    """Extra hosts (`host` or `host:port`) remote media URLs inside rows may be read from; the
    network guard refuses any host no setting names (docs/privacy.md)."""
    redact_pii: bool = False
    """Replace e-mail addresses, phone, card, IBAN and ID numbers and IP addresses in training
    text with typed placeholders (<EMAIL>, <PHONE>, ...) before tokenizing: a heuristic, see
    docs/privacy.md for its measured precision and recall."""
    max_row_bytes: int = Field(16 * 2**20, ge=1024)
    """Longest row of a JSONL / CSV file, in bytes: a longer row is refused as it is read,
    never held whole (a guard against runaway files; media go by reference)."""
    max_media_bytes: int = Field(256 * 2**20, ge=1)
    """Largest image, audio or video file read, in bytes; devices, pipes and other non-regular files
    are always refused."""
    max_image_pixels: int = Field(50_000_000, ge=1)
    """Largest image, in decoded pixels (a guard against decompression bombs)."""
    max_audio_seconds: float = Field(3600.0, gt=0)
    """Longest audio file accepted, by the length its header declares; of a longer clip than
    the model takes only what it takes is decoded."""


class LoraConfig(Section):
    r: int = Field(16, ge=1)
    """LoRA rank."""
    alpha: float = Field(32.0, gt=0)
    """LoRA scaling numerator (scale = alpha / r, or alpha / sqrt(r) with rslora)."""
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """Dropout on the LoRA input."""
    rslora: bool = False
    """Rank-stabilised LoRA scaling (alpha / sqrt(r))."""
    dora: bool = False
    """Weight-decomposed LoRA (DoRA)."""
    targets: list[str] | None = None
    """Linear layer names to adapt in the language model; default: all attention and MLP
    projections."""
    towers: list[Literal["text", "vision", "audio"]] = ["text"]
    """Which towers get LoRA: the language model, and opt-in the vision and audio encoders
    (every linear layer in them, plus their projection into the language model)."""


class TrainConfig(Section):
    output_dir: str = "runs/latest"
    """Run folder: adapter, checkpoints, metrics, manifest and model card."""
    max_steps: int | None = Field(None, ge=1)
    """Optimizer steps to run; overrides epochs when set."""
    epochs: float = Field(1.0, gt=0)
    """Passes over the training data (when max_steps is not set)."""
    batch_size: int = Field(4, ge=1)
    """Examples per micro-batch."""
    grad_accum: int = Field(1, ge=1)
    """Micro-batches per optimizer step; the loss is normalised by the step's token count."""
    lr: float = Field(2e-4, gt=0)
    """Peak learning rate."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay."""
    warmup_steps: int = Field(0, ge=0)
    """Linear warm-up steps; 0 uses warmup_ratio."""
    warmup_ratio: float = Field(0.03, ge=0, le=1)
    """Warm-up as a fraction of the total steps (when warmup_steps is 0)."""
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    """Learning-rate decay after warm-up."""
    max_grad_norm: float = Field(1.0, ge=0)
    """Gradient clipping norm; 0 disables clipping."""
    gradient_checkpointing: bool | Literal["auto"] = "auto"
    """Recompute decoder layers' activations in the backward pass instead of keeping them
    (about a third more compute per checkpointed layer). auto: as few layers as keep the run's
    predicted memory above the weights within half of what the device has free (none when it
    fits easily); true: every layer; false: none. `gemmaforge plan` shows the choice."""
    seed: int = 42
    """Seed for data order, the validation split, LoRA init and dropout."""
    save_every: int = Field(0, ge=0)
    """Save a resumable checkpoint every N steps (0: only at the end)."""
    eval_every: int = Field(0, ge=0)
    """Compute validation loss every N steps (0: only at the end)."""
    log_every: int = Field(1, ge=1)
    """Write a metrics line every N steps."""
    resume: bool = False
    """Continue from the newest checkpoint in output_dir."""
    reschedule: bool = False
    """With resume: accept changed max_steps, epochs, lr, scheduler or warm-up; the learning
    rate schedule is recomputed for the new settings from the resumed step on."""
    overwrite: bool = False
    """Replace a finished or abandoned run already in output_dir (otherwise that is an error)."""
    keep_checkpoints: int = Field(2, ge=1)
    """How many of the newest checkpoints to keep."""
    loss_chunk_size: int = Field(64, ge=1)
    """Tokens per chunk in the memory-efficient loss (the full logits are never built)."""
    compile: bool = False
    """Compile each decoder layer with torch.compile (minutes of compiling first; see
    docs/performance.md for when it pays)."""
    objective: Literal["sft", "dpo", "orpo", "simpo", "kto"] = "sft"
    """sft: supervised (chat, completion rows); dpo / orpo / simpo: preference pairs (chosen vs
    rejected reply); kto: replies labelled good or bad. Never switched for you: `data check`
    suggests one when it sees preference rows (docs/preference.md)."""
    beta: float = Field(0.1, gt=0)
    """dpo / kto: strength of the pull towards the reference (base) model; lower drifts further."""
    dpo_loss: Literal["sigmoid", "ipo", "hinge"] = "sigmoid"
    """dpo: loss on the reward margin: sigmoid (DPO), ipo (squared, IPO) or hinge (SLiC)."""
    orpo_lambda: float = Field(0.1, ge=0)
    """orpo: weight of the odds-ratio term added to the chosen reply's cross-entropy."""
    simpo_beta: float = Field(2.0, gt=0)
    """simpo: scale of the length-normalised (mean per token) log-probability reward."""
    simpo_gamma: float = Field(1.0, ge=0)
    """simpo: target reward margin between chosen and rejected replies."""
    kto_desirable_weight: float = Field(1.0, gt=0)
    """kto: weight of the loss on replies labelled desirable (label true)."""
    kto_undesirable_weight: float = Field(1.0, gt=0)
    """kto: weight of the loss on replies labelled undesirable (label false)."""
    precompute_ref_logps: bool = False
    """dpo / kto: compute the reference model's log-probabilities of every training row once,
    before the first step, and cache them in the run folder (no reference forward per step)."""
    offload_activations: bool = False
    """With gradient_checkpointing=true on a GPU: keep the checkpointed activations in host memory
    instead of device memory (slower steps, longer sequences). Refused on CPU, where it
    saves nothing."""
    sample_every: int = Field(0, ge=0)
    """Every N steps, greedy replies to a few held-out prompts are written to OUT/samples.jsonl
    (the dashboard shows them beside the reference); 0: off."""
    sample_prompts: int = Field(3, ge=1)
    """How many validation examples are sampled (train.sample_every)."""
    sample_max_tokens: int = Field(64, ge=1)
    """Longest sample reply in tokens (train.sample_every)."""
    report_to: list[Literal["tensorboard", "mlflow", "wandb"]] = []
    """Experiment trackers that also receive the metrics, all local/offline: TensorBoard event
    files in OUT/tensorboard, a local MLflow store in OUT/mlflow, W&B offline in OUT/wandb.
    Each needs its package (`pip install gemmaforge[trackers]`). Off by default."""


class Config(Section):
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    lora: LoraConfig = LoraConfig()
    train: TrainConfig = TrainConfig()
