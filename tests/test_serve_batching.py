"""Continuous batching in `serve`: concurrent requests over the base and two adapters get
exactly the replies they get one at a time; a client that leaves mid-stream and a request
that fails do not change anyone else's reply. Real uvicorn servers on loopback, the tiny
Gemma 3 and two adapters trained to answer differently (tests/tiny_runs.py)."""

from __future__ import annotations

import http.client
import json
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import loopback
from gemmaforge.infer.serve import create_app
from gemmaforge.infer.session import open_session
from tiny_runs import ANSWERS, QUESTIONS

MODELS = ("tiny-base", "plain", "other")
LONG = "Tell me, in as many words as you like, " + "and then some more, " * 12
PROMPTS = (*QUESTIONS[:3], LONG + QUESTIONS[0], "Hi")
"""Prompts of quite different lengths (2 to ~90 tokens)."""


@pytest.fixture(scope="module")
def session(tiny_run):
    adapters = [("plain", tiny_run("plain")), ("other", tiny_run("other"))]
    return open_session(None, adapters, base_name="tiny-base", device="cpu")


@pytest.fixture(scope="module")
def servers(session):
    """One server decoding up to 16 requests together, one decoding them one at a time."""
    batched = loopback.Server(create_app(session, max_batch=16))
    single = loopback.Server(create_app(session, max_batch=1))
    yield batched, single
    batched.stop()
    single.stop()


def body(model: str, prompt: str, **options) -> bytes:
    messages = [{"role": "user", "content": prompt}]
    request = {"model": model, "messages": messages, "temperature": 0, "max_tokens": 24}
    return json.dumps({**request, **options}).encode()


def reply(server, model: str, prompt: str, **options) -> str:
    status, answer = loopback.call(
        server.url + "/chat/completions", body(model, prompt, **options), timeout=300
    )
    assert status == 200, answer
    return answer["choices"][0]["message"]["content"]


