"""`gemmaforge generate` and `gemmaforge chat` on a tiny trained run, driven through real pipes,
and the streaming engine under them."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from gemmaforge.infer.chat import chat_loop
from gemmaforge.infer.generate import generate, stop_token_ids
from gemmaforge.infer.session import open_session
from gemmaforge.infer.stream import ReplyStream, Sampling
from tiny_runs import ANSWERS, QUESTIONS

SKY, COWS, PRIME, UP = QUESTIONS
ANSWER = dict(zip(QUESTIONS, ANSWERS["plain"], strict=True))


def gemmaforge(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gemmaforge", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def session(tiny_run):
    return open_session(None, [("plain", tiny_run("plain"))])


def test_generate_reads_the_prompt_from_stdin(tiny_run):
    proc = gemmaforge("generate", "--adapter", str(tiny_run("plain")), stdin=f"{SKY}\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{ANSWER[SKY]}\n"


def test_generate_base_with_an_adapter_folder(tiny_run, tiny_dir):
    """A run's adapter/ folder works too, on an explicitly given base model."""
    adapter = tiny_run("plain") / "adapter"
    model = str(tiny_dir("gemma3"))
    proc = gemmaforge("generate", COWS, "--model", model, "--adapter", str(adapter))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{ANSWER[COWS]}\n"
    base = gemmaforge("generate", COWS, "--model", model, "--max-new-tokens", "8")
    assert base.returncode == 0, base.stderr
    assert base.stdout.strip() != ANSWER[COWS]


def test_chat_through_a_pipe(tiny_run):
    lines = [SKY, "/reset", "", PRIME, UP, "/nope", "/exit", COWS]
    proc = gemmaforge("chat", "--adapter", str(tiny_run("plain")), stdin="\n".join(lines) + "\n")
    assert proc.returncode == 0, proc.stderr
    # One reply per message; nothing after /exit; notices on stderr only.
    assert proc.stdout.splitlines() == [ANSWER[SKY], ANSWER[PRIME], ANSWER[UP]]
    assert "(history cleared)" in proc.stderr and "unknown command /nope" in proc.stderr


def test_chat_ends_at_end_of_input_and_keeps_the_history(session):
    out, err = io.StringIO(), io.StringIO()
    stdin = io.StringIO(f"{SKY}\n/reset\n{PRIME}\n{UP}\n")  # no /exit: EOF ends it
    history = chat_loop(session, "plain", "Be brief.", Sampling(max_new_tokens=20), stdin, out, err)
    assert out.getvalue().splitlines() == [ANSWER[SKY], ANSWER[PRIME], ANSWER[UP]]
    assert history == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": PRIME},
        {"role": "assistant", "content": ANSWER[PRIME]},
        {"role": "user", "content": UP},
        {"role": "assistant", "content": ANSWER[UP]},
    ]


def test_chat_reports_a_bad_message_and_goes_on(session):
    out, err = io.StringIO(), io.StringIO()
    stdin = io.StringIO(f"say <end_of_turn> now\n{SKY}\n")
    history = chat_loop(session, "plain", None, Sampling(max_new_tokens=20), stdin, out, err)
    assert "control token(s) <end_of_turn>" in err.getvalue()
    assert out.getvalue() == f"{ANSWER[SKY]}\n"
    assert len(history) == 2


def test_stream_matches_batched_generation(session):
    """Streaming deltas add up to what `generate` returns, with the same token counts."""
    messages = [{"role": "user", "content": SKY}]
    tokenizer, family = session.loaded.tokenizer, session.loaded.family
    prompt = session.prompt(messages).ids
    for name in ("plain", session.base_name):
        with session.use(name) as model:
            expected = generate(model, tokenizer, family, [messages], max_new_tokens=12)[0]
            stream = ReplyStream(
                model, tokenizer, prompt, stop_token_ids(tokenizer, family), Sampling(12)
            )
            with stream:
                deltas = list(stream)
        assert "".join(deltas) == stream.reply.text == expected.text
        assert stream.reply.completion_tokens == expected.num_tokens
        assert stream.reply.finish_reason == ("stop" if expected.stopped else "length")
        assert stream.reply.prompt_tokens == len(prompt)


