"""Is this machine ready to train? The checks behind `gemmaforge doctor`: the device (CUDA, MPS
or CPU), bf16, free memory, library versions and known-bad pairs, offline state, and disk space
where runs and caches go. Each check says what it found and, for a problem, the fix.

Checks take their facts as inputs (versions, paths), so a test can plant a bad pair; `run_checks`
gathers the real ones. A "fail" blocks training (the verb exits 1); a "warn" does not.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from gemmaforge.models.load import bf16_supported, resolve_device

GIB = 2**30

# torchvision is built against one torch minor: 2.N pairs with 0.(N+15) (2.4 -> 0.19, ...,
# 2.14 -> 0.29). Another pairing fails at import or with missing operators (torchvision::nms).
TORCHVISION_FOR_TORCH = {f"2.{n}": f"0.{n + 15}" for n in range(0, 30)}

REQUIREMENTS = {
    "torch": ">=2.4",
    "transformers": ">=5.20,<6",
    "peft": ">=0.21",
    "accelerate": ">=1.10",
}
"""Version ranges gemmaforge needs (pyproject.toml); the installed package's metadata wins."""

PACKAGES = ("torch", "torchvision", "transformers", "peft", "accelerate")
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
VERSIONS_VARIABLE = "GEMMAFORGE_DOCTOR_VERSIONS"
"""JSON {package: version} replacing installed versions: for testing the doctor itself."""


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    """ok, info, warn or fail (fail blocks training)."""
    detail: str
    fix: str | None = None


def minor(version: str) -> str:
    return ".".join(version.split("+")[0].split(".")[:2])


def installed_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for package in PACKAGES:
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = None
    planted = os.environ.get(VERSIONS_VARIABLE)
    if planted:
        out.update(json.loads(planted))
    return out


def requirements() -> dict[str, str]:
    """Version ranges from gemmaforge's installed metadata (pyproject), else REQUIREMENTS."""
    from importlib.metadata import PackageNotFoundError, requires

    from packaging.requirements import Requirement

    ranges = dict(REQUIREMENTS)
    try:
        for line in requires("gemmaforge") or []:
            req = Requirement(line)
            if req.name in PACKAGES and str(req.specifier) and not req.marker:
                ranges[req.name] = str(req.specifier)
    except PackageNotFoundError:
        pass
    return ranges


