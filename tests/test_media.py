"""Media decoding on real files written here: every format, every bad input, local and URL."""

from __future__ import annotations

import functools
import http.server
import io
import pickle
import struct
import threading
import zlib
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile
from PIL import Image

from gemmaforge.data.examples.media import (
    SAMPLE_RATE,
    AudioClip,
    MediaDropped,
    MediaError,
    MediaPolicy,
    load_audio,
    load_image,
    open_media_bytes,
)
from gemmaforge.data.read.media_files import describe_content, resolve_media_path

WHERE = "train.jsonl:7"
RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def tone(seconds: float, rate: int, hz: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * hz * np.arange(round(seconds * rate)) / rate)).astype(
        np.float32
    )


def peak_hz(clip: AudioClip) -> float:
    spectrum = np.abs(np.fft.rfft(clip.samples))
    return float(np.argmax(spectrum) * clip.sample_rate / len(clip.samples))


def media_error(call, *words: str, error: type[MediaError] = MediaError) -> MediaError:
    """The error `call()` raises; its message must hold WHERE and every word."""
    with pytest.raises(error) as caught:
        call()
    message = str(caught.value)
    for word in (WHERE, *words):
        assert word in message, f"{word!r} not in {message!r}"
    return caught.value


def halves(size=(64, 48), left=RED, right=BLUE, mode="RGB") -> Image.Image:
    image = Image.new("RGB", size, right)
    image.paste(left, (0, 0, size[0] // 2, size[1]))
    return image.convert(mode)


def close(pixel, expected, tolerance=40) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, expected, strict=True))


# --- images -------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".tiff", ".gif", ".bmp"])
def test_image_formats_load_as_rgb(tmp_path, suffix):
    path = tmp_path / f"photo{suffix}"
    halves().save(path)
    image = load_image(str(path), WHERE)
    assert image.mode == "RGB" and image.size == (64, 48)
    assert close(image.getpixel((8, 24)), RED) and close(image.getpixel((56, 24)), BLUE)


def test_exif_orientation_is_applied(tmp_path):
    # Stored 64 wide x 32 high, red on the left; orientation 6 means "rotate 90° clockwise to
    # display", which puts the stored left edge at the top.
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    halves(size=(64, 32)).save(path, exif=exif)
    image = load_image(str(path), WHERE)
    assert image.size == (32, 64)
    assert close(image.getpixel((16, 8)), RED) and close(image.getpixel((16, 56)), BLUE)


def test_transparency_is_composited_on_white(tmp_path):
    rgba = Image.new("RGBA", (32, 32), (0, 128, 0, 255))
    rgba.paste((0, 0, 0, 0), (0, 0, 16, 32))
    rgba.save(tmp_path / "logo.png")
    rgba.convert("LA").save(tmp_path / "grey.png")
    image = load_image(str(tmp_path / "logo.png"), WHERE)
    assert image.getpixel((4, 4)) == WHITE and image.getpixel((28, 4)) == (0, 128, 0)
    grey = load_image(str(tmp_path / "grey.png"), WHERE)
    assert grey.getpixel((4, 4)) == WHITE and grey.getpixel((28, 4))[0] < 128


@pytest.mark.parametrize("mode", ["CMYK", "L", "P", "1"])
def test_colour_modes_become_rgb(tmp_path, mode):
    path = tmp_path / ("scan.jpg" if mode == "CMYK" else "scan.png")
    source = halves(left=RED if mode in ("CMYK", "P") else WHITE, right=(0, 0, 0))
    source.convert(mode).save(path)
    image = load_image(str(path), WHERE)
    assert image.mode == "RGB"
    assert close(image.getpixel((8, 24)), source.getpixel((8, 24)))
    assert close(image.getpixel((56, 24)), (0, 0, 0))


def test_16_bit_greyscale_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "xray.png"
    Image.fromarray(np.full((16, 16), 40000, np.uint16)).save(path)
    assert Image.open(path).mode.startswith("I")
    assert close(load_image(str(path), WHERE).getpixel((0, 0)), (155, 155, 155), tolerance=1)