def test_stop_strings_cut_the_reply(session):
    messages = [{"role": "user", "content": SKY}]
    tokenizer, family = session.loaded.tokenizer, session.loaded.family
    stops = stop_token_ids(tokenizer, family)
    sampling = Sampling(20, stop=("blue", "xyz"))
    with (
        session.use("plain") as model,
        ReplyStream(model, tokenizer, session.prompt(messages).ids, stops, sampling) as stream,
    ):
        deltas = list(stream)
    assert "".join(deltas) == stream.reply.text == "The sky is "
    assert stream.reply.finish_reason == "stop"


def test_sampling_is_repeatable_with_a_seed(session):
    messages = [{"role": "user", "content": SKY}]
    tokenizer, family = session.loaded.tokenizer, session.loaded.family
    stops = stop_token_ids(tokenizer, family)
    texts = []
    for seed in (1, 1, 2):
        sampling = Sampling(16, temperature=1.5, seed=seed)
        with (
            session.use(session.base_name) as model,
            ReplyStream(model, tokenizer, session.prompt(messages).ids, stops, sampling) as stream,
        ):
            texts.append("".join(stream))
    assert texts[0] == texts[1] != texts[2]


def test_user_errors_exit_2_before_loading_anything():
    proc = gemmaforge("generate", "hi")
    assert proc.returncode == 2
    assert "no model given" in proc.stderr
    proc = gemmaforge("generate", "hi", "--model", "m", "--image", "cat.png")
    assert proc.returncode == 2
    assert "cat.png" in proc.stderr and "does not exist" in proc.stderr
    proc = gemmaforge("chat", "--adapter", "/nonexistent/run")
    assert proc.returncode == 2
    assert "is neither a run folder nor a PEFT adapter folder" in proc.stderr


@pytest.mark.parametrize("family", ["gemma3n", "gemma4"])
def test_streaming_works_on_the_multimodal_families(family, tiny_dir):
    """Stop tokens come from the family table: streaming matches batched generation."""
    session = open_session(str(tiny_dir(family)), [])
    tokenizer, table = session.loaded.tokenizer, session.loaded.family
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": SKY}]
    stops = stop_token_ids(tokenizer, table)
    with session.use(session.base_name) as model:
        expected = generate(model, tokenizer, table, [messages], max_new_tokens=10)[0]
        with ReplyStream(model, tokenizer, session.prompt(messages).ids, stops, Sampling(10)) as s:
            assert "".join(s) == expected.text


def test_top_k_1_samples_the_greedy_reply(session):
    """top_k reaches the sampler: with k=1 a hot sample of the random base is its greedy
    reply, whatever the seed (without it, the same seeds give other replies)."""
    messages = [{"role": "user", "content": SKY}]
    tokenizer, family = session.loaded.tokenizer, session.loaded.family
    stops = stop_token_ids(tokenizer, family)
    prompt = session.prompt(messages).ids

    def reply(sampling: Sampling) -> str:
        with (
            session.use(session.base_name) as model,
            ReplyStream(model, tokenizer, prompt, stops, sampling) as stream,
        ):
            return "".join(stream)

    greedy = reply(Sampling(16))
    assert {reply(Sampling(16, temperature=1.5, top_k=1, seed=s)) for s in (1, 2)} == {greedy}
    assert reply(Sampling(16, temperature=1.5, seed=1)) != greedy


def test_generate_takes_top_p_and_top_k(tiny_run):
    result = gemmaforge(
        "generate",
        "--adapter",
        str(tiny_run("plain")),
        "--temperature",
        "1.5",
        "--top-k",
        "1",
        "--top-p",
        "0.9",
        "--seed",
        "3",
        "--max-new-tokens",
        "12",
        SKY,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ANSWER[SKY]


def test_chat_attaches_images_to_the_next_message(session, tmp_path):
    """/image PATH goes with the next message only; a missing file attaches nothing; on this
    text-only model the attachment is refused as such, and the chat goes on."""
    image = tmp_path / "cat.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n")
    stdin = io.StringIO(f"/image {tmp_path / 'gone.png'}\n/image {image}\n{SKY}\n{SKY}\n")
    out, err = io.StringIO(), io.StringIO()
    history = chat_loop(session, "plain", None, Sampling(max_new_tokens=20), stdin, out, err)
    notes = err.getvalue()
    assert "no such file" in notes and f"image {image} attached" in notes
    assert "no vision tower" in notes  # the first message carried the image
    assert history == [
        {"role": "user", "content": SKY},
        {"role": "assistant", "content": ANSWER[SKY]},
    ]
