"""Reading JSONL / CSV rows, and the errors bad files give (file, line and fix named)."""

from __future__ import annotations

import hashlib
import json

import pytest

from gemmaforge.data.read.records import MAX_PROBLEMS, read_records
from gemmaforge.errors import UserError


def write(tmp_path, name, content):
    path = tmp_path / name
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def error_of(path) -> str:
    with pytest.raises(UserError) as info:
        read_records(path)
    return str(info.value)


def test_jsonl_rows_carry_file_line_and_hash(tmp_path):
    text = '{"a": 1}\n\n{"a": 2}\r\n'
    path = write(tmp_path, "d.jsonl", text)
    data = read_records(path)
    assert [(r.row, r.line) for r in data.records] == [({"a": 1}, 1), ({"a": 2}, 3)]
    assert data.records[1].where == f"{path}:3"
    assert data.fingerprint == "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def test_csv_rows_start_lines_with_multiline_fields(tmp_path):
    text = '\ufeffprompt,response\nhi,"two\nlines"\n\n"a, b",c\n'
    data = read_records(write(tmp_path, "d.csv", text))
    # The byte-order mark is not part of the first column name.
    assert [(r.row, r.line) for r in data.records] == [
        ({"prompt": "hi", "response": "two\nlines"}, 2),
        ({"prompt": "a, b", "response": "c"}, 5),
    ]


def test_tsv_uses_tabs(tmp_path):
    data = read_records(write(tmp_path, "d.tsv", "prompt\tresponse\na,b\tc\n"))
    assert data.records[0].row == {"prompt": "a,b", "response": "c"}


def test_missing_file(tmp_path):
    message = error_of(tmp_path / "nope.jsonl")
    assert "nope.jsonl: file not found" in message
    assert "Fix: check the path" in message


def test_unsupported_extension(tmp_path):
    message = error_of(write(tmp_path, "d.txt", "hi"))
    assert "unsupported file type '.txt'" in message
    assert ".jsonl" in message


def test_malformed_json_lines_all_reported_once(tmp_path):
    path = write(tmp_path, "d.jsonl", '{"a": 1}\n{"a": \n{"a": 3}\n[1, 2]\n')
    with pytest.raises(UserError) as info:
        read_records(path)
    problems = info.value.problems
    assert len(problems) == 2
    assert problems[0].startswith(
        f"{path}:2: not valid JSON (Expecting value at column 7, the end of the line: the "
        "object is cut short"
    )
    assert "Fix:" in problems[0]
    assert problems[1].startswith(f"{path}:4: expected a JSON object, got list")


def test_json_errors_give_the_file_column_not_the_parser_line(tmp_path):
    path = write(tmp_path, "d.jsonl", '{"a": 1}\n{"a": 1 "b": 2}\n{"a": 1,\n')
    with pytest.raises(UserError) as info:
        read_records(path)
    first, second = info.value.problems
    assert first.startswith(f"{path}:2: not valid JSON (Expecting ',' delimiter at column 9)")
    assert second.startswith(f"{path}:3: not valid JSON (Expecting property name")
    assert "at column 9, the end of the line" in second
    assert "line 2 column" not in first + second


def test_json_array_in_a_jsonl_file_gets_a_hint(tmp_path):
    message = error_of(write(tmp_path, "d.jsonl", '[{"a": 1},\n{"a": 2}]\n'))
    assert "not one JSON array" in message


def test_json_files_hold_an_array_an_object_or_json_lines(tmp_path):
    rows = read_records(write(tmp_path, "a.json", '[{"a": 1},\n {"a": 2}\n]\n')).records
    assert [(r.row, r.line) for r in rows] == [({"a": 1}, 1), ({"a": 2}, 2)]
    one = read_records(write(tmp_path, "o.json", '{\n  "a": 1,\n  "b": [2]\n}\n')).records
    assert [r.row for r in one] == [{"a": 1, "b": [2]}]
    lines = read_records(write(tmp_path, "l.json", '{"a": 1}\n{"a": 2}\n')).records
    assert [(r.row, r.line) for r in lines] == [({"a": 1}, 1), ({"a": 2}, 2)]
    message = error_of(write(tmp_path, "b.json", '[{"a": 1}, 3]'))
    assert "b.json:2: item 2 of the JSON array is a int, not an object" in message


def test_non_utf8_names_each_line(tmp_path):
    content = b'{"text": "ok"}\n{"text": "caf\xe9"}\n{"text": "na\xefve"}\n'
    path = write(tmp_path, "d.jsonl", content)
    with pytest.raises(UserError) as info:
        read_records(path)
    problems = info.value.problems
    assert [p.split(": ")[0] for p in problems] == [f"{path}:2", f"{path}:3"]
    assert "byte 0xe9 at column 14 is not valid UTF-8" in problems[0]
    assert "re-encode the file as UTF-8" in problems[0]


def test_csv_wrong_column_count(tmp_path):
    path = write(tmp_path, "d.csv", "prompt,response\na,b\na,b,c\nx\n")
    with pytest.raises(UserError) as info:
        read_records(path)
    assert info.value.problems[0].startswith(
        f"{path}:3: row has 3 fields but the header has 2. Fix: quote fields"
    )
    assert info.value.problems[1].startswith(f"{path}:4: row has 1 fields")


def test_csv_bad_quoting(tmp_path):
    message = error_of(write(tmp_path, "d.csv", 'prompt,response\n"a"x,b\n'))
    assert "d.csv:2: not valid CSV" in message


def test_csv_duplicate_and_empty_header(tmp_path):
    message = error_of(write(tmp_path, "d.csv", "prompt,,prompt\na,b,c\n"))
    assert "d.csv:1: the header has an empty column name" in message
    assert "duplicate column names ['prompt']" in message


@pytest.mark.parametrize(("name", "content"), [("d.jsonl", "\n\n"), ("d.csv", "prompt,response\n")])
def test_empty_dataset(tmp_path, name, content):
    message = error_of(write(tmp_path, name, content))
    assert f"{name}: the file has no rows. Fix: add at least one example" in message


def test_problem_list_is_capped(tmp_path):
    lines = [json.dumps({"a": 1})] + ["{oops"] * (MAX_PROBLEMS + 5)
    with pytest.raises(UserError) as info:
        read_records(write(tmp_path, "d.jsonl", "\n".join(lines)))
    problems = info.value.problems
    assert len(problems) == MAX_PROBLEMS + 1
    assert problems[0].split(": ")[0].endswith("d.jsonl:2")
    assert problems[-1] == "... and 5 more"
