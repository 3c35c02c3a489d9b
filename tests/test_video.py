"""Video rows on tiny Gemma 4: frames sampled at data.video_fps within data.video_max_frames,
one `mm:ss` + soft-token run per frame in the rendered ids (never labelled), the frames'
pixels reaching the model, a short training run, `data check` and `plan` counting them, and
the refusals (Gemma 3 / 3n, broken files) naming the row, the file and the fix.

Videos are written here with PyAV (MPEG-4 Part 2, in every PyAV wheel): a few frames of solid
colours, so which frames were sampled can be read back from their colour.
"""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from typer.testing import CliRunner

from gemmaforge.config import Config, DataConfig
from gemmaforge.data.examples.dataset import RowRenderer, load_datasets
from gemmaforge.data.examples.media import MediaError, MediaPolicy, load_video
from gemmaforge.data.examples.multimodal import MediaEncoder, MediaRef
from gemmaforge.data.examples.render import IGNORE_INDEX
from gemmaforge.data.read.sources import iter_source_records, open_sources
from gemmaforge.errors import UserError
from gemmaforge.models.families import GEMMA3, GEMMA3N, GEMMA4

COLOURS = [
    (230, 20, 20),
    (20, 230, 20),
    (20, 20, 230),
    (230, 230, 20),
    (20, 230, 230),
    (230, 20, 230),
]


def write_video(path: Path, colours=COLOURS, fps: int = 2, size=(96, 64), gop: int = 12) -> Path:
    """One solid-colour frame per entry of `colours`, at `fps` frames per second, a keyframe
    every `gop` frames."""
    width, height = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = gop
        for rgb in colours:
            pixels = np.empty((height, width, 3), np.uint8)
            pixels[...] = rgb
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def nearest(frame: np.ndarray) -> int:
    """Index in COLOURS of a decoded frame's colour (lossy coding moves it a little)."""
    mean = frame.reshape(-1, 3).mean(axis=0)
    return int(np.argmin([np.abs(mean - c).sum() for c in COLOURS]))


def chat(content, reply: str = "Colours.", **extra) -> dict:
    return {
        "messages": [
            {"role": "user", "content": content},
            {"role": "assistant", "content": reply},
        ],
        **extra,
    }


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="module")
def processor(tiny_dir):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_dir("gemma4"))


def renderer(processor, data_file: Path, family=GEMMA4, **data) -> RowRenderer:
    cfg = DataConfig(train=str(data_file), **data)
    policy = MediaPolicy(video_fps=cfg.video_fps, video_max_frames=cfg.video_max_frames)
    encoder = MediaEncoder(processor, policy, family.name)
    return RowRenderer(cfg, family, processor.tokenizer, encoder)


def render_file(processor, data_file: Path, **data):
    render = renderer(processor, data_file, **data)
    return [render(record) for record in iter_source_records(str(data_file))]


# -- decoding and sampling -----------------------------------------------------------------


def test_frames_are_sampled_at_the_rate_and_the_budget_spreads_them(tmp_path):
    video = write_video(tmp_path / "v.mp4")  # 6 frames at 2 fps: 3 s
    clip = load_video(str(video), "t.jsonl:1", MediaPolicy(video_fps=1.0, video_max_frames=32))
    assert clip.times == (0.0, 1.0, 2.0) and clip.seconds == pytest.approx(3.0)
    assert [nearest(f) for f in clip.frames] == [0, 2, 4]
    # Every frame at a higher rate than the video's own: each frame once.
    every = load_video(str(video), None, MediaPolicy(video_fps=8.0, video_max_frames=32))
    assert [nearest(f) for f in every.frames] == [0, 1, 2, 3, 4, 5]
    # A budget of 2: evenly across the whole video (0.75 s and 2.25 s), not its first 2 s.
    capped = load_video(str(video), None, MediaPolicy(video_fps=1.0, video_max_frames=2))
    assert capped.times == (1.0, 2.5)
    assert [nearest(f) for f in capped.frames] == [2, 5]
    assert capped.metadata()["frames_indices"] == [1000, 2500]


