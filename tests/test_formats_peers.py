"""Other tools' dataset formats, each written as a small file the way that tool documents it,
read through training's own path (sources -> formats -> render): the ids and labels are
checked against hand-written pieces of the Gemma 4 chat format, or the refusal is checked to
name the format, the field and the fix. Nothing may be trained other than as the format
means (docs/data.md, "Data from other tools")."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest

from gemmaforge.config import DataConfig
from gemmaforge.data.examples.dataset import RowRenderer, load_datasets
from gemmaforge.data.examples.formats import detect_format, to_conversation
from gemmaforge.data.examples.render import IGNORE_INDEX
from gemmaforge.data.read.records import Record
from gemmaforge.data.read.sources import iter_source_records, open_sources
from gemmaforge.errors import UserError
from gemmaforge.models.families import GEMMA3N, GEMMA4

SPECIAL = {"<bos>", "<|turn>", "<turn|>", "<|channel>", "<channel|>", "<|think|>"}


@pytest.fixture(scope="module")
def tok():
    from gemmaforge.models.tiny import tiny_tokenizer

    return tiny_tokenizer("gemma4")


def expected(tok, pieces: list[tuple[str, bool]]) -> tuple[list[int], list[int]]:
    """Ids and labels of (piece, trained) pairs: special tokens by id, text tokenised alone."""
    ids, labels = [], []
    for piece, trained in pieces:
        if piece in SPECIAL:
            part = [tok.convert_tokens_to_ids(piece)]
        else:
            part = tok(piece, add_special_tokens=False)["input_ids"]
        ids += part
        labels += part if trained else [IGNORE_INDEX] * len(part)
    return ids, labels


def turn(role: str, text: str, trained: bool = False) -> list[tuple[str, bool]]:
    return [("<|turn>", False), (f"{role}\n", False), (text, trained), ("<turn|>", trained),
            ("\n", False)]  # fmt: skip


def write(tmp_path: Path, name: str, rows) -> Path:
    path = tmp_path / name
    if name.endswith(".jsonl"):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        path.write_text(json.dumps(rows, indent=2))
    return path


def rendered(tok, spec, **data):
    """Every row of `spec` rendered as training renders it (Gemma 4, text-only)."""
    cfg = DataConfig(train=str(spec), **data)
    renderer = RowRenderer(cfg, GEMMA4, tok)
    return [renderer(r) for r in iter_source_records(str(spec))]


def refusal(tok, spec, **data) -> str:
    with pytest.raises(UserError) as info:
        rendered(tok, spec, **data)
    return str(info.value)


def check(example, tok, pieces):
    ids, labels = expected(tok, pieces)
    assert example.input_ids == ids
    assert example.labels == labels


# -- refused as preference data ------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "what"),
    [
        ({"prompt": "Q", "completion": "A", "label": False}, "KTO: a boolean 'label'"),
        (
            {"messages": [{"role": "user", "content": "Q"}], "label": True},
            "KTO: a boolean 'label'",
        ),
        ({"prompt": "Q", "chosen": "good", "rejected": "bad"}, "'chosen' / 'rejected'"),
        (
            {"chosen_messages": [], "rejected_messages": []},
            "'chosen_messages' / 'rejected_messages'",
        ),
    ],
)
def test_preference_and_kto_rows_are_refused(tmp_path, tok, row, what):
    path = write(tmp_path, "pref.jsonl", [row])
    message = refusal(tok, path)
    assert f"pref.jsonl:1: this is preference data ({what}" in message
    assert "train.objective=" in message
    # Forcing a format does not get past it.
    for fmt in ("messages", "prompt_completion"):
        with pytest.raises(UserError, match="preference data"):
            to_conversation(Record(row, "p.jsonl", 1), fmt, DataConfig())


# -- reasoning -> Gemma 4's thinking channel -----------------------------------------------

THINKING_ROWS = [
    {"messages": [{"role": "user", "content": "2+2?"},
                  {"role": "assistant", "content": "4", "reasoning_content": "Two and two."}]},
    {"messages": [{"role": "user", "content": "2+2?"},
                  {"role": "assistant", "content": "4", "thinking": "Two and two."}]},
    {"messages": [{"role": "user", "content": "2+2?"},
                  {"role": "assistant", "content": [
                      {"type": "reasoning", "value": "Two and two."},
                      {"type": "text", "value": "4"}]}]},
]  # fmt: skip


@pytest.mark.parametrize("train_thinking", [True, False])
def test_reasoning_fields_render_into_the_thinking_channel(tmp_path, tok, train_thinking):
    path = write(tmp_path, "think.jsonl", THINKING_ROWS)
    examples = rendered(tok, path, train_thinking=train_thinking)
    pieces = [
        ("<bos>", False),
        # The template opens a system turn for the thinking switch.
        ("<|turn>", False), ("system\n", False), ("<|think|>", False), ("\n", False),
        ("<turn|>", False),
        ("\n", False),
        *turn("user", "2+2?"),
        ("<|turn>", False), ("model\n", False),
        ("<|channel>", train_thinking), ("thought\nTwo and two.\n", train_thinking),
        ("<channel|>", train_thinking),
        ("4", True), ("<turn|>", True), ("\n", False),
    ]  # fmt: skip
    for example in examples:
        check(example, tok, pieces)


def test_thinking_switch_joins_an_existing_system_turn_and_history_reasoning_is_dropped(
    tmp_path, tok
):
    row = {"messages": [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b", "reasoning": "old"},
        {"role": "user", "content": "c"},
        {"role": "assistant", "content": "d", "reasoning": "new"},
    ]}  # fmt: skip
    (example,) = rendered(tok, write(tmp_path, "t.jsonl", [row]))
    pieces = [
        ("<bos>", False),
        ("<|turn>", False), ("system\n", False), ("<|think|>", False), ("\n", False),
        ("Be brief.", False),
        ("<turn|>", False), ("\n", False),
        *turn("user", "a"), *turn("model", "b", True), *turn("user", "c"),
        ("<|turn>", False), ("model\n", False),
        ("<|channel>", True), ("thought\nnew\n", True), ("<channel|>", True),
        ("d", True), ("<turn|>", True), ("\n", False),
    ]  # fmt: skip
    check(example, tok, pieces)


def test_reasoning_on_a_family_without_a_thinking_channel_is_refused(tmp_path):
    from gemmaforge.models.tiny import tiny_tokenizer

    cfg = DataConfig()
    record = Record(THINKING_ROWS[0], "think.jsonl", 1)
    renderer = RowRenderer(cfg, GEMMA3N, tiny_tokenizer("gemma3n"))
    with pytest.raises(UserError) as info:
        renderer(record)
    message = str(info.value)
    assert "think.jsonl:1: message 2 has reasoning (reasoning_content / thinking / reasoning)" in (
        message
    )
    assert "gemma3n has no thinking channel" in message


# -- per-turn / per-part loss flags --------------------------------------------------------


def test_openai_weight_and_axolotl_train_flags_mask_turns_and_parts(tmp_path, tok):
    rows = [
        {"messages": [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b", "weight": 0},
            {"role": "user", "content": "c"},
            {"role": "assistant", "content": "d", "weight": 1},
        ]},
        {"messages": [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b", "train": False},
            {"role": "user", "content": "c"},
            {"role": "assistant", "content": "d", "training": True},
        ]},
        {"conversations": [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": [{"type": "text", "value": "b"}], "loss_weight": 0.0},
            {"role": "user", "content": "c"},
            {"role": "assistant", "content": [{"type": "text", "value": "d"}], "loss_weight": 1.0},
        ]},
    ]  # fmt: skip
    pieces = [("<bos>", False), *turn("user", "a"), *turn("model", "b", False),
              *turn("user", "c"), *turn("model", "d", True)]  # fmt: skip
    for i, row in enumerate(rows):
        (example,) = rendered(tok, write(tmp_path, f"w{i}.jsonl", [row]))
        check(example, tok, pieces)
    # A content part can be masked on its own (axolotl): the turn end follows the last part.
    part_row = {"messages": [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Let me see. ", "train": False},
            {"type": "text", "text": "Yes."},
        ]},
    ]}  # fmt: skip
    (example,) = rendered(tok, write(tmp_path, "p.jsonl", [part_row]))
    check(
        example,
        tok,
        [("<bos>", False), *turn("user", "a"), ("<|turn>", False), ("model\n", False),
         ("Let me see.", False), ("Yes.", True), ("<turn|>", True), ("\n", False)],
    )  # fmt: skip


def test_fractional_or_all_zero_weights_are_refused(tmp_path, tok):
    half = {"messages": [{"role": "user", "content": "a"},
                         {"role": "assistant", "content": "b", "loss_weight": 0.5}]}  # fmt: skip
    message = refusal(tok, write(tmp_path, "half.jsonl", [half]))
    assert "half.jsonl:1: 'messages[1].loss_weight' is 0.5" not in message
    assert "messages[1].loss_weight is 0.5: gemmaforge trains a token fully or not at all" in (
        message
    )
    zero = {"messages": [{"role": "user", "content": "a"},
                         {"role": "assistant", "content": "b", "weight": 0}]}  # fmt: skip
    message = refusal(tok, write(tmp_path, "zero.jsonl", [zero]))
    assert "zero.jsonl:1: no token of the conversation is trained" in message


# -- LLaMA-Factory media placeholders, TRL bare parts, inline media -------------------------


def png(tmp_path: Path, name: str = "a.png") -> Path:
    from PIL import Image

    path = tmp_path / name
    Image.new("RGB", (8, 8), (200, 10, 10)).save(path)
    return path


def test_placeholders_take_the_rows_images_in_order(tmp_path):
    png(tmp_path, "a.png")
    png(tmp_path, "b.png")
    rows = [{
        "conversations": [{"from": "human", "value": "<image>Compare with<image> please"},
                          {"from": "gpt", "value": "Same."}],
        "images": ["a.png", "b.png"],
    }]  # fmt: skip
    path = write(tmp_path, "lf.json", rows)
    (record,) = iter_source_records(str(path))
    conv = to_conversation(record, detect_format(record, DataConfig()), DataConfig())
    assert conv.messages[0]["content"] == [
        {"type": "image", "ref": str(tmp_path / "a.png")},
        {"type": "text", "text": "Compare with"},
        {"type": "image", "ref": str(tmp_path / "b.png")},
        {"type": "text", "text": " please"},
    ]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            {"messages": [{"role": "user", "content": "<image><image>Hi"},
                          {"role": "assistant", "content": "Yo"}], "images": ["a.png"]},
            "lf.jsonl:1: message 1 has an <image> placeholder but the row has only 1 'images'",
        ),
        (
            {"messages": [{"role": "user", "content": "Hi"},
                          {"role": "assistant", "content": "Yo"}], "images": ["a.png"]},
            "lf.jsonl:1: the row has 1 'images' item(s) but 0 <image> placeholder(s)",
        ),
        (
            {"messages": [{"role": "user", "content": "<image>Hi"},
                          {"role": "assistant", "content": "Yo"}]},
            "or set data.media_placeholders: false if <image> is plain text",
        ),
        (
            {"messages": [{"role": "user", "content": "<video><video>Hi"},
                          {"role": "assistant", "content": "Yo"}], "videos": ["v.mp4"]},
            "lf.jsonl:1: message 1 has an <video> placeholder but the row has only 1 'videos'",
        ),
    ],
)  # fmt: skip
def test_placeholder_count_mismatch_is_refused_with_the_row(tmp_path, tok, row, message):
    assert message in refusal(tok, write(tmp_path, "lf.jsonl", [row]))


def test_placeholders_as_text_when_switched_off(tmp_path, tok):
    row = {"messages": [{"role": "user", "content": "Write <image> tags"},
                        {"role": "assistant", "content": "ok"}]}  # fmt: skip
    (example,) = rendered(tok, write(tmp_path, "t.jsonl", [row]), media_placeholders=False)
    check(example, tok, [("<bos>", False), *turn("user", "Write <image> tags"),
                         *turn("model", "ok", True)])  # fmt: skip


def test_trl_bare_image_parts_from_parquet_and_openai_image_parts(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = (png(tmp_path)).read_bytes()
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Red."}]},
    ]
    table = pa.table(
        {
            "messages": [json.loads(json.dumps(messages))],
            "images": [[{"bytes": data, "path": "x.png"}]],
        }
    )
    pq.write_table(table, tmp_path / "trl.parquet")
    (record,) = iter_source_records(str(tmp_path / "trl.parquet"))
    conv = to_conversation(record, "messages", DataConfig())
    (image, text) = conv.messages[0]["content"]
    assert image["type"] == "image" and Path(image["ref"]).read_bytes() == data
    assert text == {"type": "text", "text": "What?"}

    b64 = base64.b64encode(data).decode()
    for part in (
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64}"}},
        {"type": "image", "base64": b64},
        {"type": "image_url", "image_url": {"url": "a.png"}},
    ):
        row = {"messages": [{"role": "user", "content": [part]}]}
        conv = to_conversation(Record(row, str(tmp_path / "d.jsonl"), 1), "messages", DataConfig())
        assert Path(conv.messages[0]["content"][0]["ref"]).read_bytes() == data


def test_media_placeholders_render_media_tokens_where_they_stood(tmp_path, tiny_dir):
    from transformers import AutoProcessor

    from gemmaforge.data.examples.multimodal import MediaEncoder

    png(tmp_path)
    processor = AutoProcessor.from_pretrained(tiny_dir("gemma4"))
    row = {"messages": [{"role": "user", "content": "Look <image> here"},
                        {"role": "assistant", "content": "Red."}], "images": ["a.png"]}  # fmt: skip
    path = write(tmp_path, "mm.jsonl", [row])
    cfg = DataConfig(train=str(path))
    renderer = RowRenderer(cfg, GEMMA4, processor.tokenizer, MediaEncoder(processor))
    (example,) = [renderer(r) for r in iter_source_records(str(path))]
    assert [m.kind for m in example.media] == ["image"]
    soft = processor.tokenizer.image_token_id
    text = processor.tokenizer.decode(example.input_ids)
    assert "<image>" not in text
    first = example.input_ids.index(soft)
    before = processor.tokenizer.decode(example.input_ids[:first])
    assert before.rstrip().endswith("Look") or "Look" in before
    assert "here" in processor.tokenizer.decode(example.input_ids[first:])


# -- other formats read as they are ---------------------------------------------------------


def test_prompt_completion_plain_and_conversational(tmp_path, tok):
    rows = [
        {"prompt": "Capital of France?", "completion": "Paris."},
        {"prompt": [{"role": "user", "content": "Capital of France?"}],
         "completion": [{"role": "assistant", "content": "Paris."}]},
    ]  # fmt: skip
    pieces = [("<bos>", False), *turn("user", "Capital of France?"),
              *turn("model", "Paris.", True)]  # fmt: skip
    for example in rendered(tok, write(tmp_path, "pc.jsonl", rows)):
        check(example, tok, pieces)


def test_llamafactory_json_array_alpaca_with_system_and_history(tmp_path, tok):
    rows = [{"instruction": "c", "input": "", "output": "d", "system": "S",
             "history": [["a", "b"]]}]  # fmt: skip
    (example,) = rendered(tok, write(tmp_path, "alpaca.json", rows))
    pieces = [("<bos>", False), *turn("system", "S"), *turn("user", "a"),
              *turn("model", "b", True), *turn("user", "c"), *turn("model", "d", True)]  # fmt: skip
    check(example, tok, pieces)


def test_single_pretty_printed_object(tmp_path, tok):
    path = tmp_path / "one.json"
    path.write_text(
        json.dumps(
            {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
            indent=4,
        )
    )
    (example,) = rendered(tok, path)
    check(example, tok, [("<bos>", False), *turn("user", "a"), *turn("model", "b", True)])


def test_axolotl_input_output_segments(tmp_path, tok):
    row = {"segments": [{"label": False, "text": "<bos>Q: hi\n"}, {"label": True, "text": "A: yo"},
                        {"label": False, "text": "\n"}]}  # fmt: skip
    (example,) = rendered(tok, write(tmp_path, "io.jsonl", [row]))
    check(example, tok, [("<bos>", False), ("Q: hi\n", False), ("A: yo", True), ("\n", False)])
    none = {"segments": [{"label": False, "text": "x"}]}
    assert "no segment has label true" in refusal(tok, write(tmp_path, "n.jsonl", [none]))


def test_malformed_tool_turns_are_refused_by_name(tmp_path, tok):
    row = {"conversations": [{"from": "human", "value": "weather?"},
                             {"from": "function_call", "value": "get_weather(Paris)"},
                             {"from": "observation", "value": "{}"},
                             {"from": "gpt", "value": "sunny"}]}  # fmt: skip
    message = refusal(tok, write(tmp_path, "tools.jsonl", [row]))
    assert "tools.jsonl:1: conversations[1].value[0] is not a tool call with a 'name'" in message
    orphan = {"messages": [{"role": "user", "content": "x"},
                           {"role": "tool", "content": "42"},
                           {"role": "assistant", "content": "y"}]}  # fmt: skip
    message = refusal(tok, write(tmp_path, "orphan.jsonl", [orphan]))
    assert "messages[1] is a tool result with no tool call before it (messages format)" in message
    assert "'tools' is a string but not JSON" in refusal(
        tok, write(tmp_path, "bad.jsonl", [{**orphan, "tools": "[not json"}])
    )


def test_llamafactory_dataset_info_mapping(tmp_path, tok):
    rows = [{"dialog": [{"speaker": "me", "text": "hi"}, {"speaker": "bot", "text": "yo"}],
             "sys": "S"}]  # fmt: skip
    write(tmp_path, "chat.json", rows)
    info = {
        "mine": {
            "file_name": "chat.json",
            "formatting": "sharegpt",
            "columns": {"messages": "dialog", "system": "sys"},
            "tags": {"role_tag": "speaker", "content_tag": "text", "user_tag": "me",
                     "assistant_tag": "bot"},
        },
        "other": {"hf_hub_url": "x/y"},
    }  # fmt: skip
    (tmp_path / "dataset_info.json").write_text(json.dumps(info))
    (example,) = rendered(tok, f"{tmp_path}#mine")
    check(example, tok, [("<bos>", False), *turn("system", "S"), *turn("user", "hi"),
                         *turn("model", "yo", True)])  # fmt: skip
    assert "describes several datasets (mine, other)" in refusal(tok, tmp_path)
    assert "is not a local file" in refusal(tok, f"{tmp_path}#other")


def test_mlx_lm_folder_trains_train_validates_on_valid_never_reads_test(tmp_path, tok):
    def row(text):
        return {"messages": [{"role": "user", "content": text},
                             {"role": "assistant", "content": text}]}  # fmt: skip

    folder = tmp_path / "data"
    folder.mkdir()
    write(folder, "train.jsonl", [row("t1"), row("t2")])
    write(folder, "valid.jsonl", [row("v1")])
    write(folder, "test.jsonl", [row("x1")])
    cfg = DataConfig(train=str(folder))
    train, val, report = load_datasets(cfg, open_sources(cfg), GEMMA4, tok, seed=0)
    decoded = [tok.decode(ex.input_ids) for ex in train]
    assert len(train) == 2 and all("t" in d and "x1" not in d for d in decoded)
    assert len(val) == 1 and "v1" in tok.decode(val[0].input_ids)
    assert report.validation == "file"
    assert [Path(f.path).name for f in report.files] == ["train.jsonl", "valid.jsonl"]
    test_rows = list(iter_source_records(f"{folder}#test"))
    assert [r.row["messages"][0]["content"] for r in test_rows] == ["x1"]


def test_data_url_image_is_decoded_and_never_printed(tmp_path):
    from gemmaforge.data.examples.media import load_image

    buffer = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (4, 4)).save(buffer, "PNG")
    good = base64.b64encode(buffer.getvalue()).decode()
    row = {"messages": [{"role": "user", "content": [
        {"type": "image", "url": f"data:image/png;base64,{good}"}]}]}  # fmt: skip
    conv = to_conversation(Record(row, "d.jsonl", 1), "messages", DataConfig())
    assert load_image(conv.messages[0]["content"][0]["ref"]).size == (4, 4)
    bad = "A" * 5000 + "!"
    row["messages"][0]["content"][0]["url"] = f"data:image/png;base64,{bad}"
    with pytest.raises(UserError) as info:
        to_conversation(Record(row, "d.jsonl", 1), "messages", DataConfig())
    message = str(info.value)
    assert "is not valid base64" in message and "(5001 characters)" in message
    assert len(message) < 400


def test_data_check_agrees_on_split_folders_inline_images_and_loss_flags(tiny_dir, tmp_path):
    """`data check` on an mlx-lm folder whose rows hold a data: URL image and loss flags:
    no traceback, no base64 printed, validation from valid.jsonl, trained tokens counted as
    training renders them."""
    from typer.testing import CliRunner

    from gemmaforge.cli import app
    from gemmaforge.config import ModelConfig
    from gemmaforge.models.load import load_tokenizer

    buffer = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (16, 16), (0, 200, 0)).save(buffer, "PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    image_row = {"messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                     {"type": "text", "text": "Colour?"}]},
        {"role": "assistant", "content": "green"}]}  # fmt: skip
    flagged = {"messages": [
        {"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "weight": 0},
        {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]}  # fmt: skip
    folder = tmp_path / "data"
    folder.mkdir()
    write(folder, "train.jsonl", [image_row, flagged])
    write(folder, "valid.jsonl", [flagged])
    write(folder, "test.jsonl", [{"broken": True}])  # never read, so never an error
    result = CliRunner().invoke(
        app, ["data", "check", str(folder), "--model", str(tiny_dir("gemma4")), "--json"]
    )
    assert result.exit_code == 0, result.output
    assert "base64," not in result.output
    report = json.loads(result.stdout)
    assert report["examples"] == {"train": 2, "validation": 1, "rows_read": 3}
    assert report["media"]["images"]["count"] == 1
    # The text example's trained tokens are exactly those of its rendering.
    loaded = load_tokenizer(ModelConfig(name_or_path=str(tiny_dir("gemma4"))))
    renderer = RowRenderer(DataConfig(), GEMMA4, loaded.tokenizer)
    text_example = renderer(Record(flagged, str(folder / "valid.jsonl"), 1))
    assert report["tokens"]["text"]["trained"] == 2 * text_example.num_trained
    assert text_example.num_trained == len(
        expected(loaded.tokenizer, [("d", True), ("<turn|>", True)])[0]
    )


# -- Gemma 4 tool calling and thinking, against the official chat template -----------------

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / ".cache" / "templates" / "google-gemma-4-31B-it.jinja"
"""Google's Gemma 4 chat template, as llama.cpp keeps it (models/templates/). Not committed
here: `make test` takes it from the llama-cpp-python source package on PyPI
(tools/official_templates.py); GEMMAFORGE_GEMMA4_TEMPLATE may point at another copy."""

TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city.",
        "parameters": {"type": "object", "required": ["city"], "properties": {
            "city": {"type": "string", "description": "City name"},
            "unit": {"type": "string", "enum": ["c", "f"]},
            "days": {"type": "integer", "nullable": True},
            "where": {"type": "object", "properties": {"lat": {"type": "number"}},
                      "required": ["lat"]},
            "tags": {"type": "array", "items": {"type": "string"}},
        }},
    }},
    {"type": "function", "function": {"name": "now", "description": "The time."}},
]  # fmt: skip

OPENAI_TOOL_CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "reasoning_content": "Need the weather.",
     "tool_calls": [{"id": "c1", "type": "function", "function": {
         "name": "get_weather", "arguments": '{"city": "Paris", "days": 2}'}}]},
    {"role": "tool", "tool_call_id": "c1", "content": '{"temp": 21, "sky": "clear"}'},
    {"role": "assistant", "content": None, "reasoning_content": "And the time.",
     "tool_calls": [{"id": "c2", "type": "function",
                     "function": {"name": "now", "arguments": {}}}]},
    {"role": "tool", "tool_call_id": "c2", "content": "noon"},
    {"role": "assistant", "content": "21 C and clear at noon."},
]  # fmt: skip


def as_served(messages: list[dict]) -> list[dict]:
    """The conversation as an OpenAI-compatible server hands it to the template: call
    arguments decoded from their JSON strings (the template writes a string as it is)."""
    out = []
    for message in messages:
        calls = message.get("tool_calls")
        if calls:
            calls = [
                {**c, "function": {**c["function"], "arguments": json.loads(a)
                                   if isinstance(a := c["function"]["arguments"], str) else a}}
                for c in calls
            ]  # fmt: skip
            message = {**message, "tool_calls": calls}
        out.append(message)
    return out


def official_template() -> str:
    import os

    path = Path(os.environ.get("GEMMAFORGE_GEMMA4_TEMPLATE", TEMPLATE))
    if not path.is_file():
        message = f"the official Gemma 4 chat template is not at {path} (make test fetches it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path.read_text()


def template_ids(tok, messages, **kwargs) -> list[int]:
    text = tok.apply_chat_template(
        messages, chat_template=official_template(), tokenize=False, **kwargs
    )
    return tok(text, add_special_tokens=False)["input_ids"]


def test_tool_calls_render_as_the_official_template(tmp_path, tok):
    row = {"messages": OPENAI_TOOL_CHAT, "tools": TOOLS}
    (example,) = rendered(tok, write(tmp_path, "tools.jsonl", [row]))
    ids = template_ids(tok, as_served(OPENAI_TOOL_CHAT), tools=TOOLS, enable_thinking=True)
    assert example.input_ids == ids
    # Trained: reasoning, calls, the <|tool_response> that stops the model, the answer; not
    # the results the tool wrote.
    trained = tok.decode([t for t in example.labels if t != IGNORE_INDEX])
    assert trained == (
        '<|channel>thought\nNeed the weather.\n<channel|><|tool_call>call:get_weather{city:<|"|>'
        'Paris<|"|>,days:2}<tool_call|><|tool_response><|channel>thought\nAnd the time.\n'
        "<channel|><|tool_call>call:now{}<tool_call|><|tool_response>21 C and clear at noon."
        "<turn|>"
    )


def test_sharegpt_function_call_turns_render_as_the_official_template(tmp_path, tok):
    row = {"conversations": [
        {"from": "human", "value": "Weather in Paris?"},
        {"from": "function_call",
         "value": '{"name": "get_weather", "arguments": {"city": "Paris"}}'},
        {"from": "observation", "value": "sunny"},
        {"from": "gpt", "value": "Sunny."},
    ], "tools": json.dumps(TOOLS)}  # fmt: skip
    (example,) = rendered(tok, write(tmp_path, "sg.jsonl", [row]))
    chat = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "Sunny.",
         "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
         "tool_responses": [{"name": "get_weather", "response": "sunny"}]},
    ]  # fmt: skip
    assert example.input_ids == template_ids(tok, chat, tools=TOOLS)


def test_thinking_renders_as_the_official_template_generates(tmp_path, tok):
    (example,) = rendered(tok, write(tmp_path, "t.jsonl", THINKING_ROWS[:1]))
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "2+2?"}],
        chat_template=official_template(),
        tokenize=False,
        add_generation_prompt=True,
        enable_thinking=True,
    )
    text = prompt + "<|channel>thought\nTwo and two.\n<channel|>4<turn|>\n"
    assert example.input_ids == tok(text, add_special_tokens=False)["input_ids"]


def test_tool_declarations_match_the_template_text():
    """The declaration writer against the template's own text, no tokenizer involved."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from gemmaforge.data.examples.tools import format_declaration

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["namespace"] = __import__("jinja2.utils", fromlist=["Namespace"]).Namespace
    text = env.from_string(official_template()).render(
        messages=[{"role": "user", "content": "x"}], tools=TOOLS, bos_token=""
    )
    expected = "".join(f"<|tool>{format_declaration(t)}<tool|>" for t in TOOLS)
    assert expected in text


def test_parse_calls_reads_back_what_is_rendered():
    from gemmaforge.data.examples.tools import format_call, parse_calls

    arguments = {"city": "Paris, {FR}", "days": 2, "hourly": False, "at": [1.5, "x", None],
                 "where": {"Lat": 1, "lon": "e"}}  # fmt: skip
    text = f"Sure.<|tool_call>{format_call('get_weather', arguments)}<tool_call|><|tool_response>"
    assert parse_calls(text) == [{"name": "get_weather", "arguments": arguments}]
    assert parse_calls("<|tool_call>call:f{broken<tool_call|>") == []


def test_tools_on_gemma3n_are_refused():
    from gemmaforge.models.tiny import tiny_tokenizer

    renderer = RowRenderer(DataConfig(), GEMMA3N, tiny_tokenizer("gemma3n"))
    row = {"messages": OPENAI_TOOL_CHAT[1:], "tools": TOOLS}
    with pytest.raises(UserError, match="gemma3n has no tool-calling tokens"):
        renderer(Record(row, "t.jsonl", 1))
