"""Config loading: precedence, value parsing, every problem reported at once, YAML round trip."""

from __future__ import annotations

import pytest

from gemmaforge.config import Config
from gemmaforge.config_load import config_fields, dump_config, field_help, load_config
from gemmaforge.errors import UserError


def write(tmp_path, text: str, name: str = "cfg.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def problems_of(*args, **kwargs) -> list[str]:
    with pytest.raises(UserError) as info:
        load_config(*args, **kwargs)
    return info.value.problems


def test_defaults_without_file():
    cfg = load_config(None)
    assert cfg == Config()
    assert cfg.model.name_or_path is None
    assert cfg.model.allow_download is False
    assert cfg.train.lr == 2e-4


def test_empty_file_and_empty_sections_give_defaults(tmp_path):
    assert load_config(write(tmp_path, "")) == Config()
    # A section whose fields are all commented out loads as null.
    assert load_config(write(tmp_path, "train:\n  # lr: 1e-3\nlora:\n")) == Config()


def test_precedence_flags_over_overrides_over_file_over_defaults(tmp_path):
    path = write(tmp_path, "train:\n  lr: 1.0e-3\n  seed: 1\n  batch_size: 2\n")
    cfg = load_config(
        path,
        ["train.lr=1e-4", "train.seed=2"],
        {"train.seed": 3, "train.batch_size": None, "lora.r": 4},
    )
    assert cfg.train.lr == 1e-4  # override beats file
    assert cfg.train.seed == 3  # flag beats override and file
    assert cfg.train.batch_size == 2  # a None flag was not given: the file wins
    assert cfg.lora.r == 4  # flag beats default
    assert cfg.train.epochs == 1.0  # default


def test_override_values_are_yaml(tmp_path):
    cfg = load_config(
        write(tmp_path, "model:\n  revision: main\n"),
        [
            "lora.targets=[q_proj,v_proj]",
            "model.revision=null",
            "lora.rslora=true",
            "train.lr=1e-4",
            "train.max_steps=1e3",
            "lora.dropout=0.05",
        ],
    )
    assert cfg.lora.targets == ["q_proj", "v_proj"]
    assert cfg.model.revision is None
    assert cfg.lora.rslora is True
    assert cfg.train.lr == pytest.approx(1e-4)
    assert cfg.train.max_steps == 1000
    assert cfg.lora.dropout == pytest.approx(0.05)


def test_text_fields_keep_the_raw_text():
    # YAML would read these as an int, a float and a bool; the fields hold text.
    cfg = load_config(None, ["model.revision=1234567", "data.train=1e5", "data.system_column=yes"])
    assert cfg.model.revision == "1234567"
    assert cfg.data.train == "1e5"
    assert cfg.data.system_column == "yes"
    # data.train also takes a list, written as YAML.
    cfg = load_config(None, ["data.train=[a.jsonl, s3://b/*.parquet]"])
    assert cfg.data.train == ["a.jsonl", "s3://b/*.parquet"]


def test_exponent_floats_in_files(tmp_path):
    # PyYAML alone reads `1e-4` as a string (YAML 1.1); we read it as a float.
    cfg = load_config(write(tmp_path, "train:\n  lr: 1e-4\n  weight_decay: 1E-2\n"))
    assert cfg.train.lr == pytest.approx(1e-4)
    assert cfg.train.weight_decay == pytest.approx(1e-2)


def test_every_problem_is_reported_at_once(tmp_path):
    path = write(
        tmp_path,
        "model:\n"
        "  dtype: fp16\n"  # line 2: not an allowed choice
        "train:\n"
        "  lrr: 1\n"  # line 4: typo
        "  max_seq_length: 64\n"  # line 5: belongs to data
        "  batch_size: 0\n"  # line 6: out of range
        "trian:\n"  # line 7: unknown section
        "  lr: 1\n",
    )
    problems = problems_of(
        path,
        ["train.epochs=abc", "nonsense", "data.formt=jsonl"],
        {"train.max_steps": 0},
    )
    expected = [
        f"{path}:2: model.dtype: invalid value 'fp16': must be 'auto', 'bf16' or 'fp32'",
        f"{path}:4: train.lrr: unknown key; did you mean train.lr?",
        f"{path}:5: train.max_seq_length: unknown key; did you mean data.max_seq_length?",
        f"{path}:6: train.batch_size: invalid value 0: must be greater than or equal to 1",
        f"{path}:7: trian: unknown section; did you mean train?",
        "command line: train.epochs: invalid value 'abc': must be a valid number",
        "command line: 'nonsense' is not a section.field=value override",
        "command line: data.formt: unknown key; did you mean data.format?",
        "command line: train.max_steps: invalid value 0: must be greater than or equal to 1",
    ]
    for text in expected:
        assert any(p.startswith(text) for p in problems), (text, problems)
    assert len(problems) == len(expected)
    joined = "\n".join(problems)
    assert "pydantic" not in joined
    assert "Input should" not in joined


def test_unknown_key_without_a_close_match_lists_the_valid_ones():
    (msg,) = problems_of(None, ["lora.zzzzzz=1"])
    assert msg.startswith("command line: lora.zzzzzz: unknown key; valid keys in lora: r, alpha,")
    (msg,) = problems_of(None, ["zzzzzz.q=1"])
    assert "zzzzzz: unknown section; valid sections: model, data, lora, train" in msg


def test_list_items_are_named_by_index():
    (msg,) = problems_of(None, ["lora.targets=[q_proj, [1]]"])
    assert msg.startswith("command line: lora.targets.1: invalid value [1]: must be a valid string")


def test_unparseable_override_value():
    (msg,) = problems_of(None, ["lora.targets=[q_proj"])
    assert msg.startswith("command line: lora.targets: cannot parse value '[q_proj'")


def test_missing_file_is_reported_with_the_command_line_problems(tmp_path):
    missing = str(tmp_path / "nope.yaml")
    problems = problems_of(missing, ["train.lr=-1"])
    assert problems[0] == f"{missing}: config file not found. Fix: check the path"
    assert problems[1].startswith("command line: train.lr: invalid value -1: must be greater")


def test_unreadable_file(tmp_path):
    (msg,) = problems_of(str(tmp_path))
    assert msg == f"{tmp_path}: is a directory, not a YAML config file"
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00bad")
    (msg,) = problems_of(str(binary))
    assert msg.startswith(f"{binary}: cannot read config file")


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = write(tmp_path, "train:\n  lr: 1\n  seed: [1, 2\n")
    (msg,) = problems_of(path)
    assert msg.startswith(f"{path}:4: invalid YAML: expected ',' or ']'")
    assert "(while parsing a flow sequence at line 3)" in msg
    path = write(tmp_path, "train:\n  lr: 1\n   seed: 2: 3\n")
    (msg,) = problems_of(path)
    assert msg == f"{path}:3: invalid YAML: mapping values are not allowed here"


def test_top_level_must_be_a_mapping(tmp_path):
    (msg,) = problems_of(write(tmp_path, "- train\n- lora\n"))
    assert msg.endswith(
        "the top level must be a mapping of sections (model, data, lora, train), not a list"
    )
    path = write(tmp_path, "train: 5\n")
    assert problems_of(path, ["train.lr=1"]) == [
        "command line: cannot set train.lr: train is not a mapping",
        f"{path}:1: train: must be a mapping of train.* settings, not 5",
    ]


def test_section_that_is_not_a_mapping(tmp_path):
    path = write(tmp_path, "lora: 8\n")
    (msg,) = problems_of(path)
    assert msg == f"{path}:1: lora: must be a mapping of lora.* settings, not 8"


def test_duplicate_keys_are_an_error(tmp_path):
    path = write(tmp_path, "lora:\n  r: 8\n  r: 4\n")
    (msg,) = problems_of(path)
    assert msg == f"{path}:3: lora.r: duplicate key (also at {path}:2). Fix: keep one"


def test_command_line_replaces_file_keys_in_messages(tmp_path):
    # The override replaces the whole file value, so the error is the command line's.
    path = write(tmp_path, "lora:\n  targets: [q_proj]\n")
    (msg,) = problems_of(path, ["lora.targets=5"])
    assert msg.startswith("command line: lora.targets: invalid value 5: must be a valid list")


def test_dump_round_trips_and_keeps_declared_order(tmp_path):
    cfg = load_config(
        None,
        ["lora.targets=[q_proj,v_proj]", "train.lr=3e-5", "model.revision=123", "data.train=a b"],
        {"train.max_steps": 7, "train.resume": True},
    )
    text = dump_config(cfg)
    assert load_config(write(tmp_path, text)) == cfg
    top = [line.split(":")[0] for line in text.splitlines() if not line.startswith(" ")]
    assert top == list(Config.model_fields)
    train_keys = [k.split(".")[1] for k in config_fields() if k.startswith("train.")]
    dumped_train = text.split("train:\n", 1)[1]
    assert [line.split(":")[0].strip() for line in dumped_train.splitlines()] == train_keys


def test_dump_includes_every_default():
    text = dump_config(Config())
    for key in config_fields():
        assert f"  {key.split('.')[1]}:" in text


def test_field_help_reads_the_docstring():
    assert field_help("train.lr") == "Peak learning rate."
    # Multi-line docstrings collapse to one line.
    assert "\n" not in field_help("lora.targets")
    assert field_help("lora.targets").startswith("Linear layer names to adapt")
    with pytest.raises(UserError, match=r"train\.lrr: unknown key; did you mean train\.lr\?"):
        field_help("train.lrr")


def test_every_field_has_help():
    assert all(field_help(key) for key in config_fields())


def test_relative_paths_in_a_yaml_file_resolve_against_its_folder(tmp_path, monkeypatch):
    """A config names its data and base beside it; it means the same from any folder. Paths
    that are not there (hub ids, files from the working directory) and URLs stay as written,
    and so does output_dir (a run folder is made where the command runs, like --output)."""
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "data" / "train.jsonl").write_text("{}\n")
    (project / "data" / "more-1.jsonl").write_text("{}\n")
    (project / "base").mkdir()
    path = write(
        project,
        "model:\n  name_or_path: base\n"
        "data:\n  train: [data/train.jsonl, 'data/more-*.jsonl', 's3://b/x.jsonl']\n"
        "  validation: val.jsonl\n"
        "train:\n  output_dir: runs/x\n",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(path)
    assert cfg.model.name_or_path == str(project / "base")
    assert cfg.data.train == [
        str(project / "data" / "train.jsonl"),
        str(project / "data" / "more-*.jsonl"),
        "s3://b/x.jsonl",
    ]
    assert cfg.data.validation == "val.jsonl"
    assert cfg.train.output_dir == "runs/x"
    # Command-line values stay relative to the working directory.
    assert load_config(path, ["data.validation=v2.jsonl"]).data.validation == "v2.jsonl"
    hub = write(project, "model:\n  name_or_path: google/gemma-3-270m\n", "hub.yaml")
    assert load_config(hub).model.name_or_path == "google/gemma-3-270m"


def test_unknown_keys_are_matched_by_meaning_before_spelling(tmp_path):
    """train.learning_rate is spelled like train.warmup_ratio but means train.lr."""
    path = write(
        tmp_path,
        "train:\n  learning_rate: 1e-4\n  num_epochs: 2\n"
        "lora:\n  lora_alpha: 16\nsequence_len: 512\n",
    )
    assert sorted(problems_of(path)) == [
        f"{path}:2: train.learning_rate: unknown key; did you mean train.lr?",
        f"{path}:3: train.num_epochs: unknown key; did you mean train.epochs?",
        f"{path}:5: lora.lora_alpha: unknown key; did you mean lora.alpha?",
        f"{path}:6: sequence_len: unknown section; did you mean data.max_seq_length?",
    ]