def test_far_apart_frames_are_reached_by_seeking_with_the_same_result(tmp_path, monkeypatch):
    from gemmaforge.data.examples import media

    # 40 s at 2 fps, colours cycling per frame, a keyframe every 4 frames (2 s).
    video = write_video(tmp_path / "long.mp4", [COLOURS[i % 6] for i in range(80)], gop=4)
    policy = MediaPolicy(video_fps=1.0, video_max_frames=2)  # at 10 s and 30 s
    seeked = load_video(str(video), None, policy)
    monkeypatch.setattr(media, "SEEK_GAP", 1e9)
    walked = load_video(str(video), None, policy)
    assert seeked.times == walked.times == (10.0, 30.0)
    assert [nearest(f) for f in seeked.frames] == [nearest(f) for f in walked.frames] == [2, 0]
    # Seeking decodes from the keyframe before each target, not the 61 frames up to 30 s.
    assert seeked.source_frames < 10 < walked.source_frames


@pytest.mark.parametrize(
    ("content", "what"),
    [
        (b"", "is empty (0 bytes)"),
        (b"\x00\x00\x00\x18ftypmp42" + bytes(200), "looks like an MP4/QuickTime video but cannot"),
        (b"just some text, not a video", "is not a video: the content looks like text"),
    ],
)
def test_unreadable_or_empty_videos_name_the_file_and_the_fix(tmp_path, content, what):
    (tmp_path / "bad.mp4").write_bytes(content)
    with pytest.raises(MediaError) as err:
        load_video(str(tmp_path / "bad.mp4"), "t.jsonl:3")
    message = str(err.value)
    assert message.startswith("t.jsonl:3: ") and "bad.mp4" in message and what in message
    assert "ffmpeg" in message or "re-" in message


def test_a_folder_or_a_missing_file_is_refused_before_decoding(tmp_path):
    with pytest.raises(MediaError, match=r"Is a directory|is not a regular file"):
        load_video(str(tmp_path), "t.jsonl:1")
    with pytest.raises(MediaError, match="does not exist"):
        load_video(str(tmp_path / "gone.mp4"), "t.jsonl:1")


def test_a_file_with_no_video_stream_is_not_a_video(tmp_path):
    import soundfile

    soundfile.write(tmp_path / "a.wav", np.zeros(1600, np.float32), 16000)
    with pytest.raises(MediaError, match="is not a video: the content looks like WAV audio"):
        load_video(str(tmp_path / "a.wav"), "t.jsonl:1")


# -- rendering ---------------------------------------------------------------------------------


def video_runs(processor, ids: list[int]) -> list[int]:
    """Lengths of the runs of video soft tokens in `ids`."""
    runs, current = [], 0
    for token in [*ids, -1]:
        if token == processor.video_token_id:
            current += 1
        elif current:
            runs.append(current)
            current = 0
    return runs


def test_video_parts_and_placeholders_render_a_run_per_sampled_frame(processor, tmp_path):
    write_video(tmp_path / "v.mp4")
    data = write_rows(
        tmp_path / "v.jsonl",
        [
            chat([{"type": "video", "path": "v.mp4"}, {"type": "text", "text": "Which?"}]),
            chat([{"type": "video", "video": "v.mp4"}, {"type": "text", "text": "Which?"}]),
            chat("<video>Which?", videos=["v.mp4"]),  # LLaMA-Factory
            chat([{"type": "video"}, {"type": "text", "text": "Which?"}], videos=["v.mp4"]),
            chat(
                [
                    {"type": "video_url", "video_url": {"url": "v.mp4"}},
                    {"type": "text", "text": "Which?"},
                ]
            ),
        ],
    )
    examples = render_file(processor, data)
    # 96 x 64 frames at 70 soft tokens: the processor's own arithmetic gives the run length.
    per_frame = processor._get_num_multimodal_tokens(video_sizes=[(1, 64, 96)])
    (tokens,) = per_frame["num_video_tokens"]
    for example in examples:
        assert [m.kind for m in example.media] == ["video"]
        assert video_runs(processor, example.input_ids) == [tokens] * 3
        text = processor.tokenizer.decode(example.input_ids)
        assert "00:00 <|image>" in text and "00:01 <|image>" in text and "00:02 <|image>" in text
        positions = [i for i, t in enumerate(example.input_ids) if t == processor.video_token_id]
        assert all(example.labels[i] == IGNORE_INDEX for i in positions)
        assert "Colours." in processor.tokenizer.decode(
            [t for t in example.labels if t != IGNORE_INDEX]
        )
    assert len(examples) == 5
    assert all(ex.input_ids == examples[0].input_ids for ex in examples)


