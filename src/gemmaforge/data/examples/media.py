"""Decode and validate the images, audio clips and videos that examples point at.

Images come out as RGB `PIL.Image`s, audio as 16 kHz mono float32 `AudioClip`s, videos as
sampled RGB frames with their timestamps (`VideoClip`): what the Gemma processors expect.
Every failure is a `MediaError` naming the data row (`where`), the media reference, the problem
and the fix; the row reading code collects them.

Decisions:
- Media is read whole into memory from a local path or any fsspec URL: clips and photos are
  small, and a file over `data.max_media_bytes` (or a device such as /dev/zero) is refused
  before it is read whole. Audio longer than `data.max_audio_seconds` by its header is
  refused before decoding, and only what the model takes of a long clip is decoded. Remote
  media are fetched with retries through a size-capped local cache (`media_cache.py`), so
  later epochs read them from disk.
- Images: only JPEG, PNG, WebP, TIFF, GIF and BMP are opened: fewer decoders run on untrusted
  files, and Pillow's EPS plugin would shell out to Ghostscript. The size in the header is
  checked before any pixel is decoded (decompression bombs). Transparency is composited on
  white, as most viewers show it; 16-bit greyscale is scaled, not clipped.
- Audio: soundfile (libsndfile) first, PyAV (FFmpeg, bundled in its wheel) as the fallback.
  libsndfile decodes WAV/FLAC/Ogg/MP3 exactly and fast, with no encoder-delay guesswork; FFmpeg
  reads everything else (M4A/AAC, Opus in WebM, the audio track of a video). Truncated WAVs are
  detected from the RIFF header, because both libraries silently shorten them, and a half clip
  would train against its whole transcript. Resampling uses soxr (high quality, numpy in and
  out); channels are downmixed by averaging.
- Video: PyAV decodes the first video stream; frames are taken at `MediaPolicy.video_fps`,
  or, when that would exceed `video_max_frames`, evenly across the whole video (the declared
  duration decides which, before decoding). The audio track is not read: Gemma 4's processor
  gives a video no audio tokens. Frames 10 s or more apart are reached by seeking to the
  keyframe before each (falling back to walking the stream if seeking fails); closer ones by
  decoding the stream from the start, which is then the cheaper way.
- No torchaudio (nor torchvision.io for video): its decoders moved out to torchcodec, it is
  built against one exact torch version (installing it can replace the user's torch), and
  nothing here needs tensors.
"""

from __future__ import annotations

import io
import itertools
import math
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import av
import numpy as np
import soundfile
import soxr
from PIL import Image, ImageOps, UnidentifiedImageError

from gemmaforge import limits
from gemmaforge.data.read import media_cache, remote
from gemmaforge.data.read.media_files import describe_content
from gemmaforge.data.read.remote import is_url
from gemmaforge.errors import UserError, problem

SAMPLE_RATE = 16_000
"""Gemma's audio feature extractors all take 16 kHz mono."""

IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "TIFF", "GIF", "BMP")
"""Pillow plugins allowed to open an image (JPEG covers the MPO files many phones write)."""

_RESIZE = "resize it, e.g. `magick IN -resize 4096x4096 OUT`; if it is genuine, raise "
_CONVERT_AUDIO = "convert it with `ffmpeg -i IN -ac 1 -ar 16000 OUT.wav`"


@dataclass(frozen=True)
class MediaPolicy:
    """Limits that decide whether a clip or image is used, cut or rejected."""

    audio_max_seconds: float | None = None
    """Longest clip the model family takes (Gemma 3n: 30 s); None means no limit."""
    audio_overlong: Literal["truncate", "drop", "fail"] = "truncate"
    """What to do with a longer clip: keep its start, skip the example, or stop with an error."""
    image_min_side: int = 2
    """Images with a smaller side are errors (placeholders, tracking pixels)."""
    image_max_pixels: int = 50_000_000
    """Images with more pixels are errors (decompression bomb guard)."""
    video_fps: float = 1.0
    """Frames sampled per second of video."""
    video_max_frames: int = 32
    """Most frames taken from one video (a longer one is sampled evenly across its length)."""


# eq=False: comparing or hashing the samples array would raise; identity is what callers need.
@dataclass(frozen=True, kw_only=True, eq=False)
class AudioClip:
    """One decoded clip: mono float32 samples in [-1, 1] at `sample_rate`."""

    samples: np.ndarray
    sample_rate: int = SAMPLE_RATE
    original_seconds: float
    """Length of the file's audio before any truncation."""
    truncated: bool
    """Whether the clip was cut to `MediaPolicy.audio_max_seconds`."""


