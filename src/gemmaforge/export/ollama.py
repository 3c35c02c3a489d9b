"""`ollama`: a folder `ollama create NAME -f Modelfile` imports: the merged GGUF + a Modelfile.

The Modelfile's TEMPLATE (Go template syntax, as Ollama renders it) produces exactly the
prompt gemmaforge trained on, from the family table: turn tokens, the assistant's role name,
and where the system prompt goes (its own turn for Gemma 4; the start of the first user turn,
followed by a blank line, for Gemma 3 / 3n). `<bos>` is not in the template: the GGUF asks
the runtime to add it. Each family stop token is a `PARAMETER stop`, so a reply ends at the
end-of-turn token the adapter learned to emit. Sampling follows Google's recommendation for
Gemma (temperature 1.0, top_k 64, top_p 0.95); lower the temperature for extraction tasks.
"""

from __future__ import annotations

from pathlib import Path

from gemmaforge.export import gguf_model
from gemmaforge.export.common import Job
from gemmaforge.models.families import Family, family_by_name
from gemmaforge.runs import Run

LOADS_BASE = True
SAMPLING = {"temperature": 1.0, "top_k": 64, "top_p": 0.95}


def problems(run: Run) -> list[str]:
    """Ollama runs GGUF files, so it holds what the gguf format holds."""
    return gguf_model.problems(run, "ollama")


def write(job: Job, out: Path) -> None:
    gguf_model.write(job, out)
    text = modelfile(family_by_name(job.run.family), gguf_model.FILE_NAME)
    (out / "Modelfile").write_text(text, encoding="utf-8")


def modelfile(family: Family, gguf_name: str) -> str:
    """The Modelfile text for a GGUF of `family` next to it."""
    lines = [
        f"FROM ./{gguf_name}",
        f'TEMPLATE """{template(family)}"""',
        *(f'PARAMETER stop "{token}"' for token in family.stop_tokens),
        *(f"PARAMETER {name} {value}" for name, value in SAMPLING.items()),
    ]
    return "\n".join(lines) + "\n"


def template(family: Family) -> str:
    """The Go chat template for `family`: Ollama's `.System` and `.Messages` in our turn format.

    A conversation that ends with a user turn gets the assistant header, so the model replies;
    one that ends with an assistant message is left open, so the model continues it.
    """
    start, end, model = family.turn_start, family.turn_end, family.assistant_role
    if family.system_turn:
        system = f"{{{{- if $.System }}}}{start}system\n{{{{ $.System }}}}{end}\n{{{{ end }}}}\n"
        user = "{{ $m.Content }}"
    else:
        # No system turn: the system prompt opens the first user turn, then a blank line.
        system = "{{- $system := $.System }}\n"
        user = '{{ if $system }}{{ $system }}\n\n{{ $system = "" }}{{ end }}{{ $m.Content }}'
    return (
        system + "{{- range $i, $m := .Messages }}\n"
        "{{- $last := eq (len (slice $.Messages $i)) 1 }}\n"
        f'{{{{- if eq $m.Role "user" }}}}{start}user\n{user}{end}\n'
        f"{{{{ if $last }}}}{start}{model}\n{{{{ end }}}}\n"
        f'{{{{- else if eq $m.Role "assistant" }}}}{start}{model}\n'
        f"{{{{ $m.Content }}}}{{{{ if not $last }}}}{end}\n{{{{ end }}}}\n"
        "{{- end }}\n"
        "{{- end }}"
    )
