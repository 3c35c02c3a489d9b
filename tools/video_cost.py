"""What one training video costs: decode time, tokens, frame and pixel memory.

Writes a synthetic clip with PyAV (H.264, moving noise so frames differ), then times, as
training does them, the decode (`load_video`), the token expansion at load (`segment`: decode
+ processor) and the per-batch features (`features`: decode again + processor), median of 3;
and, interleaved with it, the decode when every frame is walked instead of seeking (`walk`;
seeking is used for frames 10 s or more apart).

    gemmaforge tiny gemma4 /tmp/g4   # or a real Gemma 4 folder (only its processor is read)
    python tools/video_cost.py /tmp/g4 [--seconds 30] [--size 640x360] [--fps 30]
        [--keyframe-seconds 2]

Timings are CPU wall-clock and noisy on a shared machine: quote `uptime` beside them.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import av
import numpy as np


def write_clip(path: Path, seconds: int, width: int, height: int, fps: int, gop: int) -> Path:
    base = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = gop
        for i in range(fps * seconds):
            frame = av.VideoFrame.from_ndarray(np.roll(base, i * 4, axis=1), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a Gemma 4 folder with its processor files")
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--video-fps", type=float, default=1.0)
    parser.add_argument("--max-frames", type=int, default=32)
    parser.add_argument("--keyframe-seconds", type=float, default=2.0)
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))

    from transformers import AutoProcessor

    from gemmaforge.data.examples import media
    from gemmaforge.data.examples.media import MediaPolicy, load_video
    from gemmaforge.data.examples.multimodal import MediaEncoder, MediaRef

    gop = max(1, round(args.fps * args.keyframe_seconds))
    path = write_clip(
        Path(tempfile.mkdtemp()) / "clip.mp4", args.seconds, width, height, args.fps, gop
    )
    processor = AutoProcessor.from_pretrained(args.model)
    policy = MediaPolicy(video_fps=args.video_fps, video_max_frames=args.max_frames)
    encoder = MediaEncoder(processor, policy, "gemma4")
    ref = MediaRef("video", str(path), None)
    timings: dict[str, list[float]] = {"decode": [], "segment": [], "features": [], "walk": []}
    for _ in range(3):
        seek_gap, media.SEEK_GAP = media.SEEK_GAP, float("inf")
        start = time.perf_counter()
        load_video(str(path), None, policy)
        timings["walk"].append(time.perf_counter() - start)
        media.SEEK_GAP = seek_gap
        start = time.perf_counter()
        clip = load_video(str(path), None, policy)
        timings["decode"].append(time.perf_counter() - start)
        start = time.perf_counter()
        ids, _ = encoder.segment(ref)
        timings["segment"].append(time.perf_counter() - start)
        start = time.perf_counter()
        features = encoder.features([ref])
        timings["features"].append(time.perf_counter() - start)
    pixels = features["pixel_values_videos"]
    print(f"clip: {args.seconds} s, {width}x{height} at {args.fps} fps, "
          f"{path.stat().st_size / 2**20:.1f} MiB")  # fmt: skip
    print(f"frames sampled: {len(clip.times)} ({clip.frames.nbytes / 2**20:.1f} MiB as RGB)")
    print(f"tokens per video: {len(ids)}")
    print(f"pixel_values_videos: {tuple(pixels.shape)} {pixels.dtype}, "
          f"{pixels.nbytes / 2**20:.1f} MiB")  # fmt: skip
    median = {k: statistics.median(v) for k, v in timings.items()}
    print("median s: " + ", ".join(f"{k} {v:.2f}" for k, v in median.items()))
    print(f"decode / walk: {median['decode'] / median['walk']:.2f}")


if __name__ == "__main__":
    main()
