"""The docs say what exists: the configuration page matches the config tree."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_configuration_page_is_up_to_date():
    spec = importlib.util.spec_from_file_location("config_doc", ROOT / "tools" / "config_doc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert page == module.render(), "run: python tools/config_doc.py"
