"""The Gemma families gemmaforge supports, in one table, and detection from a model config.

Every per-family fact lives here (classes, turn tokens, stop tokens, LoRA targets, quirks) so
that the rest of the code asks the table instead of branching on names. The family is always
detected from the config's `model_type`, never from a checkpoint's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gemmaforge.errors import UserError, problem

# The linear layers of a Gemma decoder block. Gemma 3/3n/4 all use these names.
TEXT_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Family:
    """Facts about one Gemma family that training, inference and export rely on."""

    name: str
    """Short name: gemma3, gemma3n, gemma4."""
    model_types: tuple[str, ...]
    """`config.model_type` values that belong to this family (multimodal and text-only)."""
    causal_lm_class: str
    """transformers class for text-only checkpoints of the family."""
    multimodal_class: str | None
    """transformers class for image/audio checkpoints (None if the family has none)."""
    processor_class: str | None
    """transformers processor class for multimodal checkpoints."""
    turn_start: str
    """Token that opens a turn; the role name and a newline follow it."""
    turn_end: str
    """Token that closes a turn. It is trained as part of every assistant reply."""
    assistant_role: str
    """Role name the chat format uses for the assistant."""
    system_turn: bool
    """True if the format has its own system turn; else the system prompt is prepended to the
    first user turn, separated by a blank line (Gemma 3 / 3n convention)."""
    stop_tokens: tuple[str, ...]
    """Tokens that end generation."""
    needs_mm_token_type_ids: bool
    """Multimodal forward requires `mm_token_type_ids` even for text-only batches."""
    audio_max_seconds: float | None = None
    """Longest audio clip the audio tower takes (None: no audio tower)."""
    audio_tokens_per_second: float | None = None
    """Audio soft tokens per second of a clip (None: a fixed count per clip, from the config)."""
    media_markers: int = 2
    """Tokens around each image or audio run (begin/end markers, with their newlines)."""
    notes: tuple[str, ...] = ()
    """Workarounds and quirks that apply to this family, for `gemmaforge` reports and docs."""

    bos: str = "<bos>"
    eos: str = "<eos>"
    channel_start: str | None = None
    """Token opening the thinking channel (`<|channel>thought\n...`); None: the family has no
    thinking channel, and reasoning in the data is refused."""
    channel_end: str | None = None
    """Token closing the thinking channel; the reply follows it."""
    think_token: str | None = None
    """Token that opens the system turn to switch thinking on."""
    tool_calling: bool = False
    """Native tool tokens (<|tool>, <|tool_call>, <|tool_response>): tool declarations, calls
    and results are rendered in them. Without: tool-calling data is refused."""

    def is_multimodal(self, config: Any) -> bool:
        return getattr(config, "model_type", None) == self.model_types[0] and bool(
            self.multimodal_class
        )


GEMMA3 = Family(
    name="gemma3",
    model_types=("gemma3", "gemma3_text"),
    causal_lm_class="Gemma3ForCausalLM",
    multimodal_class="Gemma3ForConditionalGeneration",
    processor_class="Gemma3Processor",
    turn_start="<start_of_turn>",
    turn_end="<end_of_turn>",
    assistant_role="model",
    system_turn=False,
    stop_tokens=("<end_of_turn>", "<eos>"),
    needs_mm_token_type_ids=False,
    notes=(
        "270M and 1B are text-only (Gemma3ForCausalLM); 4B and larger add a SigLIP vision tower.",
        "Final logits are soft-capped when config.final_logit_softcapping is set.",
    ),
)

GEMMA3N = Family(
    name="gemma3n",
    model_types=("gemma3n", "gemma3n_text"),
    causal_lm_class="Gemma3nForCausalLM",
    multimodal_class="Gemma3nForConditionalGeneration",
    processor_class="Gemma3nProcessor",
    turn_start="<start_of_turn>",
    turn_end="<end_of_turn>",
    assistant_role="model",
    system_turn=False,
    stop_tokens=("<end_of_turn>", "<eos>"),
    needs_mm_token_type_ids=False,
    audio_max_seconds=30.0,
    media_markers=4,
    notes=(
        "fp16 overflows in the conv weights: bf16 or fp32 only.",
        "Plain q_proj/k_proj/v_proj targets also match the audio tower: targets are scoped to "
        "the language model.",
    ),
)

GEMMA4 = Family(
    name="gemma4",
    model_types=("gemma4", "gemma4_text"),
    causal_lm_class="Gemma4ForCausalLM",
    multimodal_class="Gemma4ForConditionalGeneration",
    processor_class="Gemma4Processor",
    turn_start="<|turn>",
    turn_end="<turn|>",
    assistant_role="model",
    system_turn=True,
    stop_tokens=("<turn|>", "<eos>", "<|tool_response>"),
    needs_mm_token_type_ids=True,
    # 750 audio soft tokens at 40 ms each: the processor's cap.
    audio_max_seconds=30.0,
    audio_tokens_per_second=25.0,
    channel_start="<|channel>",
    channel_end="<channel|>",
    think_token="<|think|>",
    tool_calling=True,
    notes=(
        "Replies without reasoning are trained without a thinking channel, and inference "
        "renders prompts the same way (no empty <|channel>thought block). Replies with "
        "reasoning are trained as <|channel>thought\n...<channel|> before the answer, with "
        "<|think|> opening the system turn.",
        "mm_token_type_ids are passed even for text-only batches.",
        "Vision/audio linears are Gemma4ClippableLinear, which PEFT refuses: targets are scoped "
        "to the language model.",
        "MoE experts are fused parameters, not nn.Linear: default LoRA targets cover attention "
        "and the dense MLP, not the experts.",
    ),
)

FAMILIES: tuple[Family, ...] = (GEMMA3, GEMMA3N, GEMMA4)


def family_of(config: Any, where: str | None = None) -> Family:
    """The family of a transformers config, from its `model_type`; a UserError if not a Gemma."""
    model_type = getattr(config, "model_type", None)
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    known = ", ".join(t for f in FAMILIES for t in f.model_types)
    raise UserError(
        problem(
            where,
            f"model_type {model_type!r} is not a supported Gemma family (supported: {known})",
            "point --model at a Gemma 3, Gemma 3n or Gemma 4 checkpoint",
        )
    )


def family_by_name(name: str) -> Family:
    for family in FAMILIES:
        if family.name == name:
            return family
    raise KeyError(name)


def text_config(config: Any) -> Any:
    """The language model's config (the config itself for text-only checkpoints)."""
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def lora_target_regex(modules: tuple[str, ...] = TEXT_LINEARS) -> str:
    """A PEFT `target_modules` regex matching `modules` in the language model's decoder only.

    Text-only checkpoints name layers `model.layers.N...`; multimodal ones
    `model.language_model.layers.N...`. Vision and audio towers never match, so PEFT neither
    wraps audio attention by accident (Gemma 3n) nor trips on Gemma4ClippableLinear.
    """
    names = "|".join(modules)
    return rf"^model\.(?:language_model\.)?layers\.\d+\.(?:self_attn|mlp)\.(?:{names})$"


TINY_FAMILIES = ("gemma3", "gemma3-vision", "gemma3n", "gemma4", "gemma4-moe", "gemma4-dense")
"""Tiny random model families `gemmaforge tiny` builds (models/tiny.py), named here so the CLI
checks a name without importing torch."""