def test_animated_gif_gives_its_first_frame(tmp_path):
    path = tmp_path / "anim.gif"
    first, second = Image.new("RGB", (16, 16), RED), Image.new("RGB", (16, 16), BLUE)
    first.save(path, save_all=True, append_images=[second], duration=100, loop=0)
    assert Image.open(path).n_frames == 2
    assert close(load_image(str(path), WHERE).getpixel((8, 8)), RED)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a size but holds no pixels: what a decompression bomb looks like."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("side", "policy", "words"),
    [
        (20_000, MediaPolicy(), ("too large", "Pillow", "MAX_IMAGE_PIXELS")),  # Pillow's error
        (10_000, MediaPolicy(image_max_pixels=10**9), ("too large", "Pillow")),  # its warning
        (
            8_000,
            MediaPolicy(),
            ("8000 x 8000", "64,000,000", "50,000,000", "data.max_image_pixels"),
        ),
    ],
)
def test_oversized_images_are_refused_before_decoding(tmp_path, side, policy, words):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_only(side, side))
    media_error(lambda: load_image(str(path), WHERE, policy), "bomb.png", *words)


def test_tiny_image_is_an_error(tmp_path):
    Image.new("RGB", (1, 1)).save(tmp_path / "pixel.png")
    media_error(lambda: load_image(str(tmp_path / "pixel.png"), WHERE), "pixel.png", "1 x 1", "2")


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_image_is_an_error(tmp_path, suffix):
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    path = tmp_path / f"cut{suffix}"
    Image.fromarray(noise).save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    media_error(lambda: load_image(str(path), WHERE), path.name, "truncated")


def test_bad_image_files(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    media_error(lambda: load_image(str(tmp_path / "empty.png"), WHERE), "empty.png", "0 bytes")
    soundfile.write(tmp_path / "speech.png", tone(0.1, 8000), 8000, format="WAV")
    media_error(
        lambda: load_image(str(tmp_path / "speech.png"), WHERE),
        "speech.png",
        "is not an image",
        "WAV audio",
        ".png",
    )
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    media_error(
        lambda: load_image(str(tmp_path / "broken.png"), WHERE),
        "broken.png",
        "looks like a PNG image",
        "cannot be opened",
    )
    (tmp_path / "page.jpg").write_text("<!DOCTYPE html><html><body>Sign in</body></html>")
    media_error(lambda: load_image(str(tmp_path / "page.jpg"), WHERE), "page.jpg", "HTML")
    media_error(lambda: load_image(str(tmp_path / "gone.png"), WHERE), "gone.png", "not exist")


# --- audio --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("suffix", "subtype", "rate", "channels"),
    [
        (".wav", "PCM_16", 8000, 1),
        (".wav", "FLOAT", 44100, 2),
        (".flac", "PCM_24", 44100, 2),
        (".ogg", "VORBIS", 48000, 2),
        (".wav", "PCM_16", 16000, 1),
    ],
)
def test_soundfile_formats_become_16k_mono(tmp_path, suffix, subtype, rate, channels):
    path = tmp_path / f"clip{suffix}"
    samples = np.stack([tone(1.0, rate)] * channels, axis=1)
    soundfile.write(path, samples, rate, subtype=subtype)
    clip = load_audio(str(path), WHERE)
    assert clip.sample_rate == SAMPLE_RATE and clip.samples.dtype == np.float32
    assert clip.samples.shape == (SAMPLE_RATE,)
    assert clip.original_seconds == pytest.approx(1.0) and not clip.truncated
    assert peak_hz(clip) == pytest.approx(440, abs=2)
    assert np.abs(clip.samples).max() == pytest.approx(0.5, abs=0.05)


def write_with_pyav(path: Path, codec: str, rate: int, samples: np.ndarray) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples[None, :], format="fltp", layout="mono")
        frame.sample_rate = rate
        # PyAV converts to the encoder's sample format and frame size itself.
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)


@pytest.mark.parametrize(
    ("suffix", "codec", "rate"),
    [(".mp3", "libmp3lame", 44100), (".m4a", "aac", 44100), (".opus", "libopus", 48000)],
)
def test_compressed_formats_load(tmp_path, suffix, codec, rate):
    path = tmp_path / f"voice{suffix}"
    try:
        write_with_pyav(path, codec, rate, tone(1.0, rate))
    except (av.FFmpegError, ValueError) as err:
        pytest.skip(f"this PyAV wheel cannot encode {codec}: {err}")
    clip = load_audio(str(path), WHERE)
    # Encoders add a few ms of priming and padding.
    assert clip.original_seconds == pytest.approx(1.0, abs=0.1)
    assert len(clip.samples) == pytest.approx(SAMPLE_RATE, abs=0.1 * SAMPLE_RATE)
    assert peak_hz(clip) == pytest.approx(440, abs=2)


def test_channels_are_averaged_and_silence_is_fine(tmp_path):
    stereo = np.stack([tone(0.5, 16000, amplitude=0.8), np.zeros(8000, np.float32)], axis=1)
    soundfile.write(tmp_path / "stereo.wav", stereo, 16000)
    assert np.abs(load_audio(str(tmp_path / "stereo.wav"), WHERE).samples).max() == (
        pytest.approx(0.4, abs=0.01)
    )
    soundfile.write(tmp_path / "quiet.wav", np.zeros(16000, np.float32), 16000)
    assert not load_audio(str(tmp_path / "quiet.wav"), WHERE).samples.any()


