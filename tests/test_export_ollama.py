"""The Ollama Modelfile follows the family table: its turn tokens, role names, system-prompt
placement and stop tokens; the `ollama` export puts it next to the GGUF it names."""

from __future__ import annotations

import re

import pytest

from gemmaforge.export import export
from gemmaforge.export.ollama import modelfile
from gemmaforge.models.families import FAMILIES


def parse(text: str) -> tuple[list[tuple[str, str]], str]:
    """(instructions other than TEMPLATE, the TEMPLATE body) of a Modelfile."""
    template = re.search(r'^TEMPLATE """(.*?)"""$', text, re.S | re.M)
    rest = text[: template.start()] + text[template.end() :]
    lines = [line.split(" ", 1) for line in rest.splitlines() if line.strip()]
    return [(a, b) for a, b in lines], template[1]


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_modelfile_follows_the_family_table(family):
    instructions, template = parse(modelfile(family, "model.gguf"))
    assert instructions[0] == ("FROM", "./model.gguf")
    stops = [v.split(" ", 1)[1] for k, v in instructions if k == "PARAMETER" and "stop" in v]
    assert stops == [f'"{t}"' for t in family.stop_tokens]
    params = dict(v.split(" ", 1) for k, v in instructions if k == "PARAMETER")
    assert float(params["temperature"]) == 1.0 and params["top_k"] == "64"

    # Each turn opens with turn_start + role + newline and closes with turn_end + newline.
    assert f"{family.turn_start}user\n" in template
    assert template.count(f"{family.turn_start}{family.assistant_role}\n") == 2  # header, reply
    assert template.count(f"{family.turn_end}\n") == 2 + family.system_turn
    assert family.bos not in template  # the GGUF's add_bos_token adds it
    assert template.count("{{") == template.count("}}")
    if family.system_turn:
        assert f"{family.turn_start}system\n{{{{ $.System }}}}{family.turn_end}" in template
    else:  # the system prompt opens the first user turn, then a blank line
        assert "{{ $system }}\n\n" in template and "system\n" not in template


def test_ollama_export_writes_the_gguf_and_modelfile(tiny_run, tmp_path):
    out = export(tiny_run("plain"), "ollama", tmp_path / "ollama")
    assert sorted(p.name for p in out.iterdir()) == ["Modelfile", "model.gguf"]
    instructions, template = parse((out / "Modelfile").read_text())
    assert (out / instructions[0][1]).resolve() == (out / "model.gguf").resolve()
    assert "<start_of_turn>model\n" in template
