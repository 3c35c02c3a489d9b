"""`gemmaforge serve` through the real `openai` client: uvicorn on a free loopback port, a
tiny base model and two adapters trained to answer differently."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from io import BytesIO
from pathlib import Path

import openai
import pytest

import loopback
from gemmaforge.infer.serve import create_app
from gemmaforge.infer.session import open_session
from gemmaforge.runs import open_run
from tiny_runs import ANSWERS, QUESTIONS

SKY = QUESTIONS[0]
KEY = "sk-test-key"


class Server(loopback.Server):
    """The loopback server, with an `openai` client for it."""

    def client(self, key: str = "unused") -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url, api_key=key, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def session(tiny_run):
    adapters = [("plain", tiny_run("plain")), ("other", tiny_run("other"))]
    return open_session(None, adapters, base_name="tiny-base")


@pytest.fixture(scope="module")
def server(session):
    running = Server(create_app(session, max_request_bytes=64 * 1024))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def locked_server(session):
    running = Server(create_app(session, api_key=KEY))
    yield running
    running.stop()


def ask(client, model: str, question: str = SKY, **options):
    options = {"temperature": 0, "max_tokens": 20, **options}
    messages = [{"role": "user", "content": question}]
    return client.chat.completions.create(model=model, messages=messages, **options)


def post(server: Server, body: bytes, path: str = "/chat/completions") -> tuple[int, dict]:
    request = urllib.request.Request(
        server.url + path, data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_lists_the_base_and_every_adapter(server):
    client = server.client()
    assert [m.id for m in client.models.list()] == ["tiny-base", "plain", "other"]
    assert client.models.retrieve("other").owned_by == "gemmaforge"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("missing")


def test_completion_per_adapter(server):
    client = server.client()
    plain = ask(client, "plain")
    assert plain.choices[0].message.content == ANSWERS["plain"][0]
    assert plain.choices[0].finish_reason == "stop"
    assert plain.model == "plain" and plain.object == "chat.completion"
    usage = plain.usage
    assert usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert ask(client, "other").choices[0].message.content == ANSWERS["other"][0]
    base = ask(client, "tiny-base").choices[0].message.content
    assert base not in (ANSWERS["plain"][0], ANSWERS["other"][0])
    # Switching back and forth gives each model's own answer again.
    assert ask(client, "plain").choices[0].message.content == ANSWERS["plain"][0]
    assert ask(client, "tiny-base").choices[0].message.content == base


def test_streaming_matches_the_whole_reply(server):
    client = server.client()
    for model in ("other", "tiny-base"):
        whole = ask(client, model)
        chunks = list(ask(client, model, stream=True, stream_options={"include_usage": True}))
        assert chunks[0].choices[0].delta.role == "assistant"
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == whole.choices[0].message.content
        finish = [c.choices[0].finish_reason for c in chunks if c.choices]
        assert finish[-1] == whole.choices[0].finish_reason and not any(finish[:-1])
        assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
        assert len({c.id for c in chunks}) == 1


def test_max_tokens_and_stop(server):
    client = server.client()
    short = ask(client, "plain", max_tokens=2)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 2
    cut = ask(client, "plain", stop=["blue"])
    assert cut.choices[0].message.content == "The sky is "
    assert cut.choices[0].finish_reason == "stop"
    streamed = ask(client, "plain", stop="blue", stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == "The sky is "


def test_system_prompt_and_multi_turn(server):
    reply = server.client().chat.completions.create(
        model="plain",
        messages=[
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": QUESTIONS[1]},
            {"role": "assistant", "content": ANSWERS["plain"][1]},
            {"role": "user", "content": [{"type": "text", "text": QUESTIONS[2]}]},
        ],
        temperature=0,
        max_tokens=20,
    )
    assert reply.choices[0].message.content == ANSWERS["plain"][2]


def test_api_key(locked_server):
    with pytest.raises(openai.AuthenticationError) as err:
        ask(locked_server.client("wrong"), "plain")
    assert err.value.status_code == 401 and err.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        locked_server.client("wrong").models.list()
    assert ask(locked_server.client(KEY), "plain").choices[0].message.content == ANSWERS["plain"][0]
    health = urllib.request.urlopen(locked_server.url.removesuffix("/v1") + "/health", timeout=30)
    assert json.loads(health.read()) == {"status": "ok"}


def png_data_url() -> str:
    from PIL import Image

    buffer = BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def image_message(url: str) -> list[dict]:
    parts = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": url}},
    ]
    return [{"role": "user", "content": parts}]


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("data:image/png;base64,bm90IGFuIGltYWdl", "invalid_image"),  # "not an image"
        ("data:image/png;base64,%%%", "invalid_image"),
        ("/etc/hostname", "media_paths_disabled"),
        ("https://example.com/cat.png", "invalid_image_url"),
    ],
)
def test_images_are_refused_with_a_reason(server, url, code):
    with pytest.raises(openai.BadRequestError) as err:
        server.client().chat.completions.create(model="plain", messages=image_message(url))
    assert err.value.status_code == 400 and err.value.code == code


def test_a_text_only_base_refuses_images(server):
    with pytest.raises(openai.BadRequestError, match="no vision tower") as err:
        server.client().chat.completions.create(
            model="plain", messages=image_message(png_data_url())
        )
    assert err.value.status_code == 400


@pytest.fixture(scope="module")
def mm_server(tiny_dir):
    running = Server(create_app(open_session(str(tiny_dir("gemma4")), [], base_name="mm")))
    yield running
    running.stop()


def wav_base64() -> str:
    import numpy as np
    import soundfile

    buffer = BytesIO()
    wave = 0.5 * np.sin(2 * np.pi * 440 * np.arange(8000) / 16000)
    soundfile.write(buffer, wave.astype(np.float32), 16000, format="WAV")
    return base64.b64encode(buffer.getvalue()).decode()


def test_images_and_audio_on_a_multimodal_base(mm_server):
    client = mm_server.client()
    audio = {"type": "input_audio", "input_audio": {"data": wav_base64(), "format": "wav"}}
    messages = image_message(png_data_url())
    messages[0]["content"].append(audio)
    reply = client.chat.completions.create(model="mm", messages=messages, max_tokens=6)
    assert reply.choices[0].message.content is not None
    # The prompt counts the image's and the clip's soft tokens.
    text_only = ask(client, "mm", "What is this?", max_tokens=6)
    assert reply.usage.prompt_tokens > text_only.usage.prompt_tokens + 20

    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="mm", messages=image_message("data:image/png;base64,bm90IGFuIGltYWdl")
        )
    assert err.value.code == "invalid_image"
    broken_audio = {"type": "input_audio", "input_audio": {"data": "bm90IGF1ZGlv", "format": "wav"}}
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model="mm", messages=[{"role": "user", "content": [broken_audio]}]
        )
    again = client.chat.completions.create(model="mm", messages=messages, max_tokens=6)
    assert again.usage.prompt_tokens == reply.usage.prompt_tokens


def test_bad_requests_get_json_errors_and_the_server_goes_on(server):
    client = server.client()
    with pytest.raises(openai.NotFoundError) as err:
        ask(client, "nope")
    assert err.value.code == "model_not_found" and "tiny-base, plain, other" in err.value.message

    two_users = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    with pytest.raises(openai.BadRequestError, match="second user turn in a row"):
        client.chat.completions.create(model="plain", messages=two_users)
    with pytest.raises(openai.BadRequestError, match="n must be 1"):
        ask(client, "plain", n=2)
    # Gemma 3 has no tool tokens: tools are refused by name, not ignored.
    with pytest.raises(openai.BadRequestError, match="gemma3 has no tool-calling tokens"):
        ask(client, "plain", tools=[{"type": "function", "function": {"name": "f"}}])
    with pytest.raises(openai.BadRequestError, match="only tool_choice auto"):
        ask(client, "plain", tool_choice="required")
    with pytest.raises(openai.BadRequestError, match="context of 4096 tokens"):
        ask(client, "plain", max_tokens=10**6)

    status, body = post(server, b'{"model": "plain", "messages": [')
    assert status == 400 and "not valid JSON" in body["error"]["message"]
    status, body = post(server, b'{"model": "plain", "messages": []}')
    assert status == 400 and body["error"]["param"] == "messages"
    status, body = post(server, json.dumps({"model": "plain", "messages": "hi"}).encode())
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    huge = json.dumps({"model": "plain", "messages": [{"role": "user", "content": "x" * 70_000}]})
    status, body = post(server, huge.encode())
    assert status == 413 and body["error"]["code"] == "request_too_large"
    status, body = post(server, b"{}", path="/nowhere")
    assert status == 404 and "error" in body

    assert ask(client, "plain").choices[0].message.content == ANSWERS["plain"][0]


def test_a_client_that_leaves_mid_stream_frees_the_model(server):
    body = json.dumps(
        {
            "model": "tiny-base",
            "messages": [{"role": "user", "content": SKY}],
            "max_tokens": 200,
            "stream": True,
        }
    )
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    connection.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 200
    assert response.readline().startswith(b"data: ")
    connection.close()
    # The next request gets the model (the abandoned stream let go of its lock).
    assert ask(server.client(), "plain").choices[0].message.content == ANSWERS["plain"][0]


def test_serve_verb(tiny_run):
    """The CLI starts a server that answers; a run folder implies the base model."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "gemmaforge", "serve", "--port", str(port)]
    command += ["--adapter", f"plain={tiny_run('plain')}"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=60
        )
        deadline = time.monotonic() + 120
        while True:
            try:
                models = [m.id for m in client.models.list()]
                break
            except openai.APIConnectionError:
                assert proc.poll() is None, proc.communicate()[1]
                assert time.monotonic() < deadline, "serve did not start"
                time.sleep(0.5)
        base = Path(open_run(tiny_run("plain")).base_model).name
        assert models == [base, "plain"]
        assert ask(client, "plain").choices[0].message.content == ANSWERS["plain"][0]
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_plain_completions_whole_and_streamed(server, session):
    """/v1/completions continues a raw prompt: given the chat prompt as text, it gives the
    chat endpoint's reply; streamed chunks add up to the whole."""
    client = server.client()
    tokenizer = session.loaded.tokenizer
    ids = session.prompt([{"role": "user", "content": SKY}]).ids
    text = tokenizer.decode(ids[1:] if ids[0] == tokenizer.bos_token_id else ids)
    whole = client.completions.create(model="plain", prompt=text, max_tokens=20, temperature=0)
    assert whole.object == "text_completion" and whole.id.startswith("cmpl-")
    assert (
        whole.choices[0].text
        == ANSWERS["plain"][0]
        == ask(client, "plain").choices[0].message.content
    )
    assert whole.choices[0].finish_reason == "stop"
    assert whole.usage.prompt_tokens == len(ids)
    chunks = list(
        client.completions.create(
            model="plain", prompt=text, max_tokens=20, temperature=0, stream=True
        )
    )
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    assert chunks[-1].choices[0].finish_reason == "stop"
    # The defaults are the API's: 16 tokens at most.
    short = client.completions.create(
        model="tiny-base", prompt="The", seed=1, extra_body={"top_k": 1}
    )
    assert short.usage.completion_tokens <= 16
    status, body = post(server, b'{"model": "plain"}', "/completions")
    assert status == 400 and "prompt" in body["error"]["message"]