def test_overlong_audio_follows_the_policy(tmp_path):
    path = str(tmp_path / "long.wav")
    soundfile.write(path, tone(3.0, 44100), 44100)
    cut = load_audio(path, WHERE, MediaPolicy(audio_max_seconds=1.0))
    assert cut.truncated and cut.original_seconds == pytest.approx(3.0)
    assert len(cut.samples) == SAMPLE_RATE and peak_hz(cut) == pytest.approx(440, abs=2)
    assert not load_audio(path, WHERE, MediaPolicy(audio_max_seconds=5)).truncated
    drop = MediaPolicy(audio_max_seconds=1, audio_overlong="drop")
    media_error(lambda: load_audio(path, WHERE, drop), "long.wav", "3.0 s", error=MediaDropped)
    fail = MediaPolicy(audio_max_seconds=1, audio_overlong="fail")
    error = media_error(
        lambda: load_audio(path, WHERE, fail), "long.wav", "3.0 s", "1 s limit", "audio_overlong"
    )
    assert not isinstance(error, MediaDropped)


def wav_bytes(samples: np.ndarray, subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, 16000, format="WAV", subtype=subtype)
    return buffer.getvalue()


def test_bad_audio_files(tmp_path):
    def check(name: str, data: bytes, *words: str) -> None:
        (tmp_path / name).write_bytes(data)
        media_error(lambda: load_audio(str(tmp_path / name), WHERE), name, *words)

    wav = wav_bytes(tone(1.0, 16000))
    check("cut.wav", wav[: len(wav) // 2], "truncated", "32,000", "15,978")
    check("header.wav", wav[:30], "looks like WAV audio", "cannot be decoded")
    check("silent.wav", wav_bytes(np.zeros(0, np.float32)), "no audio samples")
    check("empty.wav", b"", "0 bytes")
    odd_codec = bytearray(wav)
    odd_codec[20:22] = (0x1234).to_bytes(2, "little")  # the WAV format tag
    check("odd.wav", bytes(odd_codec), "codec")
    broken = tone(1.0, 16000)
    broken[8000] = np.nan
    check("nan.wav", wav_bytes(broken, "FLOAT"), "NaN", "0.50 s")
    picture = io.BytesIO()
    halves().save(picture, format="PNG")
    check("photo.wav", picture.getvalue(), "is not audio", "PNG image", ".wav")
    media_error(lambda: load_audio(str(tmp_path / "gone.wav"), WHERE), "gone.wav", "not exist")


# --- paths, URLs, errors ------------------------------------------------------------------


def test_resolve_media_path(tmp_path):
    assert resolve_media_path("img/a.png", tmp_path) == str(tmp_path / "img" / "a.png")
    assert resolve_media_path("/data/a.png", tmp_path) == "/data/a.png"
    assert resolve_media_path("https://x.org/a.png", tmp_path) == "https://x.org/a.png"
    assert resolve_media_path("a.png", "s3://bucket/set/") == "s3://bucket/set/a.png"


def test_file_url(tmp_path):
    halves().save(tmp_path / "a.png")
    assert load_image((tmp_path / "a.png").as_uri(), WHERE).size == (64, 48)
    missing = (tmp_path / "b.png").as_uri()
    media_error(lambda: open_media_bytes(missing, WHERE), "b.png", "not found")


@pytest.fixture
def http_root(tmp_path):
    """A folder served at http://127.0.0.1:PORT/ for the duration of one test."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_url(http_root):
    folder, url = http_root
    halves().save(folder / "a.png")
    soundfile.write(folder / "a.flac", tone(1.0, 22050), 22050)
    assert load_image(f"{url}/a.png", WHERE).size == (64, 48)
    assert peak_hz(load_audio(f"{url}/a.flac", WHERE)) == pytest.approx(440, abs=2)
    media_error(lambda: load_image(f"{url}/nope.png", WHERE), "nope.png", "not found")


def test_errors_survive_pickling_and_say_what_content_is():
    error = MediaDropped(WHERE, "a.wav", "is too long", "cut it")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is MediaDropped and str(copy) == str(error) and copy.ref == "a.wav"
    assert describe_content(b"version https://git-lfs.github.com/spec/v1\n")[1].startswith(
        "a Git LFS pointer"
    )
    assert describe_content(bytes(range(8)))[1].endswith("00 01 02 03 04 05 06 07)")
