"""Tool calling and reasoning at inference on Gemma 4: the server takes OpenAI `tools` and
tool-call history, prompts the model exactly as training rendered the same conversation, and
returns `tool_calls` and `reasoning_content` parsed from the model's special tokens."""

from __future__ import annotations

import json

import pytest

from gemmaforge.data.examples.formats import fold_tool_messages
from gemmaforge.data.examples.render import render
from gemmaforge.data.examples.tools import split_reply
from gemmaforge.infer.serve import reply_message
from gemmaforge.infer.stream import Reply
from gemmaforge.models.families import GEMMA4

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
HISTORY = [
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "c1", "content": '{"sky": "clear"}'},
]


@pytest.fixture(scope="module")
def tok():
    from gemmaforge.models.tiny import tiny_tokenizer

    return tiny_tokenizer("gemma4")


def test_split_reply_and_the_openai_message(tok):
    text = (
        '<|channel>thought\nNeed data.<channel|>Let me look.<|tool_call>call:get_weather{city:<|"|>'
        'Paris<|"|>}<tool_call|>'
    )
    assert split_reply(text) == (
        "Let me look.",
        "Need data.",
        [{"name": "get_weather", "arguments": {"city": "Paris"}}],
    )
    ids = tok(text, add_special_tokens=False)["input_ids"]
    message, finish = reply_message(tok, Reply(text="", ids=ids, finish_reason="stop"))
    assert finish == "tool_calls"
    assert message["content"] == "Let me look." and message["reasoning_content"] == "Need data."
    (call,) = message["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    plain, finish = reply_message(tok, Reply(text="", ids=tok("Sunny.")["input_ids"][1:]))
    assert plain == {"role": "assistant", "content": "Sunny."} and finish is None


def test_prompt_after_a_tool_result_is_the_training_prefix(tiny_dir):
    """The model is prompted to go on after `<tool_response|>` in the same turn: the ids are
    the prefix of the training rendering of the same conversation with its final answer."""
    from gemmaforge.infer.session import open_session

    session = open_session(str(tiny_dir("gemma4")), [], base_name="g4")
    prompt = session.prompt(fold_tool_messages(HISTORY, "request"), TOOLS)
    answer = [*HISTORY, {"role": "assistant", "content": "Clear skies."}]
    trained = render(
        fold_tool_messages(answer, "data"), GEMMA4, session.loaded.tokenizer, tools=TOOLS
    )
    assert trained.input_ids[: len(prompt.ids)] == prompt.ids
    rest = session.loaded.tokenizer.decode(trained.input_ids[len(prompt.ids) :])
    assert rest == "Clear skies.<turn|>\n"

    from gemmaforge.infer.serve import create_app
    from test_serve import Server

    server = Server(create_app(session, max_request_bytes=64 * 1024))
    try:
        reply = server.client().chat.completions.create(
            model="g4", messages=HISTORY, tools=TOOLS, max_tokens=5, temperature=0
        )
    finally:
        server.stop()
    choice = reply.choices[0]
    assert choice.finish_reason in ("stop", "length", "tool_calls")
    assert reply.usage.prompt_tokens == len(prompt.ids)
    for call in choice.message.tool_calls or []:
        json.loads(call.function.arguments)


def test_tool_calls_task_scores_names_and_arguments():
    from gemmaforge.eval.tasks import TASKS, pick_task

    task = TASKS["tool_calls"]
    reference = json.dumps([{"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}])
    same = json.dumps([{"arguments": {"days": 2, "city": "Paris"}, "name": "get_weather"}])
    wrong_args = json.dumps([{"name": "get_weather", "arguments": {"city": "Rome", "days": 2}}])
    scores = task.corpus([same, wrong_args, "[]", "not json"], [reference] * 4)
    assert scores == {"exact_match": 0.25, "name_accuracy": 0.5}
    assert task.example(same, reference) == 1.0 and task.example(wrong_args, reference) == 0.0
    assert pick_task("tool_calls", None) is task


def test_generate_prompts_with_tools_and_keeps_the_special_tokens(tiny_dir):
    from gemmaforge.config import ModelConfig
    from gemmaforge.data.examples.formats import Conversation
    from gemmaforge.data.examples.render import render_prompt_example
    from gemmaforge.eval.evaluate import _calls_reference
    from gemmaforge.infer.generate import generate
    from gemmaforge.models.load import load_model

    loaded = load_model(ModelConfig(name_or_path=str(tiny_dir("gemma4"))))
    prompt = [{"role": "user", "content": "Weather in Paris?"}]
    (reply,) = generate(
        loaded.model, loaded.tokenizer, GEMMA4, [prompt], max_new_tokens=4, tools=[TOOLS]
    )
    decoded = loaded.tokenizer.decode(
        loaded.tokenizer(reply.raw, add_special_tokens=False)["input_ids"],
        skip_special_tokens=True,
    )
    assert decoded == reply.text and 0 < reply.num_tokens <= 4
    ids = render_prompt_example(prompt, GEMMA4, loaded.tokenizer, tools=TOOLS).input_ids
    assert "<|tool>declaration:get_weather{" in loaded.tokenizer.decode(ids)

    turns = fold_tool_messages([*HISTORY, {"role": "assistant", "content": "ok"}], "d")
    conv = Conversation("d:1", turns[:2], tools=TOOLS)
    assert json.loads(_calls_reference(conv)) == [
        {"name": "get_weather", "arguments": {"city": "Paris"}}
    ]


def test_generate_command_takes_a_tools_file(tiny_dir, tmp_path):
    from typer.testing import CliRunner

    from gemmaforge.cli import app

    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps(TOOLS))
    args = ["generate", "Weather?", "--model", str(tiny_dir("gemma4")), "--max-new-tokens", "3"]
    result = CliRunner().invoke(app, [*args, "--tools", str(tools)])
    assert result.exit_code == 0, result.output
    tools.write_text('{"name": "f"}')
    result = CliRunner().invoke(app, [*args, "--tools", str(tools)])
    assert result.exit_code == 2 and "is not a JSON list of tools" in result.output


STREAMED = (
    '<|channel>thought\nNeed data.\n<channel|>Let me look. <|tool_call>call:get_weather{city:<|"|>'
    'Paris<|"|>}<tool_call|><|tool_call>call:now{}<tool_call|>'
)


def test_streamed_deltas_add_up_to_the_whole_message(tok):
    """Fed one token at a time, the deltas never show call or channel syntax, and joined they
    are the message a whole reply gives: the same content, reasoning and calls."""
    from gemmaforge.infer.serve import ReplyDeltas

    ids = tok(STREAMED, add_special_tokens=False)["input_ids"]
    parts = ReplyDeltas(tok)
    deltas = [d for n in range(1, len(ids) + 1) for d in parts.update(ids[:n])]
    deltas += parts.update(ids, final=True)
    texts = [d.get("content", "") + d.get("reasoning_content", "") for d in deltas]
    assert not any(mark in t for t in texts for mark in ("<|", "|>", "call:", "thought"))
    message, finish = reply_message(tok, Reply(text="", ids=ids, finish_reason="stop"))
    assert "".join(d.get("content", "") for d in deltas) == message["content"] == "Let me look."
    reasoning = "".join(d.get("reasoning_content", "") for d in deltas)
    assert reasoning == message["reasoning_content"] == "Need data."
    calls = [c for d in deltas for c in d.get("tool_calls", [])]
    assert [c["index"] for c in calls] == [0, 1] and finish == "tool_calls"
    assert [c["function"] for c in calls] == [m["function"] for m in message["tool_calls"]]
    # Reasoning arrives before the text that follows it, each call once it has closed.
    kinds = [next(iter(d)) for d in deltas]
    assert kinds.index("reasoning_content") < kinds.index("content") < kinds.index("tool_calls")


def test_stop_strings_cut_the_content_streamed_or_not(tok):
    from gemmaforge.infer.serve import ReplyDeltas

    ids = tok("Sunny today. END more", add_special_tokens=False)["input_ids"]
    parts = ReplyDeltas(tok, ("END",))
    streamed = [d for n in range(1, len(ids) + 1) for d in parts.update(ids[:n])]
    streamed += parts.update(ids, final=True)
    message, _ = reply_message(tok, Reply(text="", ids=ids, finish_reason="stop"), ("END",))
    assert "".join(d["content"] for d in streamed) == message["content"] == "Sunny today. "


def test_streamed_tool_reply_equals_the_whole_one(tiny_dir):
    """The same greedy request to a real server, streamed and not, on a Gemma 4 model."""
    from gemmaforge.infer.serve import create_app
    from gemmaforge.infer.session import open_session
    from test_serve import Server

    session = open_session(str(tiny_dir("gemma4")), [], base_name="g4")
    server = Server(create_app(session, max_request_bytes=64 * 1024))
    ask = {"model": "g4", "messages": HISTORY, "tools": TOOLS, "max_tokens": 12, "temperature": 0}
    try:
        client = server.client()
        whole = client.chat.completions.create(**ask).choices[0]
        chunks = list(client.chat.completions.create(**ask, stream=True))
    finally:
        server.stop()
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    content = "".join(d.content or "" for d in deltas)
    assert content == (whole.message.content or "")
    reasoning = "".join(getattr(d, "reasoning_content", None) or "" for d in deltas)
    assert reasoning == (getattr(whole.message, "reasoning_content", None) or "")
    calls = [c.function.name for d in deltas for c in d.tool_calls or []]
    assert calls == [c.function.name for c in whole.message.tool_calls or []]
    assert chunks[-1].choices[0].finish_reason == whole.finish_reason