def check_versions(versions: dict[str, str | None], ranges: dict[str, str]) -> list[Check]:
    """Installed versions against gemmaforge's ranges and the torch/torchvision pairing."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    checks = []
    for package in PACKAGES:
        found = versions.get(package)
        wanted = ranges.get(package)
        if found is None:
            checks.append(
                Check(
                    package,
                    "fail",
                    "not installed",
                    f"pip install '{package}{wanted or ''}'",
                )
            )
            continue
        try:
            fits = wanted is None or Version(found) in SpecifierSet(wanted)
        except InvalidVersion:
            fits = False
        if fits:
            checks.append(Check(package, "ok", found + (f" (needs {wanted})" if wanted else "")))
        else:
            checks.append(
                Check(
                    package,
                    "fail",
                    f"{found} is outside the supported range {wanted}",
                    f"pip install '{package}{wanted}'",
                )
            )
    torch_version, vision = versions.get("torch"), versions.get("torchvision")
    if torch_version and vision:
        expected = TORCHVISION_FOR_TORCH.get(minor(torch_version))
        if expected and minor(vision) != expected:
            checks.append(
                Check(
                    "torch/torchvision",
                    "fail",
                    f"torchvision {vision} does not match torch {torch_version} "
                    f"(torch {minor(torch_version)} needs torchvision {expected}.x): image "
                    "models fail to load",
                    f"pip install 'torchvision=={expected}.*' (keeps torch {torch_version})",
                )
            )
        elif expected:
            checks.append(Check("torch/torchvision", "ok", f"{torch_version} / {vision} pair"))
    return checks


def check_device() -> list[Check]:
    """The device training picks (model.device=auto), its bf16 support and free memory."""
    import platform

    import torch

    device = resolve_device("auto")
    if device.type == "cuda":
        name = f"CUDA: {torch.cuda.get_device_name(device)} (torch CUDA {torch.version.cuda})"
        total = torch.cuda.get_device_properties(device).total_memory
    elif device.type == "mps":
        name = "MPS: Apple GPU"
        total = torch.mps.recommended_max_memory()
    else:
        name = f"CPU: {_cpu_name() or platform.machine()}, {torch.get_num_threads()} threads"
        import psutil

        total = psutil.virtual_memory().total
    if device.type == "cpu":
        fix = "training works on the CPU, slowly: fine for small models and tests"
        checks = [Check("device", "info", name + "; no GPU found", fix)]
    else:
        checks = [Check("device", "ok", name)]
    bf16 = bf16_supported(device)
    checks.append(
        Check(
            "bf16",
            "ok" if bf16 else "warn",
            f"{'supported' if bf16 else 'not supported'} on {device.type}",
            None if bf16 else "training runs in fp32: about twice the memory, slower",
        )
    )
    free = _available_bytes(device)
    status, fix = "ok", None
    if free < 2 * GIB:
        status, fix = (
            "fail",
            "close other programs, or train a smaller model (see `gemmaforge plan`)",
        )
    elif free < 8 * GIB:
        status, fix = "warn", "enough for small models only: `gemmaforge plan` shows what fits"
    checks.append(
        Check("memory", status, f"{free / GIB:.1f} GiB free of {total / GIB:.1f} GiB", fix)
    )
    return checks


def _available_bytes(device) -> int:
    """Memory free for training on `device`: perf/measure.py's rule, restated here because
    perf/ builds on models/ and may not be imported from it."""
    import psutil
    import torch

    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "mps":
        return torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory()
    return psutil.virtual_memory().available


def _cpu_name() -> str | None:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="ignore").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return None


def check_offline(env: dict[str, str]) -> list[Check]:
    """Whether the hub libraries may reach the network (gemmaforge itself never downloads
    unless model.allow_download=true)."""
    on = [name for name in OFFLINE_VARIABLES if env.get(name, "").lower() in ("1", "true", "yes")]
    if on:
        return [Check("offline", "ok", f"offline ({', '.join(on)} set)")]
    return [
        Check(
            "offline",
            "info",
            "hub libraries may go online; gemmaforge downloads only with model.allow_download",
            "export HF_HUB_OFFLINE=1 to make sure nothing is fetched",
        )
    ]


def cache_dirs(env: dict[str, str]) -> dict[str, Path]:
    home = Path.home()
    xdg = Path(env.get("XDG_CACHE_HOME") or home / ".cache")
    return {
        "hub cache": Path(
            env.get("HF_HUB_CACHE") or Path(env.get("HF_HOME") or xdg / "huggingface") / "hub"
        ),
        "media cache": xdg / "gemmaforge",
    }


def check_disk(places: dict[str, Path], fail_below: float = 1.0, warn_below: float = 10.0):
    """Free space where each folder is (or would be created), in GiB thresholds."""
    checks = []
    for what, path in places.items():
        existing = Path(path).absolute()
        while not existing.exists():
            existing = existing.parent
        free = shutil.disk_usage(existing).free / GIB
        status, fix = "ok", None
        if free < fail_below:
            status, fix = "fail", f"free space on the disk of {existing}, or use another folder"
        elif free < warn_below:
            status = "warn"
            fix = "checkpoints and merged exports of larger models need tens of GiB"
        checks.append(Check(f"disk: {what}", status, f"{free:.1f} GiB free at {path}", fix))
    return checks


def run_checks(output: Path, versions: dict[str, str | None] | None = None) -> list[Check]:
    """Every check, on this machine's facts (or the given `versions`)."""
    env = dict(os.environ)
    checks = check_versions(versions or installed_versions(), requirements())
    if all(c.status != "fail" for c in checks if c.name in ("torch", "torch/torchvision")):
        checks += check_device()
    checks += check_offline(env)
    checks += check_disk({"output folder": output, **cache_dirs(env)})
    return checks


def blocking(checks: list[Check]) -> bool:
    return any(check.status == "fail" for check in checks)


def as_dicts(checks: list[Check]) -> list[dict]:
    return [asdict(check) for check in checks]
