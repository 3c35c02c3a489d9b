"""Format detection and row -> conversation conversion for every format."""

from __future__ import annotations

import pytest

from gemmaforge.config import DataConfig
from gemmaforge.data.examples.formats import detect_format, to_conversation
from gemmaforge.data.read.records import Record
from gemmaforge.errors import UserError

CFG = DataConfig()


def rec(row: dict) -> Record:
    return Record(row=row, path="data.jsonl", line=7)


def convert(row: dict, fmt: str, cfg: DataConfig = CFG):
    return to_conversation(rec(row), fmt, cfg)


def error(row: dict, fmt: str, cfg: DataConfig = CFG) -> str:
    with pytest.raises(UserError) as info:
        convert(row, fmt, cfg)
    return str(info.value)


@pytest.mark.parametrize(
    ("row", "fmt"),
    [
        ({"messages": []}, "messages"),
        ({"instruction": "i", "input": "", "output": "o"}, "alpaca"),
        ({"conversations": [], "id": 3}, "sharegpt"),
        ({"prompt": "p", "response": "r"}, "instruction"),
        ({"text": "t", "meta": 1}, "completion"),
    ],
)
def test_detects_each_format(row, fmt):
    assert detect_format(rec(row), CFG) == fmt


def test_detection_uses_configured_columns():
    cfg = DataConfig(prompt_column="question", response_column="answer")
    assert detect_format(rec({"question": "q", "answer": "a"}), cfg) == "instruction"


def test_ambiguous_row_names_the_candidates():
    with pytest.raises(UserError) as info:
        detect_format(rec({"messages": [], "text": "t"}), CFG)
    message = str(info.value)
    assert message.startswith("data.jsonl:7: the row fits several formats (messages, completion)")
    assert "set data.format to one of messages, completion" in message


def test_unknown_row_lists_keys_and_formats():
    with pytest.raises(UserError) as info:
        detect_format(rec({"question": "q", "answer": "a"}), CFG)
    message = str(info.value)
    assert (
        "data.jsonl:7: cannot tell the data format from the keys found ('question', 'answer')"
        in message
    )
    assert "alpaca: instruction, output" in message
    assert "instruction: prompt, response" in message


def test_messages_with_string_and_text_parts():
    row = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}],
            },
            {"role": "model", "content": "Hello"},
        ]
    }
    conv = convert(row, "messages")
    assert conv.where == "data.jsonl:7"
    assert conv.text is None
    assert conv.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi there"},
        {"role": "model", "content": "Hello"},
    ]


def test_messages_media_parts_resolve_against_the_data_file():
    parts = [
        {"type": "image", "path": "img/x.png"},
        {"type": "text", "text": "What is it?"},
        {"type": "audio", "url": "https://example.org/a.wav"},
    ]
    row = {"messages": [{"role": "user", "content": parts}]}
    record = Record(row=row, path="/data/set/train.jsonl", line=3)
    content = to_conversation(record, "messages", CFG).messages[0]["content"]
    assert content == [
        {"type": "image", "ref": "/data/set/img/x.png"},
        {"type": "text", "text": "What is it?"},
        {"type": "audio", "ref": "https://example.org/a.wav"},
    ]


def test_unknown_content_parts_are_refused_clearly():
    row = {"messages": [{"role": "user", "content": [{"type": "document", "path": "x.pdf"}]}]}
    message = error(row, "messages")
    assert "data.jsonl:7: messages[0].content[0] is not a content part gemmaforge reads" in message
    assert "{'type': 'image', 'path' | 'url' | 'base64': ...}" in message


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        ("hi", "'messages' must be a list of messages, got str"),
        (["hi"], "messages[0] must be an object with 'role' and 'content'"),
        ([{"role": "user", "content": 3}], "'messages[0].content' must be a string, got int"),
        (
            [{"role": "user", "content": [{"type": "text"}]}],
            "is not a content part gemmaforge reads",
        ),
    ],
)
def test_messages_shape_errors(messages, expected):
    assert expected in error({"messages": messages}, "messages")


def test_alpaca_appends_input_after_blank_line():
    conv = convert({"instruction": "Translate.", "input": "Hallo", "output": "Hello"}, "alpaca")
    assert conv.messages == [
        {"role": "user", "content": "Translate.\n\nHallo"},
        {"role": "assistant", "content": "Hello"},
    ]
    plain = convert({"instruction": "Say hi.", "output": "hi"}, "alpaca")
    assert plain.messages[0]["content"] == "Say hi."


def test_sharegpt_maps_speakers():
    row = {
        "conversations": [
            {"from": "system", "value": "S"},
            {"from": "human", "value": "U1"},
            {"from": "gpt", "value": "A1"},
            {"from": "user", "value": "U2"},
            {"from": "model", "value": "A2"},
        ]
    }
    roles = [m["role"] for m in convert(row, "sharegpt").messages]
    assert roles == ["system", "user", "assistant", "user", "model"]


def test_sharegpt_shape_error():
    message = error({"conversations": [{"role": "user"}]}, "sharegpt")
    assert "conversations[0] must be an object with 'from' and 'value'" in message


def test_instruction_with_custom_columns_and_system():
    cfg = DataConfig(prompt_column="q", response_column="a", system_column="sys")
    conv = convert({"q": "Q?", "a": "A.", "sys": "Be kind."}, "instruction", cfg)
    assert conv.messages == [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Q?"},
        {"role": "assistant", "content": "A."},
    ]
    # An empty system cell (CSV has no null) means no system prompt.
    no_system = convert({"q": "Q?", "a": "A.", "sys": ""}, "instruction", cfg)
    assert [m["role"] for m in no_system.messages] == ["user", "assistant"]


def test_missing_column_names_row_and_keys():
    message = error({"prompt": "p", "answer": "a"}, "instruction")
    assert message.startswith(
        "data.jsonl:7: missing column(s) 'response' for the instruction format "
        "(keys found: 'prompt', 'answer')"
    )
    assert "Fix:" in message


def test_missing_system_column_is_reported():
    cfg = DataConfig(system_column="sys")
    assert "missing column(s) 'sys'" in error({"prompt": "p", "response": "r"}, "instruction", cfg)


def test_completion_text():
    conv = convert({"text": "Once upon a time"}, "completion")
    assert conv.messages == []
    assert conv.text == "Once upon a time"


def test_completion_empty_text():
    assert "data.jsonl:7: 'text' is empty" in error({"text": "  \n"}, "completion")


def test_non_string_value():
    message = error({"instruction": "i", "output": None}, "alpaca")
    assert "data.jsonl:7: 'output' must be a string, got NoneType" in message
