"""`gemmaforge export` refuses what it cannot do, with the reason and the fix (exit code 2), and
never leaves a half-written or clobbered output folder."""

from __future__ import annotations

import os

import pytest
from typer.testing import CliRunner

from gemmaforge.cli import app
from gemmaforge.errors import UserError
from gemmaforge.export import FORMATS, export
from gemmaforge.export.common import staged_output

runner = CliRunner()


def test_cli_exports_and_reports_the_folder(tiny_run, tmp_path):
    result = runner.invoke(
        app, ["export", str(tiny_run("plain")), "-f", "peft", "-o", str(tmp_path / "o")]
    )
    assert result.exit_code == 0, result.output
    assert f"Wrote peft export to {tmp_path / 'o'}" in result.output
    assert (tmp_path / "o" / "adapter_model.safetensors").is_file()


def test_unknown_format_and_type_are_both_reported(tiny_run, tmp_path):
    args = ["export", str(tiny_run("plain")), "-f", "onnx", "-o", str(tmp_path / "o")]
    result = runner.invoke(app, [*args, "--gguf-type", "q4_k"])
    assert result.exit_code == 2
    assert "unknown format 'onnx'" in result.output
    assert f"choose one of {', '.join(FORMATS)}" in result.output
    assert "unknown type 'q4_k'" in result.output
    assert not (tmp_path / "o").exists()


def test_unknown_run_folder(tmp_path):
    result = runner.invoke(
        app, ["export", str(tmp_path / "nope"), "-f", "peft", "-o", str(tmp_path / "o")]
    )
    assert result.exit_code == 2
    assert "no such run folder" in result.output


def test_a_non_empty_output_is_kept_unless_overwrite(tiny_run, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match=r"already exists and is not empty.*--overwrite"):
        export(tiny_run("plain"), "peft", out)
    assert (out / "notes.txt").read_text() == "mine"

    export(tiny_run("plain"), "peft", out, overwrite=True)
    assert not (out / "notes.txt").exists()
    assert (out / "adapter_config.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temp or old folder left


def test_an_empty_output_folder_is_used(tiny_run, tmp_path):
    (tmp_path / "out").mkdir()
    assert (export(tiny_run("plain"), "peft", tmp_path / "out") / "README.md").is_file()


def test_output_inside_the_run_is_refused(tiny_run):
    run = tiny_run("plain")
    with pytest.raises(UserError, match="overlaps it"):
        export(run, "peft", run / "export", overwrite=True)
    with pytest.raises(UserError, match="overlaps it"):
        export(run, "peft", run.parent, overwrite=True)
    assert (run / "adapter").is_dir()


def test_another_base_is_refused_with_both_hashes(tiny_run, tmp_path):
    from gemmaforge.models.tiny import make_tiny
    from gemmaforge.runs import open_run

    other = make_tiny("gemma3", tmp_path / "other", seed=1)
    run = open_run(tiny_run("plain"))
    for fmt in ("peft", "merged"):
        with pytest.raises(UserError) as err:
            export(run.dir, fmt, tmp_path / fmt, base=str(other))
        assert run.base_sha256 in str(err.value) and "has sha256" in str(err.value)
        assert not (tmp_path / fmt).exists()


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), staged_output(out) as folder:
        (folder / "half.bin").write_bytes(b"x")
        raise RuntimeError("disk full")
    assert sorted(os.listdir(tmp_path)) == ["out"]
    assert os.listdir(out) == ["old.txt"]
