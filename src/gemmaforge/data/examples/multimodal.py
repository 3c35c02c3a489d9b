"""Images, audio and video inside conversations: their token runs and their model features.

The model's own processor decides how many soft tokens an image or clip becomes (Gemma 4's
image count depends on the picture's shape and the token budget; audio on the duration), so
we ask it per media part: run it on the lone placeholder token with that one item, and splice
the expanded ids (`<boi>` + soft tokens + `<eoi>`, with Gemma 3n's surrounding blank lines;
for a Gemma 4 video, one `mm:ss <boi>` + soft tokens + `<eoi>` run per sampled frame) into the
ids we render ourselves. Batches then get their pixel / audio features from one more
processor call over the batch's media, in the order their tokens appear, which is the order
the model scatters features into token positions.

Decoding every item while the dataset is loaded validates all media before training starts;
the features themselves are rebuilt per batch instead of kept, so memory does not grow with
the dataset (a Gemma 4 image's patches alone are ~2 MB).
"""

from __future__ import annotations

from dataclasses import dataclass

from gemmaforge.data.examples.media import MediaPolicy, load_audio, load_image, load_video
from gemmaforge.errors import UserError, problem

TYPE_KEYS = ("mm_token_type_ids", "token_type_ids")
"""Per-token modality ids the processors emit (Gemma 4 / Gemma 3n); the model wants them back."""
TEXT_KEYS = ("input_ids", "attention_mask", *TYPE_KEYS)


@dataclass(frozen=True)
class MediaRef:
    """One image, audio or video part of an example, for rebuilding its features at batch
    time."""

    kind: str
    ref: str
    where: str | None
    field: str | None = None
    """The row's field that holds it (e.g. `message 1.content[0]`, `videos[0]`), for errors."""


class MediaEncoder:
    """Expands media parts to token runs and builds batch features, with one processor."""

    def __init__(self, processor, policy: MediaPolicy | None = None, family: str | None = None):
        self.processor = processor
        self.policy = policy or MediaPolicy()
        self.family = family
        self.placeholders = {
            "image": getattr(processor, "image_token", None),
            "audio": getattr(processor, "audio_token", None),
            # Gemma 3 / 3n processors have no video processor (their video_token, if any,
            # has nothing behind it).
            "video": getattr(processor, "video_token", None)
            if getattr(processor, "video_processor", None) is not None
            else None,
        }
        # The per-token modality key this processor emits (Gemma 4: mm_token_type_ids,
        # Gemma 3n: token_type_ids), if any.
        names = set(getattr(processor, "model_input_names", ()))
        names |= set(processor.tokenizer("x", return_tensors=None))
        self.type_key = next((key for key in TYPE_KEYS if key in names), None)

    def segment(self, media: MediaRef) -> tuple[list[int], list[int]]:
        """(ids, modality type ids) the part becomes in the token sequence."""
        if not self.placeholders.get(media.kind) and media.kind == "video":
            family = f"{self.family} " if self.family else ""
            raise UserError(
                problem(
                    media.where,
                    f"{media.field or 'a part'} is a video, and this {family}model's processor "
                    "takes no video (video is trained on Gemma 4 only)",
                    "send frames as image parts instead (e.g. `ffmpeg -i IN -vf fps=1 "
                    "frame_%03d.png`, one {'type': 'image'} part each), or train a Gemma 4 "
                    "checkpoint",
                )
            )
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
        videos = [load_video(m.ref, m.where, self.policy) for m in media if m.kind == "video"]
        kwargs = {}
        if images:
            kwargs["images"] = [images]
        if audio:
            kwargs["audio"] = audio
        if videos:
            # Frames are sampled already (media.load_video): the processor only labels them
            # with their times and turns them into patches.
            kwargs["videos"] = [clip.frames for clip in videos]
            kwargs["video_metadata"] = [clip.metadata() for clip in videos]
            kwargs["do_sample_frames"] = False
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
    set_video_budget(loaded.processor, data_cfg.video_budget)
    policy = MediaPolicy(
        audio_max_seconds=loaded.family.audio_max_seconds,
        audio_overlong=data_cfg.audio_overlong,
        video_fps=data_cfg.video_fps,
        video_max_frames=data_cfg.video_max_frames,
    )
    return MediaEncoder(loaded.processor, policy, loaded.family.name)


def set_image_budget(processor, budget: int | None) -> None:
    """Set Gemma 4's soft tokens per image (70-1120) on its image processor (video frames have
    their own budget, `set_video_budget`: Gemma 4's default is 70 per frame, not 280)."""
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


def set_video_budget(processor, budget: int | None) -> None:
    """Set Gemma 4's soft tokens per video frame (70-1120) on its video processor."""
    if budget is None:
        return
    video_processor = getattr(processor, "video_processor", None)
    if video_processor is None or not hasattr(video_processor, "max_soft_tokens"):
        raise UserError(
            problem(
                "data.video_budget",
                "this model's processor takes no video (it is a Gemma 4 setting)",
                "remove data.video_budget",
            )
        )
    video_processor.max_soft_tokens = budget
