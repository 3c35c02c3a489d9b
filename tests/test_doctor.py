"""`gemmaforge doctor`: what it says about this machine matches torch, and a planted bad version
pair (torch/torchvision, transformers out of range) is reported with its fix and exit 1."""

from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

from gemmaforge.cli import app
from gemmaforge.models.doctor import (
    VERSIONS_VARIABLE,
    blocking,
    check_disk,
    check_versions,
    installed_versions,
    requirements,
    run_checks,
)


def by_name(checks) -> dict:
    return {check.name: check for check in checks}


def test_reports_this_machine_as_torch_sees_it(tmp_path):
    checks = by_name(run_checks(tmp_path / "runs"))
    on_gpu = torch.cuda.is_available() or torch.backends.mps.is_available()
    assert checks["device"].detail.startswith("CPU: ") is not on_gpu
    if not on_gpu:
        # torch's own CPU feature probes: native bf16 is AVX512-BF16 or AMX.
        native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        assert (checks["bf16"].status == "ok") is native
        assert checks["bf16"].detail == f"{'supported' if native else 'not supported'} on cpu"
    assert checks["torch"].detail.startswith(torch.__version__.split("+")[0])
    assert checks["torch/torchvision"].status == "ok"
    assert "GiB free" in checks["memory"].detail
    assert {"disk: output folder", "disk: hub cache", "disk: media cache"} <= set(checks)


def test_planted_bad_pair_and_range_are_reported():
    versions = {**installed_versions(), "torchvision": "0.21.0", "transformers": "6.1.0"}
    checks = by_name(check_versions(versions, requirements()))
    pair = checks["torch/torchvision"]
    assert pair.status == "fail"
    assert "torchvision 0.21.0 does not match torch" in pair.detail
    expected = f"0.{int(torch.__version__.split('.')[1]) + 15}"
    assert pair.fix.startswith(f"pip install 'torchvision=={expected}.*'")
    assert checks["transformers"].status == "fail"
    assert "<6" in checks["transformers"].fix
    assert blocking(list(checks.values()))
    good = by_name(check_versions(installed_versions(), requirements()))
    assert not blocking(list(good.values()))


def test_missing_package_and_full_disk_block(tmp_path):
    checks = check_versions({"torch": "2.5.0", "torchvision": "0.20.0"}, requirements())
    assert by_name(checks)["peft"].status == "fail"
    assert by_name(checks)["torch/torchvision"].status == "ok"
    # No disk has a petabyte free: the threshold makes the check fail, naming the folder.
    disk = check_disk({"output folder": tmp_path / "not" / "yet"}, fail_below=2**20)
    assert disk[0].status == "fail" and str(tmp_path) in disk[0].fix


def test_cli_exit_codes(tmp_path, monkeypatch):
    runner = CliRunner()
    result = runner.invoke(app, ["doctor", "--output", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    assert {c["name"] for c in json.loads(result.output)} >= {"device", "bf16", "offline"}
    monkeypatch.setenv(VERSIONS_VARIABLE, json.dumps({"torchvision": "0.1.0"}))
    result = runner.invoke(app, ["doctor", "--output", str(tmp_path)])
    assert result.exit_code == 1
    assert "torchvision 0.1.0 does not match torch" in result.output
    assert "Something blocks training" in result.output