def test_the_frame_budget_caps_frames_and_tokens(processor, tmp_path):
    write_video(tmp_path / "v.mp4")
    data = write_rows(tmp_path / "v.jsonl", [chat([{"type": "video", "path": "v.mp4"}])])
    (full,) = render_file(processor, data)
    (capped,) = render_file(processor, data, video_max_frames=2)
    assert len(video_runs(processor, full.input_ids)) == 3
    assert len(video_runs(processor, capped.input_ids)) == 2
    assert len(capped.input_ids) < len(full.input_ids)


def test_video_count_mismatch_is_refused(processor, tmp_path):
    write_video(tmp_path / "v.mp4")
    data = write_rows(tmp_path / "v.jsonl", [chat("<video><video>Which?", videos=["v.mp4"])])
    with pytest.raises(UserError, match="has an <video> placeholder but the row has only 1"):
        render_file(processor, data)
    data = write_rows(tmp_path / "w.jsonl", [chat("Which?", videos=["v.mp4"])])
    with pytest.raises(UserError, match=r"the row has 1 'videos' item\(s\) but 0 <video>"):
        render_file(processor, data)


@pytest.mark.parametrize(("family", "name"), [(GEMMA3N, "gemma3n"), (GEMMA3, "gemma3-vision")])
def test_gemma3_and_3n_refuse_video_naming_family_field_and_frames_as_images(
    tmp_path, family, name
):
    from gemmaforge.models.tiny import _processor, tiny_tokenizer

    write_video(tmp_path / "v.mp4")
    data = write_rows(tmp_path / "v.jsonl", [chat("<video>Which?", videos=["v.mp4"])])
    other = _processor(name, tiny_tokenizer(name))
    with pytest.raises(UserError) as err:
        render_file(other, data, family=family)
    message = str(err.value)
    assert f"{data}:1: videos[0] is a video, and this {family.name} model" in message
    assert "send frames as image parts instead" in message


def test_a_broken_video_fails_loading_naming_file_and_row(processor, tmp_path):
    write_video(tmp_path / "v.mp4")
    (tmp_path / "cut.mp4").write_bytes((tmp_path / "v.mp4").read_bytes()[:40])
    rows = [
        chat([{"type": "video", "path": "v.mp4"}]),
        chat([{"type": "video", "path": "cut.mp4"}]),
    ]
    data = write_rows(tmp_path / "v.jsonl", rows)
    cfg = DataConfig(train=str(data), val_fraction=0.0)
    encoder = MediaEncoder(processor, MediaPolicy(), "gemma4")
    with pytest.raises(UserError) as err:
        load_datasets(cfg, open_sources(cfg), GEMMA4, processor.tokenizer, 0, encoder)
    message = str(err.value)
    assert f"{data}:2" in message and "cut.mp4" in message and f"{data}:1" not in message


# -- the model ---------------------------------------------------------------------------------


def test_video_pixels_reach_the_model(tiny_dir, tmp_path):
    """The same prompt with a red or a blue video: different logits; the same video twice:
    the same logits."""
    import torch

    from gemmaforge.config import ModelConfig
    from gemmaforge.data.batches.collate import collate
    from gemmaforge.data.examples.multimodal import media_encoder
    from gemmaforge.models.load import load_model

    loaded = load_model(ModelConfig(name_or_path=str(tiny_dir("gemma4"))), for_training=False)
    encoder = media_encoder(loaded, DataConfig())
    write_video(tmp_path / "red.mp4", [COLOURS[0]] * 4)
    write_video(tmp_path / "blue.mp4", [COLOURS[2]] * 4)
    rows = [chat([{"type": "video", "path": f"{c}.mp4"}]) for c in ("red", "blue", "red")]
    data = write_rows(tmp_path / "v.jsonl", rows)
    render = RowRenderer(DataConfig(train=str(data)), GEMMA4, loaded.tokenizer, encoder)
    examples = [render(record) for record in iter_source_records(str(data))]
    batch = collate([[ex] for ex in examples], 0, encoder.type_key, encoder)
    assert batch["pixel_values_videos"].shape[0] == 6  # 2 frames each (4 frames at 2 fps)
    assert batch["num_frames_per_video"].tolist() == [2, 2, 2]
    with torch.no_grad():
        logits = loaded.model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    red, blue, red_again = logits.float()
    assert torch.equal(red, red_again)
    assert (red - blue).abs().max() > 1e-4


