"""Data sources: every kind of file and folder, local and remote (a real HTTP server and a
real S3 API on loopback), retries, storage errors, the media cache, and bounded memory."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import importlib.util
import io
import json
import os
import subprocess
import sys
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile
from PIL import Image

from gemmaforge.config import DataConfig
from gemmaforge.config_load import load_config
from gemmaforge.data.examples.dataset import read_rows
from gemmaforge.data.examples.formats import to_conversation
from gemmaforge.data.examples.media import load_audio, load_image
from gemmaforge.data.examples.skiplog import SkipLog
from gemmaforge.data.read import media_cache, remote
from gemmaforge.data.read.records import BadRow, raise_if_problems
from gemmaforge.data.read.sources import (
    configure_storage,
    iter_source_records,
    open_sources,
    resolve_sources,
)
from gemmaforge.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def fast_retries():
    """Short backoff for the tests; the run's settings are restored afterwards."""
    saved = dict(remote._settings), dict(media_cache._settings)
    remote.configure(backoff_s=0.01)
    yield
    remote._settings.update(saved[0])
    media_cache._settings.update(saved[1])


def read(spec, storage_options=None):
    """(per-source reports, rows) as training reads them in memory; problems raised at once."""
    files, problems = [], []
    cfg = DataConfig(train=spec, storage_options=storage_options or {})
    records = read_rows(open_sources(cfg).train, cfg, files, problems, SkipLog())
    raise_if_problems(problems)
    return files, records


def rows(spec, storage_options=None):
    items = list(iter_source_records(spec, storage_options))
    assert not [i for i in items if isinstance(i, BadRow)]
    return [i.row for i in items]