# eq=False: as AudioClip, the frames array must not be compared.
@dataclass(frozen=True, kw_only=True, eq=False)
class VideoClip:
    """Frames sampled from a video: RGB uint8 (frames x height x width x 3), with each frame's
    time in seconds."""

    frames: np.ndarray
    times: tuple[float, ...]
    seconds: float
    """Length of the video stream (declared, else up to its last frame)."""
    source_frames: int
    """Frames decoded (the stream's frame count up to the last one sampled)."""

    def metadata(self) -> dict:
        """`video_metadata` for transformers' video processors: timestamps as frame indices at
        a millisecond rate, so the processor's `mm:ss` labels are the sampled frames' times."""
        height, width = self.frames.shape[1:3]
        return {
            "total_num_frames": max(self.source_frames, len(self.times)),
            "fps": 1000.0,
            "duration": self.seconds,
            "frames_indices": [round(t * 1000) for t in self.times],
            "height": height,
            "width": width,
        }


class MediaError(UserError):
    """An image or audio file that cannot be used, with where it is referenced and the fix."""

    def __init__(self, where: str | None, ref: str, what: str, fix: str):
        self.where, self.ref, self.what, self.fix = where, ref, what, fix
        # A data URL can be megabytes of base64: never print it whole.
        shown = ref if len(ref) <= 300 else f"{ref[:60]}... ({len(ref)} characters)"
        super().__init__(problem(where, f"{shown!r} {what}", fix))

    def __reduce__(self):
        # Exceptions are pickled with their args; ours differ from the message, and data
        # loader worker processes send errors back to the parent pickled.
        return type(self), (self.where, self.ref, self.what, self.fix)


class MediaDropped(MediaError):
    """A clip skipped by policy (`audio_overlong: drop`): count it, don't stop."""


def open_media_bytes(ref: str, where: str | None = None) -> bytes:
    """All bytes of a local file, an fsspec URL (http(s)://, s3://, file://, ...) or a base64
    data URL, at most `data.max_media_bytes` of them; a device, pipe or folder is refused
    before any read."""
    cap = limits.current().max_media_bytes
    if ref.startswith("data:"):
        data = _read_data_url(ref, where)
        if len(data) > cap:
            raise _too_big(where, ref, len(data), cap)
        return data
    if is_url(ref):
        data = _read_url(ref, where)
        if len(data) > cap:
            raise _too_big(where, ref, len(data), cap)
        return data
    with _open_regular(ref, where) as handle:
        data = handle.read(cap + 1)
    if len(data) > cap:
        raise _too_big(where, ref, None, cap)
    return data


def _open_regular(ref: str, where: str | None):
    """The local file `ref` opened for reading, refused unless it is a regular file."""
    try:
        handle = open(ref, "rb")  # noqa: SIM115 - returned to the caller's `with`
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            handle.close()
            raise MediaError(
                where,
                ref,
                "is not a regular file (a device, pipe or folder)",
                "point at an image, audio or video file",
            )
        return handle
    except FileNotFoundError:
        raise MediaError(
            where,
            ref,
            "does not exist",
            "check the path; relative paths start from the data file's folder",
        ) from None
    except OSError as err:
        raise MediaError(
            where, ref, f"cannot be read ({err.strerror})", "point at a readable file"
        ) from None


def _too_big(where: str | None, ref: str, size: int | None, cap: int) -> MediaError:
    size_text = f"{size:,} bytes" if size is not None else "more than that"
    return MediaError(
        where,
        ref,
        f"is {size_text}: the limit is {cap:,} bytes (data.max_media_bytes)",
        "shrink or re-encode the file, or raise data.max_media_bytes",
    )


def _read_data_url(ref: str, where: str | None) -> bytes:
    import base64
    import binascii

    header, _, payload = ref.partition(",")
    if not header.endswith(";base64"):
        raise MediaError(where, ref, "is a data URL but not base64", "encode it as base64")
    if len(payload) * 3 // 4 > MAX_DATA_URL_BYTES:
        raise MediaError(where, ref, "is too large for a data URL", "save it as a file")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise MediaError(where, ref, "is not valid base64", "re-encode it") from None


