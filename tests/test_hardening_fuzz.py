"""A bounded fuzz run of `serve` over the OpenAI chat request (hypothesis, loopback, a tiny
model): no 500, every request answered within a bound, and a good request answered after
(issue 12). Slow: ~100 requests to a real model."""

from __future__ import annotations

import base64
import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gemmaforge.infer.serve import create_app
from gemmaforge.infer.session import open_session
from loopback import Server, call

pytestmark = pytest.mark.slow
CASES = 100
ANSWER_WITHIN = 60.0
"""Seconds any one request may take (a 16-token reply on the tiny model takes well under 1)."""

texts = st.text(max_size=40) | st.sampled_from(
    ["<start_of_turn>", "<bos>", "<unused0>", "x" * 2000]
)
numbers = (
    st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([0, 1, 2, 16, 2**63, 2**64, -1])
)
anything = st.none() | st.booleans() | numbers | texts
data_urls = (
    st.builds(
        lambda kind, payload: f"data:{kind};base64,{base64.b64encode(payload).decode()}",
        st.sampled_from(["image/png", "image/jpeg", "text/plain"]),
        st.binary(max_size=64),
    )
    | texts
)
parts = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": texts}),
    st.fixed_dictionaries(
        {"type": st.just("image_url"), "image_url": st.fixed_dictionaries({"url": data_urls})}
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("input_audio"),
            "input_audio": st.fixed_dictionaries(
                {"data": st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode())}
            ),
        }
    ),
    st.dictionaries(st.sampled_from(["type", "text", "image_url"]), anything, max_size=3),
)
messages = st.lists(
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["system", "developer", "user", "assistant", "tool", ""]),
            "content": texts | st.lists(parts, max_size=3) | anything,
        }
    ),
    max_size=4,
)
requests = st.fixed_dictionaries(
    {"model": st.sampled_from(["base", "nope", ""]) | anything, "messages": messages},
    optional={
        "max_tokens": st.integers(-2, 16) | st.sampled_from([10**6, 2**64]) | anything,
        "temperature": numbers | anything,
        "top_p": numbers,
        "seed": numbers,
        "stop": texts | st.lists(texts, max_size=6) | anything,
        "stream": st.booleans() | anything,
        "n": numbers,
        "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}) | anything,
        "response_format": st.fixed_dictionaries({"type": st.sampled_from(["text", "json"])}),
        "tools": st.lists(anything, max_size=2),
    },
)
bodies = requests.map(lambda r: json.dumps(r, allow_nan=True).encode()) | st.binary(max_size=200)


@pytest.fixture(scope="module")
def server(tiny_dir):
    session = open_session(str(tiny_dir("gemma3")), [], base_name="base", device="cpu")
    running = Server(create_app(session))
    yield running
    running.stop()


def test_fuzzed_requests_get_answers_not_500s(server):
    url = server.url + "/chat/completions"
    seen: list[int] = []

    @settings(
        max_examples=CASES,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(bodies)
    def one(body: bytes) -> None:
        started = time.monotonic()
        status, answer = _post(url, body)
        assert time.monotonic() - started < ANSWER_WITHIN, body[:300]
        assert status < 500, (status, answer, body[:300])
        seen.append(status)

    one()
    assert len(seen) >= CASES
    good = {"model": "base", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    status, answer = call(url, json.dumps(good).encode(), timeout=ANSWER_WITHIN)
    assert status == 200 and answer["choices"][0]["finish_reason"] in ("stop", "length")


def _post(url: str, body: bytes) -> tuple[int, object]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=ANSWER_WITHIN) as response:
            raw = response.read()  # a stream is read to its end
            return response.status, raw[:200]
    except urllib.error.HTTPError as err:
        return err.code, err.read()[:300]