def test_an_image_and_a_video_in_one_row_reach_their_own_token_runs(tiny_dir, tmp_path):
    """Images and video share the vision tower but not their token runs: the batch carries
    both kinds of pixels and the forward pass places each (it raises on a count mismatch)."""
    import random

    import torch

    from gemmaforge.config import ModelConfig
    from gemmaforge.data.batches.collate import collate
    from gemmaforge.data.examples.multimodal import media_encoder
    from gemmaforge.models.load import load_model
    from mm_tasks import colour_image

    loaded = load_model(ModelConfig(name_or_path=str(tiny_dir("gemma4"))), for_training=False)
    encoder = media_encoder(loaded, DataConfig())
    colour_image(tmp_path / "a.png", (200, 30, 30), random.Random(0))
    write_video(tmp_path / "v.mp4")
    content = [
        {"type": "image", "path": "a.png"},
        {"type": "video", "path": "v.mp4"},
        {"type": "text", "text": "Same colour?"},
    ]
    data = write_rows(tmp_path / "v.jsonl", [chat(content, "Yes.")])
    render = RowRenderer(DataConfig(train=str(data)), GEMMA4, loaded.tokenizer, encoder)
    (example,) = [render(record) for record in iter_source_records(str(data))]
    assert [m.kind for m in example.media] == ["image", "video"]
    batch = collate([[example]], 0, encoder.type_key, encoder)
    assert "pixel_values" in batch and batch["pixel_values_videos"].shape[0] == 3
    with torch.no_grad():
        logits = loaded.model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    assert torch.isfinite(logits).all()


@pytest.mark.slow
@pytest.mark.parametrize("streaming", ["off", "on"])
def test_training_on_video_rows_finishes_with_finite_loss(tiny_dir, tmp_path, streaming):
    import math

    from gemmaforge.train.trainer import train
    from test_train import losses

    write_video(tmp_path / "red.mp4", [COLOURS[0]] * 4)
    write_video(tmp_path / "blue.mp4", [COLOURS[2]] * 4)
    rows = [
        chat(
            [{"type": "video", "path": f"{colour}.mp4"}, {"type": "text", "text": "Colour?"}],
            colour,
        )
        for colour in ("red", "blue") * 4
    ]
    data = write_rows(tmp_path / "v.jsonl", rows)
    cfg = Config.model_validate(
        {
            "model": {"name_or_path": str(tiny_dir("gemma4"))},
            "data": {
                "train": str(data),
                "val_fraction": 0.0,
                "video_max_frames": 2,
                "streaming": streaming,
            },
            "lora": {"r": 8, "alpha": 16, "towers": ["text", "vision"]},
            "train": {"output_dir": str(tmp_path / "run"), "max_steps": 4, "batch_size": 2},
        }
    )
    result = train(cfg)
    report = json.loads((result.run_dir / "data_report.json").read_text())
    assert report["streaming"] == (streaming == "on")
    if streaming == "off":  # a stream's rows are not counted before training
        assert report["videos"] == 8 and report["images"] == 0
    curve = losses(result.run_dir)
    assert len(curve) == 4 and all(math.isfinite(loss) for loss in curve)
    # eval renders the rows with the run's own video settings and scores them.
    from gemmaforge.eval.evaluate import evaluate

    scored = evaluate(result.run_dir, data=str(data), task="perplexity", limit=2)
    assert math.isfinite(scored["metrics"]["adapter"]["perplexity"])


# -- data check and plan -----------------------------------------------------------------------