MAX_DATA_URL_BYTES = 64 << 20
"""Largest decoded data URL read (a data file's rows are read whole into memory)."""


def _read_url(ref: str, where: str | None) -> bytes:
    """Remote media go through the size-capped local cache (`media_cache`); `file://` URLs
    are local files and are read directly."""
    try:
        if ref.lower().startswith("file://"):
            return remote.read_remote(ref)
        return media_cache.fetch(ref)
    except remote.StorageError as err:
        raise MediaError(where, ref, err.what, err.fix) from None


def load_image(
    ref: str, where: str | None = None, policy: MediaPolicy = MediaPolicy()
) -> Image.Image:
    """The image at `ref` as an upright RGB `PIL.Image.Image`, or a MediaError."""
    data = _read_nonempty(ref, where)
    with warnings.catch_warnings():
        # Pillow warns above MAX_IMAGE_PIXELS and raises above twice that; both mean no.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
            what = f"is too large to decode safely (Pillow: {str(err).rstrip('.')})"
            raise MediaError(where, ref, what, _RESIZE + "PIL.Image.MAX_IMAGE_PIXELS") from None
        except UnidentifiedImageError:
            raise _not_image(where, ref, data) from None
        except (OSError, SyntaxError, ValueError) as err:
            raise _corrupt_image(where, ref, err) from None
        width, height = image.size
        max_pixels = min(policy.image_max_pixels, limits.current().max_image_pixels)
        if width * height > max_pixels:
            what = (
                f"is {width} x {height} = {width * height:,} pixels, more than the limit of "
                f"{max_pixels:,} (a guard against decompression bombs)"
            )
            raise MediaError(where, ref, what, _RESIZE + "data.max_image_pixels")
        if min(width, height) < policy.image_min_side:
            raise MediaError(
                where,
                ref,
                f"is {width} x {height} pixels, too small to be a real image "
                f"(each side must be at least {policy.image_min_side} pixels)",
                "replace it with the real image; tiny images are usually placeholders",
            )
        try:
            image.load()
            return _to_rgb(ImageOps.exif_transpose(image))
        except (OSError, SyntaxError, ValueError, EOFError) as err:
            raise _corrupt_image(where, ref, err) from None


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "I" or image.mode.startswith("I;16"):
        # Pillow's own conversion clips 16-bit values at 255, turning the image white.
        scaled = np.asarray(image, dtype=np.float32) / 257
        image = Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _not_image(where: str | None, ref: str, data: bytes) -> MediaError:
    kind, looks_like = describe_content(data)
    if kind == "image":
        what = f"looks like {looks_like} but cannot be opened (corrupt, or an unsupported variant)"
    else:
        what = f"is not an image: the content looks like {looks_like}{_despite(ref)}"
    return MediaError(
        where, ref, what, f"point at an image file ({', '.join(IMAGE_FORMATS)}) or re-export it"
    )


def _corrupt_image(where: str | None, ref: str, err: Exception) -> MediaError:
    return MediaError(
        where,
        ref,
        f"is corrupt or truncated (Pillow: {err})",
        "re-export or re-copy the image; an interrupted copy leaves a truncated file",
    )


def load_audio(
    ref: str, where: str | None = None, policy: MediaPolicy = MediaPolicy()
) -> AudioClip:
    """The clip at `ref` as 16 kHz mono float32, cut or rejected per `policy`."""
    data = _read_nonempty(ref, where)
    shortfall = _wav_shortfall(data)
    if shortfall:
        raise MediaError(
            where,
            ref,
            f"is a truncated WAV file: its header promises {shortfall[0]:,} bytes of audio "
            f"but only {shortfall[1]:,} are there",
            "re-export or re-copy the file; an interrupted copy leaves a truncated file",
        )
    limit = policy.audio_max_seconds
    # Decode only what is used: the model's limit (plus a second, to know it was exceeded).
    budget = None if limit is None or policy.audio_overlong == "fail" else limit + 1.0
    samples, rate, declared = _decode_audio(data, ref, where, budget)
    if not samples.size:
        raise MediaError(
            where, ref, "holds no audio samples (0 s long)", "replace it with the real recording"
        )
    finite = np.isfinite(samples).all(axis=1)
    if not finite.all():
        raise MediaError(
            where,
            ref,
            f"has NaN or infinite samples (first at {np.argmin(finite) / rate:.2f} s)",
            "re-export the audio from its source; the step that wrote it failed",
        )
    seconds = max(len(samples) / rate, declared or 0.0)
    truncated = limit is not None and seconds > limit
    if truncated:
        _check_overlong(ref, where, seconds, limit, policy.audio_overlong)
        samples = samples[: round(limit * rate)]
    mono = samples.mean(axis=1)
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE)
    if truncated:
        mono = mono[: int(limit * SAMPLE_RATE)]
    # Float files may exceed full scale and resampling can overshoot; the features expect [-1, 1].
    mono = np.clip(mono, -1.0, 1.0).astype(np.float32)
    return AudioClip(samples=mono, original_seconds=seconds, truncated=truncated)


