"""Images and audio inside conversations: their token runs and their model features.

The model's own processor decides how many soft tokens an image or clip becomes (Gemma 4's
image count depends on the picture's shape and the token budget; audio on the duration), so
we ask it per media part: run it on the lone placeholder token with that one item, and splice
the expanded ids (`<boi>` + soft tokens + `<eoi>`, with Gemma 3n's surrounding blank lines)
into the ids we render ourselves. Batches then get their pixel / audio features from one more
processor call over the batch's media, in the order their tokens appear, which is the order
the model scatters features into token positions.

Decoding every item while the dataset is loaded validates all media before training starts;
the features themselves are rebuilt per batch instead of kept, so memory does not grow with
the dataset (a Gemma 4 image's patches alone are ~2 MB).
"""

from __future__ import annotations

from dataclasses import dataclass

from gemmaforge.data.examples.media import MediaPolicy, load_audio, load_image
from gemmaforge.errors import UserError, problem

TYPE_KEYS = ("mm_token_type_ids", "token_type_ids")
"""Per-token modality ids the processors emit (Gemma 4 / Gemma 3n); the model wants them back."""
TEXT_KEYS = ("input_ids", "attention_mask", *TYPE_KEYS)


@dataclass(frozen=True)
class MediaRef:
    """One image or audio part of an example, for rebuilding its features at batch time."""

    kind: str
    ref: str
    where: str | None


class MediaEncoder:
    """Expands media parts to token runs and builds batch features, with one processor."""

    def __init__(self, processor, policy: MediaPolicy | None = None):
        self.processor = processor
        self.policy = policy or MediaPolicy()
        self.placeholders = {
            "image": getattr(processor, "image_token", None),
            "audio": getattr(processor, "audio_token", None),
        }
        # The per-token modality key this processor emits (Gemma 4: mm_token_type_ids,
        # Gemma 3n: token_type_ids), if any.
        names = set(getattr(processor, "model_input_names", ()))
        names |= set(processor.tokenizer("x", return_tensors=None))
        self.type_key = next((key for key in TYPE_KEYS if key in names), None)

    def segment(self, media: MediaRef) -> tuple[list[int], list[int]]:
        """(ids, modality type ids) the part becomes in the token sequence."""
        if not self.placeholders.get(media.kind):
            raise UserError(
                problem(
                    media.where,
                    f"this model's processor takes no {media.kind}",
                    f"remove the {media.kind} parts, or use a checkpoint with a {media.kind} tower",
                )
            )
        out = self._process([media])
        ids = out["input_ids"][0].tolist()
        key = next((k for k in TYPE_KEYS if k in out), None)
        types = out[key][0].tolist() if key else [0] * len(ids)
        return ids, types

    def features(self, media: list[MediaRef]) -> dict:
        """Model inputs for the batch's media, in token order (no text keys)."""
        if not media:
            return {}
        out = self._process(media)
        skip = set(TEXT_KEYS) | set(getattr(self.processor, "unused_input_names", ()))
        return {key: value for key, value in out.items() if key not in skip}

    def _process(self, media: list[MediaRef]):
        text = "".join(self.placeholders[m.kind] for m in media)
        images = [load_image(m.ref, m.where) for m in media if m.kind == "image"]
        audio = [
            load_audio(m.ref, m.where, self.policy).samples for m in media if m.kind == "audio"
        ]
        kwargs = {}
        if images:
            kwargs["images"] = [images]
        if audio:
            kwargs["audio"] = audio
        return self.processor(text=[text], add_special_tokens=False, return_tensors="pt", **kwargs)


def media_encoder(loaded, data_cfg) -> MediaEncoder | None:
    """The MediaEncoder of a loaded multimodal model (None for text-only checkpoints), with
    the run's image budget and the family's audio length limit. Training, eval, generate and
    serve all build it here, so media are encoded the same way everywhere."""
    if loaded.processor is None:
        if data_cfg.image_budget is not None:
            raise UserError(
                problem(
                    "data.image_budget",
                    f"{loaded.source} is a text-only model: it has no image processor",
                    "remove data.image_budget",
                )
            )
        return None
    set_image_budget(loaded.processor, data_cfg.image_budget)
    policy = MediaPolicy(
        audio_max_seconds=loaded.family.audio_max_seconds, audio_overlong=data_cfg.audio_overlong
    )
    return MediaEncoder(loaded.processor, policy)


def set_image_budget(processor, budget: int | None) -> None:
    """Set Gemma 4's soft tokens per image (70-1120) on its image and video processors."""
    if budget is None:
        return
    image_processor = getattr(processor, "image_processor", None)
    if image_processor is None or not hasattr(image_processor, "max_soft_tokens"):
        raise UserError(
            problem(
                "data.image_budget",
                "this model's image processor has no token budget (it is a Gemma 4 setting)",
                "remove data.image_budget",
            )
        )
    image_processor.max_soft_tokens = budget
    video_processor = getattr(processor, "video_processor", None)
    if video_processor is not None and hasattr(video_processor, "max_soft_tokens"):
        video_processor.max_soft_tokens = budget