def png(color=(255, 0, 0), size=(8, 6)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def wav(seconds=0.1) -> bytes:
    buffer = io.BytesIO()
    t = np.arange(int(16000 * seconds)) / 16000
    soundfile.write(buffer, 0.5 * np.sin(2 * np.pi * 440 * t), 16000, format="WAV")
    return buffer.getvalue()


# --- local files ---------------------------------------------------------------------------


def test_single_files_of_every_type(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "j1"}\n{"text": "j2"}\n')
    (tmp_path / "b.csv").write_text("text\nc1\n")
    (tmp_path / "c.tsv").write_text("text\tn\nt1\t1\n")
    pq.write_table(pa.table({"text": ["p1", "p2", "p3"]}), tmp_path / "d.parquet")
    assert rows(str(tmp_path / "a.jsonl")) == [{"text": "j1"}, {"text": "j2"}]
    assert rows(str(tmp_path / "b.csv")) == [{"text": "c1"}]
    assert rows(str(tmp_path / "c.tsv")) == [{"text": "t1", "n": "1"}]
    items = list(iter_source_records(str(tmp_path / "d.parquet")))
    assert [(i.row["text"], i.line) for i in items] == [("p1", 1), ("p2", 2), ("p3", 3)]

    sources = resolve_sources(str(tmp_path / "d.parquet"))
    assert [(s.kind, s.size) for s in sources] == [
        ("parquet", (tmp_path / "d.parquet").stat().st_size)
    ]
    expected = hashlib.sha256((tmp_path / "d.parquet").read_bytes()).hexdigest()
    assert sources[0].fingerprint == f"sha256:{expected}"


def test_folder_glob_and_list_are_sorted(tmp_path):
    for name in ("b.jsonl", "a.jsonl", "c.csv"):
        text = "text\nfrom c\n" if name.endswith("csv") else f'{{"text": "from {name[0]}"}}\n'
        (tmp_path / name).write_text(text)
    (tmp_path / "notes.txt").write_text("ignored")
    assert [s.kind for s in resolve_sources(str(tmp_path))] == ["jsonl", "jsonl", "csv"]
    assert rows(str(tmp_path)) == [{"text": "from a"}, {"text": "from b"}, {"text": "from c"}]
    assert rows(f"{tmp_path}/*.jsonl") == [{"text": "from a"}, {"text": "from b"}]
    assert rows([str(tmp_path / "c.csv"), str(tmp_path / "a.jsonl")]) == [
        {"text": "from c"},
        {"text": "from a"},
    ]
    files, _ = read(f"{tmp_path}/*.jsonl")
    assert [Path(f.path).name for f in files] == ["a.jsonl", "b.jsonl"]
    # Hashed while the rows are read: the same value as hashing the file on its own.
    assert files[0].fingerprint == resolve_sources(str(tmp_path / "a.jsonl"))[0].fingerprint
    assert files[0].fingerprint.startswith("sha256:")


def test_problems_are_raised_at_once(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\nnot json\n')
    (tmp_path / "x.xlsx").write_text("")
    with pytest.raises(UserError) as err:
        resolve_sources(
            [str(tmp_path / "missing.jsonl"), str(tmp_path / "x.xlsx"), f"{tmp_path}/*.nope"]
        )
    assert [p.split(": ", 1)[1][:12] for p in err.value.problems] == [
        "not found. F",
        "unsupported ",
        "matches no f",
    ]
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(UserError) as err:
        read([str(tmp_path / "bad.jsonl"), str(tmp_path / "empty.jsonl")])
    assert "bad.jsonl:2: not valid JSON" in err.value.problems[0]
    assert err.value.problems[1].endswith(
        "empty.jsonl: the source has no rows. Fix: add at least one example"
    )


@pytest.mark.skipif(importlib.util.find_spec("gcsfs") is not None, reason="gcsfs is installed")
def test_missing_backend_names_the_package():
    with pytest.raises(
        UserError, match=r"gs://b/x.jsonl: cannot be opened .* Fix: pip install gcsfs"
    ):
        resolve_sources("gs://b/x.jsonl")


def test_datasets_on_disk_with_embedded_images(tmp_path):
    from datasets import Dataset, DatasetDict
    from datasets import Image as ImageFeature

    data = {"image": [{"bytes": png(), "path": "red.png"}], "caption": ["red"]}
    train = Dataset.from_dict(data).cast_column("image", ImageFeature())
    validation = Dataset.from_dict({"text": ["v1", "v2"]})
    train.save_to_disk(tmp_path / "plain")
    DatasetDict({"train": train, "validation": validation}).save_to_disk(tmp_path / "dict")

    for spec in (tmp_path / "plain", tmp_path / "dict"):
        (source,) = resolve_sources(str(spec))
        assert source.kind == "hf_disk"
        (record,) = list(iter_source_records(str(spec)))
        assert record.row["image"].endswith(".png") and record.row["caption"] == "red"
        conversation = to_conversation(record, "caption", DataConfig())
        ref = conversation.messages[0]["content"][0]["ref"]
        assert load_image(ref, record.where).getpixel((0, 0)) == (255, 0, 0)

    assert rows(f"{tmp_path / 'dict'}#validation") == [{"text": "v1"}, {"text": "v2"}]
    assert read(f"{tmp_path / 'dict'}#validation")[0][0].path.endswith("dict#validation")
    with pytest.raises(UserError, match=r"without a 'test' split .*splits: train, validation"):
        resolve_sources(f"{tmp_path / 'dict'}#test")
    with pytest.raises(UserError, match="only read from a 🤗 DatasetDict"):
        resolve_sources(f"{tmp_path / 'plain'}#train")


def test_parquet_with_embedded_audio(tmp_path):
    clip = wav()
    audio = pa.array(
        [{"bytes": clip, "path": None}], pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    )
    pq.write_table(pa.table({"audio": audio, "text": ["hello"]}), tmp_path / "a.parquet")
    (record,) = list(iter_source_records(str(tmp_path / "a.parquet")))
    assert Path(record.row["audio"]).read_bytes() == clip
    assert load_audio(record.row["audio"]).samples.size == 1600


def test_imagefolder_and_audiofolder_with_metadata(tmp_path):
    images, clips = tmp_path / "images", tmp_path / "clips"
    (images / "sub").mkdir(parents=True)
    (images / "sub" / "a.png").write_bytes(png())
    (images / "metadata.csv").write_text("file_name,caption\nsub/a.png,a red square\nnote.txt,x\n")
    clips.mkdir()
    (clips / "c.wav").write_bytes(wav())
    (clips / "metadata.jsonl").write_text('{"file_name": "c.wav", "text": "a tone"}\n')

    (source,) = resolve_sources(str(images))
    assert source.kind == "mediafolder" and source.metadata.endswith("metadata.csv")
    good, bad = list(iter_source_records(str(images)))
    assert good.row == {"image": str(images / "sub" / "a.png"), "caption": "a red square"}
    assert isinstance(bad, BadRow) and "'note.txt' is not an image or audio file" in bad.problem
    assert bad.where == f"{images / 'metadata.csv'}:3"
    assert to_conversation(good, "caption", DataConfig()).messages[1]["content"] == "a red square"

    (record,) = list(iter_source_records(str(clips)))
    assert record.row == {"audio": str(clips / "c.wav"), "text": "a tone"}
    assert to_conversation(record, "transcription", DataConfig()).messages[1]["content"] == "a tone"


def test_class_subfolders(tmp_path):
    for label, names in {"cat": ["2.png", "1.png"], "dog": ["1.jpg"]}.items():
        (tmp_path / label).mkdir()
        for name in names:
            (tmp_path / label / name).write_bytes(png())
    (source,) = resolve_sources(str(tmp_path))
    assert source.kind == "classfolder"
    assert rows(str(tmp_path)) == [
        {"image": str(tmp_path / "cat" / "1.png"), "label": "cat"},
        {"image": str(tmp_path / "cat" / "2.png"), "label": "cat"},
        {"image": str(tmp_path / "dog" / "1.jpg"), "label": "dog"},
    ]


# --- HTTP ----------------------------------------------------------------------------------


class FlakyServer:
    """A static file server on loopback, with byte ranges as object stores have, that answers
    503 to the requests numbered in `fail` (1-based, HEAD and GET alike) and, with
    `fail_mid_file`, to the first read of a range that does not start at byte 0."""

    def __init__(self, files: dict[str, bytes], fail: set[int], fail_mid_file: bool = False):
        self.files, self.fail, self.requests = files, fail, []
        self.fail_mid_file = fail_mid_file
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self.answer(body=False)

            def do_GET(self):
                self.answer(body=True)

            def answer(self, body: bool):
                byte_range = self.headers.get("Range")
                outer.requests.append((self.command, byte_range))
                data = outer.files.get(self.path)
                mid_file = bool(byte_range) and not byte_range.startswith("bytes=0-")
                failed = len(outer.requests) in outer.fail or (mid_file and outer.fail_mid_file)
                if mid_file:
                    outer.fail_mid_file = False
                if failed or data is None:
                    self.send_response(503 if data is not None else 404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start, end, status = 0, len(data) - 1, 200
                if self.headers.get("Range"):
                    first, last = self.headers["Range"].removeprefix("bytes=").split("-")
                    start, end, status = int(first), min(int(last or end), end), 206
                self.send_response(status)
                self.send_header("Content-Length", str(end - start + 1))
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("ETag", '"v1"')
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
                self.end_headers()
                if body:
                    with contextlib.suppress(ConnectionError):  # the client read enough
                        self.wfile.write(data[start : end + 1])

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_https_source_retries_503_and_resumes_mid_file():
    lines = [json.dumps({"text": f"row {i:05d} " + "x" * 500}) for i in range(5000)]
    data = ("\n".join(lines) + "\n").encode()  # 2.5 MB: several 1 MB range reads
    # Requests 1-2 (HEAD, then GET, of the first attempt) fail, then a range read mid-file.
    server = FlakyServer({"/d.jsonl": data}, fail={1, 2}, fail_mid_file=True)
    try:
        so = {"block_size": 1024, "skip_instance_cache": True}
        (source,) = resolve_sources(f"{server.url}/d.jsonl", so)
        assert (source.kind, source.size, source.fingerprint) == ("jsonl", len(data), "etag:v1")
        got = rows(source.path, so)
        assert len(got) == 5000 and got[-1]["text"].startswith("row 04999")
        ranges = [r for method, r in server.requests if method == "GET" and r]
        assert server.requests[:3] == [("HEAD", None), ("GET", None), ("HEAD", None)]
        assert len(ranges) > len(set(ranges)), ranges  # the failed mid-file range, read again
        assert not server.fail_mid_file
    finally:
        server.close()


def test_retries_run_out_with_a_clear_error():
    server = FlakyServer({"/d.jsonl": b'{"a": 1}\n'}, fail=set(range(1, 100)))
    remote.configure(retries=2)
    try:
        with pytest.raises(UserError, match=r"d.jsonl: could not be reached after 3 attempts"):
            resolve_sources(f"{server.url}/d.jsonl", {"skip_instance_cache": True})
    finally:
        server.close()


# --- S3 ------------------------------------------------------------------------------------


def test_s3_thousands_of_rows_glob_and_parquet(s3):
    so = s3.storage_options
    for part in range(3):
        text = "".join(json.dumps({"text": f"p{part} r{i}"}) + "\n" for i in range(2000))
        s3.put(f"rows/data/part-{part}.jsonl", text)
    s3.put("rows/data/skip.txt", "not data")
    table = pa.table({"prompt": [f"q{i}" for i in range(3000)], "response": ["a"] * 3000})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=1000)
    s3.put("rows/table/t.parquet", buffer.getvalue())

    sources = resolve_sources("s3://rows/data/*.jsonl", so)
    assert s3.SECRET not in repr(sources) and sources[0].storage_options == so
    assert [s.path for s in sources] == [f"s3://rows/data/part-{i}.jsonl" for i in range(3)]
    assert all(s.fingerprint.startswith("etag:") and s.size for s in sources)
    got = rows("s3://rows/data/*.jsonl", so)
    assert len(got) == 6000 and got[0] == {"text": "p0 r0"} and got[-1] == {"text": "p2 r1999"}
    assert len(rows("s3://rows/data", so)) == 6000  # a prefix is a folder of files

    (file,), records = read("s3://rows/table/t.parquet", so)
    assert file.rows == 3000 and records[-1].line == 3000
    assert records[2999].row == {"prompt": "q2999", "response": "a"}


def noise_png(seed: int) -> tuple[bytes, tuple[int, int, int]]:
    """A 320 x 320 PNG of random pixels (~300 KB: PNG cannot shrink noise) and its first pixel."""
    pixels = np.random.default_rng(seed).integers(0, 256, (320, 320, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue(), tuple(int(v) for v in pixels[0, 0])


def test_s3_media_through_the_size_capped_cache(s3, tmp_path):
    images = [noise_png(i) for i in range(6)]
    for i, (data, _) in enumerate(images):
        s3.put(f"media/set/img/{i}.png", data)
    text = "".join(
        json.dumps({"image": f"img/{i}.png", "caption": str(i)}) + "\n" for i in range(6)
    )
    url = s3.put("media/set/data.jsonl", text)
    # The run's config is what reaches the cache and the storage: a 1 MiB cap holds 3 images.
    cfg = load_config(
        None,
        [f"data.storage_options.{k}={v}" for k, v in s3.storage_options.items()]
        + [f"data.media_cache_dir={tmp_path / 'cache'}", "data.media_cache_mb=1"],
    )
    configure_storage(cfg.data)
    cache = media_cache.current()
    assert cache.root == tmp_path / "cache" and cache.max_bytes == 2**20

    records = list(iter_source_records(url))
    convert = partial(to_conversation, fmt="caption", cfg=cfg.data)
    refs = [convert(r).messages[0]["content"][0]["ref"] for r in records]
    assert refs[2] == "s3://media/set/img/2.png"  # relative to the s3:// folder, not s3:/...
    sizes = []
    for i, ref in enumerate(refs):
        assert load_image(ref, records[i].where).getpixel((0, 0)) == images[i][1]
        sizes.append(cache.total_bytes())
    print("cache bytes after each image:", sizes, "cap:", cache.max_bytes)
    assert max(sizes) <= cache.max_bytes and sizes[3] < sizes[2] + len(images[3][0])
    assert not cache.path_for(refs[0]).exists()  # evicted, least recently used
    assert cache.path_for(refs[5]).read_bytes() == images[5][0]
    s3.fs().rm("media/set/img/5.png")  # a hit needs no network
    assert load_image(refs[5]).getpixel((0, 0)) == images[5][1]


def test_s3_missing_bucket_and_no_credentials(s3, monkeypatch):
    with pytest.raises(UserError) as err:
        resolve_sources("s3://no-such-bucket/x.jsonl", s3.storage_options)
    assert "names a bucket that does not exist" in str(err.value)
    assert f"endpoint: {s3.endpoint}" in str(err.value)

    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    so = {"endpoint_url": s3.endpoint, "skip_instance_cache": True}
    with pytest.raises(UserError) as err:
        resolve_sources("s3://media/x.jsonl", so)
    message = str(err.value)
    assert "access denied" in message and "credentials: none found" in message
    assert "AWS_PROFILE" in message and "Fix: use credentials" in message


def test_unreachable_endpoint():
    remote.configure(retries=1)
    so = {
        "endpoint_url": "http://127.0.0.1:9",  # the discard port: nothing listens on loopback
        "key": "k",
        "secret": "s",
        "config_kwargs": {"retries": {"max_attempts": 1}},
        "skip_instance_cache": True,
    }
    with pytest.raises(UserError) as err:
        resolve_sources("s3://b/x.jsonl", so)
    message = str(err.value)
    assert message.startswith("s3://b/x.jsonl: could not be reached after 2 attempts")
    assert (
        "http://127.0.0.1:9" in message and "the key and secret in data.storage_options" in message
    )


# VmHWM, not ru_maxrss: on Linux ru_maxrss survives exec, so a child started from this big
# test process would report the parent's peak.
MEASURE = """
import sys
from gemmaforge.data.read.sources import iter_source_records
count = sum(1 for _ in iter_source_records(sys.argv[1]))
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(count, int(status["VmHWM"].split()[0]) // 1024)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads Linux's VmHWM")
def test_memory_is_bounded_whatever_the_size(s3):
    """Peak RSS reading N rows from S3 vs 4N rows: streaming keeps them level."""
    row = json.dumps({"text": "y" * 1000}) + "\n"
    n = 15_000  # 15 MB vs 60 MB of JSONL
    s3.put("mem/small.jsonl", row * n)
    s3.put("mem/large.jsonl", row * (4 * n))
    env = {**os.environ, **s3.env(), "PYTHONPATH": str(ROOT / "src")}
    peaks = {}
    for name, count in (("small", n), ("large", 4 * n)):
        out = subprocess.run(
            [sys.executable, "-c", MEASURE, f"s3://mem/{name}.jsonl"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert int(out[0]) == count
        peaks[name] = int(out[1])
    print(f"peak RSS: {n} rows {peaks['small']} MB, {4 * n} rows {peaks['large']} MB")
    assert peaks["large"] - peaks["small"] < 30