def _check_overlong(ref: str, where: str | None, seconds: float, limit: float, setting: str):
    if setting == "truncate":
        return
    error = MediaDropped if setting == "drop" else MediaError
    raise error(
        where,
        ref,
        f"is {seconds:.1f} s long, more than the model's {limit:g} s limit "
        f"(audio_overlong: {setting})",
        f"cut the clip to {limit:g} s or less, or set audio_overlong to 'truncate' to keep "
        "its start" + ("" if setting == "drop" else " or 'drop' to skip such examples"),
    )


def _wav_shortfall(data: bytes) -> tuple[int, int] | None:
    """(promised, present) bytes of a WAV data chunk that was cut short, else None."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    offset = 12
    while offset + 8 <= len(data):
        chunk = data[offset : offset + 4]
        size = int.from_bytes(data[offset + 4 : offset + 8], "little")
        if chunk == b"data":
            present = len(data) - offset - 8
            # Streaming writers leave the size at 0 or 0xFFFFFFFF: unknown, not short.
            return (size, present) if 0 < size < 0xFFFFFFFF and present < size else None
        offset += 8 + size + (size & 1)  # chunks are padded to an even length
    return None


def _check_declared(ref: str, where: str | None, seconds: float | None) -> None:
    cap = limits.current().max_audio_seconds
    if seconds is not None and seconds > cap:
        raise MediaError(
            where,
            ref,
            f"declares {seconds:,.0f} s of audio: the limit is {cap:g} s (data.max_audio_seconds)",
            "cut the recording into shorter clips, or raise data.max_audio_seconds",
        )


def _decode_audio(
    data: bytes, ref: str, where: str | None, budget: float | None = None
) -> tuple[np.ndarray, int, float | None]:
    """(frames x channels float32 samples, sample rate, declared seconds), by libsndfile else
    FFmpeg. The declared length is checked against data.max_audio_seconds before decoding, and
    at most `budget` seconds are decoded."""
    try:
        with soundfile.SoundFile(io.BytesIO(data)) as file:
            rate = file.samplerate
            declared = file.frames / rate if file.frames > 0 else None
            _check_declared(ref, where, declared)
            frames = -1 if budget is None else int(budget * rate)
            return file.read(frames, dtype="float32", always_2d=True), rate, declared
    except soundfile.SoundFileError:
        return _decode_with_pyav(data, ref, where, budget)


def _decode_with_pyav(
    data: bytes, ref: str, where: str | None, budget: float | None = None
) -> tuple[np.ndarray, int, float | None]:
    kind, looks_like = describe_content(data)
    not_audio = f"is not audio: the content looks like {looks_like}{_despite(ref)}"
    try:
        with av.open(io.BytesIO(data)) as container:
            if not container.streams.audio:
                raise MediaError(
                    where, ref, not_audio, "point at an audio file (WAV, FLAC, MP3, M4A, Ogg)"
                )
            stream = container.streams.audio[0]
            declared = None
            if stream.duration is not None and stream.time_base is not None:
                declared = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                declared = container.duration / av.time_base
            _check_declared(ref, where, declared)
            # Keep the rate and layout; only the sample format is unified (planar float).
            resampler = av.AudioResampler(format="fltp")
            frames, decoded = [], 0.0
            for frame in itertools.chain(container.decode(stream), [None]):
                for out in resampler.resample(frame):
                    frames.append(out)
                    decoded += out.samples / out.sample_rate
                if budget is not None and decoded >= budget:
                    break
    except av.error.DecoderNotFoundError:
        raise MediaError(
            where,
            ref,
            "uses an audio codec neither libsndfile nor FFmpeg can decode",
            _CONVERT_AUDIO,
        ) from None
    except av.FFmpegError as err:
        what = (
            f"looks like {looks_like} but cannot be decoded (FFmpeg: {err.strerror})"
            if kind == "audio"
            else not_audio
        )
        raise MediaError(where, ref, what, f"re-export the file or {_CONVERT_AUDIO}") from None
    if not frames:
        return np.zeros((0, 1), np.float32), SAMPLE_RATE, declared
    samples = np.concatenate([frame.to_ndarray() for frame in frames], axis=1)
    return samples.T, frames[0].sample_rate, declared


_CONVERT_VIDEO = "re-encode it with `ffmpeg -i IN -c:v libx264 -pix_fmt yuv420p OUT.mp4`"


def load_video(
    ref: str, where: str | None = None, policy: MediaPolicy = MediaPolicy()
) -> VideoClip:
    """Frames of the video at `ref`, sampled per `policy`, or a MediaError."""
    source, head = _video_source(ref, where)
    kind, looks_like = describe_content(head)
    not_video = f"is not a video: the content looks like {looks_like}{_despite(ref)}"
    try:
        with av.open(source) as container:
            if not container.streams.video:
                raise MediaError(where, ref, not_video, "point at a video file (MP4, WebM, MKV)")
            stream = container.streams.video[0]
            declared = _declared_seconds(container, stream)
            if declared is not None and declared > limits.current().max_audio_seconds:
                raise MediaError(
                    where,
                    ref,
                    f"declares {declared:,.0f} s of video: the limit is "
                    f"{limits.current().max_audio_seconds:g} s (data.max_audio_seconds)",
                    "cut the video into shorter pieces, or raise data.max_audio_seconds",
                )
            _check_frame_size(ref, where, stream.codec_context, policy)
            targets = _frame_targets(declared, policy)
            frames, times, decoded, last = _sample_frames(container, stream, targets, policy)
    except av.error.DecoderNotFoundError:
        raise MediaError(
            where, ref, "uses a video codec FFmpeg (PyAV) cannot decode", _CONVERT_VIDEO
        ) from None
    except av.FFmpegError as err:
        what = (
            f"looks like {looks_like} but cannot be decoded (FFmpeg: {err.strerror})"
            if kind == "video"
            else not_video
        )
        raise MediaError(where, ref, what, _CONVERT_VIDEO) from None
    if not frames:
        raise MediaError(
            where, ref, "holds no video frames (0 s long)", "replace it with the real video"
        )
    seconds = max(declared or 0.0, last)
    return VideoClip(
        frames=np.stack(frames), times=tuple(times), seconds=seconds, source_frames=decoded
    )


MAX_FRAME_PIXELS = 1120 * 9 * 16 * 16
"""Frames are scaled down to at most this many pixels as they are decoded: what Gemma 4's
largest budget (1120 soft tokens of 3 x 3 patches of 16 px) uses, so no budget loses
detail, while 32 frames of 4K video are not held at full size."""


def _check_frame_size(ref: str, where: str | None, codec, policy: MediaPolicy) -> None:
    width, height = codec.width or 0, codec.height or 0
    if not width or not height:
        return  # not in the header: the decoded frames are checked by the processor
    max_pixels = min(policy.image_max_pixels, limits.current().max_image_pixels)
    if width * height > max_pixels:
        raise MediaError(
            where,
            ref,
            f"has {width} x {height} = {width * height:,} pixel frames, more than the limit of "
            f"{max_pixels:,} (data.max_image_pixels)",
            "scale it down, e.g. `ffmpeg -i IN -vf scale=1280:-2 OUT.mp4`",
        )
    if min(width, height) < policy.image_min_side:
        raise MediaError(
            where,
            ref,
            f"has {width} x {height} pixel frames, too small to be a real video",
            "replace it with the real video",
        )


def _rgb(frame) -> np.ndarray:
    """The frame as RGB uint8, scaled down to MAX_FRAME_PIXELS if larger."""
    pixels = frame.width * frame.height
    if pixels <= MAX_FRAME_PIXELS:
        return frame.to_ndarray(format="rgb24")
    scale = (MAX_FRAME_PIXELS / pixels) ** 0.5
    width = max(2, int(frame.width * scale) // 2 * 2)
    height = max(2, int(frame.height * scale) // 2 * 2)
    return frame.to_ndarray(format="rgb24", width=width, height=height)


def _video_source(ref: str, where: str | None) -> tuple[str | io.BytesIO, bytes]:
    """(what av.open reads, the first bytes): a local file by its path, so FFmpeg reads only
    what sampling needs of a large video (after the same checks as `open_media_bytes`), URLs
    and data URLs from memory (through the media cache)."""
    if ref.startswith("data:") or is_url(ref):
        data = _read_nonempty(ref, where)
        return io.BytesIO(data), data[:64]
    cap = limits.current().max_media_bytes
    with _open_regular(ref, where) as handle:
        size = os.fstat(handle.fileno()).st_size
        head = handle.read(64)
    if size > cap:
        raise _too_big(where, ref, size, cap)
    if not head:
        raise MediaError(
            where,
            ref,
            "is empty (0 bytes)",
            "re-export or re-copy the file; an interrupted copy leaves an empty file",
        )
    return ref, head


def _declared_seconds(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _frame_targets(declared: float | None, policy: MediaPolicy) -> list[float] | None:
    """The times (s) to take frames at: every 1/fps, or `video_max_frames` spread evenly over
    the declared length when the rate would give more. None when the length is unknown: then
    frames are taken at the rate from the start, up to the budget."""
    if declared is None or declared <= 0:
        return None
    step = 1.0 / policy.video_fps
    # Times before the end: the duration includes the last frame's display time.
    count = max(1, math.ceil(declared / step - 1e-6))
    if count <= policy.video_max_frames:
        return [i * step for i in range(count)]
    # Evenly spread, each at the middle of its share of the video (as transformers' sampler).
    share = declared / policy.video_max_frames
    return [(i + 0.5) * share for i in range(policy.video_max_frames)]


SEEK_GAP = 10.0
"""Seconds between sampled frames above which each is reached by seeking to the keyframe
before it instead of decoding every frame in between. A keyframe is typically every 2-10 s
(x264's default: 250 frames), so below this gap seeking would decode about as much again."""


def _sample_frames(container, stream, targets: list[float] | None, policy: MediaPolicy):
    """(RGB frames, their times, frames decoded, time of the last decoded frame): for each
    target the first frame at or after it, each frame taken once (targets closer together than
    the video's own frames share one); targets past the last frame get none."""
    stream.thread_type = "AUTO"
    if targets is None:
        step = 1.0 / policy.video_fps
        targets = [i * step for i in range(policy.video_max_frames)]
    elif len(targets) > 1 and targets[1] - targets[0] >= SEEK_GAP:
        try:
            return _seek_frames(container, stream, targets)
        except (av.FFmpegError, _NoTimestamps):
            container.seek(0)  # a stream that does not seek well: walk it from the start
    frames, times, decoded, last, next_target = [], [], 0, 0.0, 0
    for frame in container.decode(stream):
        decoded += 1
        last = float(frame.time) if frame.time is not None else float(decoded - 1)
        if last < targets[next_target] - 1e-6:
            continue
        frames.append(_rgb(frame))
        times.append(last)
        while next_target < len(targets) and targets[next_target] <= last + 1e-6:
            next_target += 1
        if next_target == len(targets):
            break
    return frames, times, decoded, last


class _NoTimestamps(Exception):
    """A decoded frame without a time: seeking cannot tell where it landed."""


def _seek_frames(container, stream, targets: list[float]):
    """As `_sample_frames`, seeking to the keyframe at or before each target (far apart)."""
    frames, times, decoded, last = [], [], 0, 0.0
    for target in targets:
        if times and times[-1] >= target - 1e-6:
            continue
        container.seek(int(target / stream.time_base), stream=stream, backward=True)
        for frame in container.decode(stream):
            decoded += 1
            if frame.time is None:
                raise _NoTimestamps
            last = max(last, float(frame.time))
            if frame.time >= target - 1e-6:
                if not times or frame.time > times[-1]:
                    frames.append(_rgb(frame))
                    times.append(float(frame.time))
                break
    return frames, times, decoded, last


def _read_nonempty(ref: str, where: str | None) -> bytes:
    data = open_media_bytes(ref, where)
    if not data:
        raise MediaError(
            where,
            ref,
            "is empty (0 bytes)",
            "re-export or re-copy the file; an interrupted copy leaves an empty file",
        )
    return data


def _despite(ref: str) -> str:
    suffix = Path(ref.split("?")[0]).suffix
    return f" despite its {suffix} extension" if suffix else ""