def test_data_check_reports_video_durations_and_frames(tiny_dir, tmp_path):
    from gemmaforge.cli import app

    write_video(tmp_path / "short.mp4", COLOURS[:2])  # 1 s (2 frames at 2 fps): 1 sampled
    write_video(tmp_path / "long.mp4")  # 3 s
    rows = [chat([{"type": "video", "path": f"{n}.mp4"}], n) for n in ("short", "long")]
    rows.append(chat("<video>", "long", videos=["long.mp4"]))  # the same row, LLaMA-Factory style
    data = write_rows(tmp_path / "v.jsonl", rows)
    args = ["data", "check", str(data), "--model", str(tiny_dir("gemma4"))]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["duplicates"]["rows"] == 1
    video = json.loads(result.stdout)["media"]["video"]
    assert video["count"] == 3 and video["formats"] == {".mp4": 3}
    assert video["seconds"]["min"] == 1.0 and video["seconds"]["max"] == 3.0
    assert video["frames"]["min"] == 1 and video["frames"]["max"] == 3
    assert json.loads(result.stdout)["tokens"]["video"]["count"] == 3
    text = CliRunner().invoke(app, args)
    assert "Video: 3; 1.0-3.0 s" in text.output and "1-3 frames each" in text.output


def test_plan_counts_tokens_per_video(tiny_dir, tmp_path, processor):
    from gemmaforge.perf.plan import VIDEO_TIMESTAMP_TOKENS, video_tokens
    from gemmaforge.perf.shapes import model_shape, read_config

    video = write_video(tmp_path / "v.mp4")
    data = write_rows(tmp_path / "v.jsonl", [chat([{"type": "video", "path": "v.mp4"}])])
    model = str(tiny_dir("gemma4"))
    cfg = Config.model_validate({"model": {"name_or_path": model}, "data": {"train": str(data)}})
    shape = model_shape(read_config(model), model)
    predicted = video_tokens(str(video), cfg, shape)
    assert predicted == 3 * (VIDEO_TIMESTAMP_TOKENS + 70 + 2)
    # The prediction bounds the real count: soft tokens <= the budget, timestamps <= 6 tokens.
    ids, _ = MediaEncoder(processor).segment(MediaRef("video", str(video), None))
    assert len(video_runs(processor, ids)) == 3 and len(ids) <= predicted


def test_plan_refuses_rows_whose_videos_do_not_fit_and_video_on_other_families(tiny_dir, tmp_path):
    from gemmaforge.data.examples.dataset import media_per_row
    from gemmaforge.perf.plan import make_plan

    write_video(tmp_path / "v.mp4")
    data = write_rows(tmp_path / "v.jsonl", [chat([{"type": "video", "path": "v.mp4"}])])

    def cfg(model, max_seq_length):
        return Config.model_validate(
            {
                "model": {"name_or_path": str(model)},
                "data": {"train": str(data), "max_seq_length": max_seq_length},
            }
        )

    small = cfg(tiny_dir("gemma4"), 128)
    assert media_per_row(small.data) == [[("video", str(tmp_path / "v.mp4"))]]
    with pytest.raises(UserError, match=r"raise data\.max_seq_length to at least 298"):
        make_plan(small, media_per_row(small.data))
    plan = make_plan(cfg(tiny_dir("gemma4"), 512), media_per_row(small.data))
    assert "vision" in plan.settings.towers_kept
    text_only = cfg(tiny_dir("gemma3"), 512)
    with pytest.raises(UserError, match="is a gemma3 model: video is trained on multimodal"):
        make_plan(text_only, media_per_row(text_only.data))
    text_only.data.video_budget = 140
    with pytest.raises(UserError, match=r"data\.video_budget: is a Gemma 4 video setting"):
        make_plan(text_only, media_per_row(text_only.data))


def test_a_video_token_typed_as_text_is_refused(processor, tmp_path):
    """`<|video|>` in text would be a video slot with no frames behind it."""
    data = write_rows(tmp_path / "t.jsonl", [chat("see <|video|> here")])
    with pytest.raises(UserError, match=r"holds the special token\(s\) <\|video\|> typed as text"):
        render_file(processor, data)