def streamed(server, model: str, prompt: str, **options) -> str:
    """The text of a streamed reply, put together from its chunks."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=300)
    connection.request(
        "POST",
        "/v1/chat/completions",
        body(model, prompt, stream=True, **options),
        {"Content-Type": "application/json"},
    )
    response = connection.getresponse()
    assert response.status == 200
    text = ""
    for line in response:
        line = line.strip()
        if not line.startswith(b"data: ") or line == b"data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        assert "error" not in chunk, chunk
        text += chunk["choices"][0]["delta"].get("content") or ""
    connection.close()
    return text


def engine(server):
    return server.server.config.app.state.live.engine


@pytest.fixture(scope="module")
def alone(servers):
    """Every (model, prompt) reply from the one-at-a-time server, asked in turn."""
    _, single = servers
    return {(m, p): reply(single, m, p) for m in MODELS for p in PROMPTS}


def test_batched_replies_equal_one_at_a_time_for_every_row_and_adapter(servers, alone):
    batched, single = servers
    assert engine(single).peak == 1
    # The trained adapters answer as trained, alone: the mix below is a real one.
    assert alone[("plain", QUESTIONS[0])] == ANSWERS["plain"][0]
    assert alone[("other", QUESTIONS[0])] == ANSWERS["other"][0]
    jobs = [(m, p, i % 2 == 0) for i, (m, p) in enumerate(alone)]
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = {
            (m, p): pool.submit(streamed if stream else reply, batched, m, p)
            for m, p, stream in jobs
        }
        got = {key: future.result() for key, future in futures.items()}
    assert got == alone
    assert engine(batched).peak >= 4, "the requests were never decoded together"


def test_a_client_leaving_mid_stream_leaves_the_others_unchanged(servers, alone):
    batched, _ = servers
    started, go = queue.Queue(), threading.Event()

    def leave() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", batched.port, timeout=300)
        connection.request(
            "POST",
            "/v1/chat/completions",
            body("tiny-base", LONG, stream=True, max_tokens=400),
            {"Content-Type": "application/json"},
        )
        response = connection.getresponse()
        response.readline()  # the role chunk
        response.readline()
        response.readline()  # a first content chunk: it is in the batch now
        started.put(True)
        go.wait(60)  # the others are in the batch now too: leave in the middle of theirs
        connection.sock.shutdown(2)
        connection.close()

    keys = [(m, p) for m in MODELS for p in PROMPTS[:3]]
    with ThreadPoolExecutor(len(keys) + 1) as pool:
        leaver = pool.submit(leave)
        started.get(timeout=300)
        futures = {key: pool.submit(reply, batched, *key) for key in keys}
        time.sleep(0.5)
        go.set()
        leaver.result()
        got = {key: future.result() for key, future in futures.items()}
    assert got == {key: alone[key] for key in keys}


def test_bad_requests_in_a_batch_fail_alone(servers, alone):
    batched, _ = servers
    url = batched.url + "/chat/completions"
    bad = {
        "unknown adapter": (body("nope", "Hi"), 404, "model_not_found"),
        "too long": (body("plain", "word " * 5000), 400, "context_length_exceeded"),
        "bad seed": (body("other", "Hi", temperature=0.7, seed=2**70), 400, None),
    }
    keys = [(m, p) for m in MODELS for p in PROMPTS[:3]]
    with ThreadPoolExecutor(len(keys) + len(bad)) as pool:
        good = {key: pool.submit(reply, batched, *key) for key in keys}
        failed = {
            name: pool.submit(loopback.call, url, data, timeout=300)
            for name, (data, _, _) in bad.items()
        }
        for name, (_, status, code) in bad.items():
            got_status, answer = failed[name].result()
            assert got_status == status, (name, answer)
            assert code is None or answer["error"]["code"] == code
        assert {key: future.result() for key, future in good.items()} == {
            key: alone[key] for key in keys
        }


def test_a_row_that_fails_inside_the_engine_fails_alone(session, alone):
    """A row whose generation cannot start (a seed torch refuses, which the API would have
    caught) ends with its error; rows decoded beside it are unchanged."""
    from gemmaforge.infer.engine import Engine
    from gemmaforge.infer.generate import stop_token_ids
    from gemmaforge.infer.stream import Sampling

    tokenizer = session.loaded.tokenizer
    stops = stop_token_ids(tokenizer, session.loaded.family)
    running = Engine(session, max_batch=8)

    def stream(model: str, prompt: str, sampling: Sampling):
        built = session.prompt([{"role": "user", "content": prompt}])
        return running.stream(model, tokenizer, built, stops, sampling)

    greedy = Sampling(max_new_tokens=24)
    streams = {key: stream(*key, greedy) for key in [(m, PROMPTS[1]) for m in MODELS]}
    broken = stream("plain", PROMPTS[0], Sampling(8, temperature=0.7, seed=2**70))
    outcome: dict = {}

    def read(key, s) -> None:
        try:
            with s:
                outcome[key] = "".join(s)
        except Exception as err:
            outcome[key] = err

    readers = [threading.Thread(target=read, args=item) for item in [*streams.items()]]
    readers.append(threading.Thread(target=read, args=("broken", broken)))
    try:
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join(300)
    finally:
        running.stop()
    assert isinstance(outcome["broken"], ValueError) and "Overflow" in str(outcome["broken"])
    assert {key: outcome[key] for key in streams} == {key: alone[key] for key in streams}


def test_a_multimodal_base_batches_text_and_image_rows_alike(tiny_dir):
    """Gemma 4 (KV shared across layers, sliding windows, modality type ids): text rows and
    an image row decoded together give the replies they get one at a time."""
    import base64
    from io import BytesIO

    from PIL import Image

    session = open_session(str(tiny_dir("gemma4")), [], base_name="mm", device="cpu")
    buffer = BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    image = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": url}},
    ]
    asks = [*PROMPTS, image]

    def answer(server, content) -> str:
        data = json.dumps(
            {
                "model": "mm",
                "messages": [{"role": "user", "content": content}],
                "temperature": 0,
                "max_tokens": 12,
            }
        ).encode()
        status, got = loopback.call(server.url + "/chat/completions", data, timeout=300)
        assert status == 200, got
        return got["choices"][0]["message"]["content"]

    batched = loopback.Server(create_app(session, max_batch=8))
    single = loopback.Server(create_app(session, max_batch=1))
    try:
        alone = [answer(single, content) for content in asks]
        with ThreadPoolExecutor(len(asks)) as pool:
            together = list(pool.map(lambda content: answer(batched, content), asks))
        assert engine(batched).peak >= 2
    finally:
        batched.stop()
        single.stop()
    assert together == alone


def test_bench_serve_runs_both_sides_on_a_tiny_model(tmp_path):
    """`gemmaforge bench serve` as a user runs it (CLI, JSON output), on the tiny model."""
    import json

    from typer.testing import CliRunner

    from gemmaforge.cli import app

    out = tmp_path / "serve.json"
    args = ["bench", "serve", "--model", "tiny", "--clients", "1", "--clients", "3"]
    args += ["--adapters", "2", "--requests", "1", "--max-tokens", "6", "--repeats", "1"]
    result = CliRunner().invoke(app, [*args, "--device", "cpu", "--output", str(out)])
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    assert [row["clients"] for row in figures["rows"]] == [1, 3]
    for row in figures["rows"]:
        batched, single = row["batched"], row["one-at-a-time"]
        assert single["peak_batch"] == 1 and 1 <= batched["peak_batch"] <= row["clients"]
        assert batched["tokens_per_second"] > 0 and single["tokens_per_second"] > 0
        assert row["ratio"] == batched["tokens_per_second"] / single["tokens_per_second"]
    assert "llama" in result.output
