"""Messages a new user reads: help that is not cut off, and lines that say what they mean."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from gemmaforge.cli import app
from gemmaforge.config import DataConfig
from gemmaforge.train.finish import padding_line

VERBS = [
    ["train"],
    ["eval"],
    ["generate"],
    ["chat"],
    ["serve"],
    ["export"],
    ["plan"],
    ["data", "check"],
    ["tiny"],
    ["quickstart"],
]


@pytest.mark.parametrize("verb", VERBS, ids=lambda v: " ".join(v))
def test_help_is_not_cut_off_without_a_terminal(verb):
    """Option names, env vars and help text are whole: no `--allow-media-pa…`."""
    result = CliRunner().invoke(app, [*verb, "--help"])
    assert result.exit_code == 0, result.output
    assert "…" not in result.stdout


def test_padding_line_says_what_it_means():
    line = padding_line(0.041, DataConfig())
    assert "4.1% of the token positions the model computed were padding" in line
    assert "packing" not in line  # too little to be worth a hint
    assert "data.packing=true" in padding_line(0.35, DataConfig())
    assert "data.packing=true" not in padding_line(0.35, DataConfig(packing=True))
