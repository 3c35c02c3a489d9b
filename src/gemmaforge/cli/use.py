"""The verbs that use a trained result: `eval`, `generate`, `chat` and `serve`.

`cli/__init__.py` registers them on the app. Each verb is a few lines that call the library;
torch, transformers and the server stack are imported inside verbs only, so `--help` stays
instant.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Literal

import typer

from gemmaforge.config_load import COMMAND_LINE
from gemmaforge.errors import UserError, problem
from gemmaforge.infer.session import open_session
from gemmaforge.infer.stream import Sampling

Device = Literal["auto", "cpu", "cuda", "mps"]
TaskName = Literal[
    "auto",
    "exact",
    "tool_calls",
    "classification",
    "json",
    "transcription",
    "translation",
    "summary",
    "perplexity",
    "preference",
]

ModelOpt = Annotated[
    str | None,
    typer.Option(
        help="Base model: a local folder or .gguf file (a run folder's adapter implies it).",
        show_default=False,
    ),
]
AdapterOpt = Annotated[
    str | None,
    typer.Option(
        help="A run folder (implies its base model), a PEFT adapter folder, or hub://NS/NAME@V.",
        show_default=False,
    ),
]
SystemOpt = Annotated[str | None, typer.Option(help="System prompt.", show_default=False)]
MaxNewTokensOpt = Annotated[int, typer.Option(min=1, help="Longest reply, in tokens.")]
TemperatureOpt = Annotated[
    float, typer.Option(min=0.0, help="Sampling temperature; 0 is greedy (deterministic).")
]
TopPOpt = Annotated[
    float,
    typer.Option(min=0.01, max=1.0, help="Nucleus sampling mass (1: off)."),
]
TopKOpt = Annotated[
    int, typer.Option(min=0, help="Sample among the k most likely tokens only (0: off).")
]
SeedOpt = Annotated[
    int | None,
    # torch takes int64 seeds; a bigger one is refused here, not inside the generation thread.
    typer.Option(
        min=-(2**63),
        max=2**63 - 1,
        help="Seed for sampling (temperature > 0).",
        show_default=False,
    ),
]
DeviceOpt = Annotated[Device, typer.Option(help="Device to run on; auto: cuda, mps, then cpu.")]


def _media_option(what: str):
    """A repeatable --image/--audio path; a missing file is reported before the model loads
    (exists=True), not after a long wait."""
    return Annotated[
        list[Path] | None,
        typer.Option(
            help=f"{what} for the prompt (repeatable; multimodal models).",
            exists=True,
            dir_okay=False,
            show_default=False,
        ),
    ]


ImageOpt = _media_option("An image")
AudioOpt = _media_option("An audio clip")


def evaluate(
    run: Annotated[Path, typer.Argument(help="Run folder (the --output of train).")],
    data: Annotated[
        str | None,
        typer.Option(help="Rows to score (default: what training held out).", show_default=False),
    ] = None,
    task: Annotated[
        TaskName,
        typer.Option(
            help="Metrics; auto: tool_calls if the replies call tools, json for JSON "
            "references, classification for a small label set, else exact."
        ),
    ] = "auto",
    max_new_tokens: Annotated[
        int | None,
        typer.Option(
            min=1, help="Longest reply (default: fits the references).", show_default=False
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Prompts generated together.")] = 16,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Score only the first N rows.", show_default=False)
    ] = None,
    device: DeviceOpt = "auto",
    model: Annotated[
        str | None,
        typer.Option(
            help="Base model path, if it moved since training and cannot be found by hash.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Score the adapter against its base model on held-out data; write RUN/eval/."""
    from gemmaforge.eval.evaluate import evaluate as run_eval
    from gemmaforge.eval.evaluate import summary_line

    report = run_eval(run, data, task, max_new_tokens, batch_size, limit, device, base=model)
    typer.echo(summary_line(report))


def generate(
    prompt: Annotated[
        str | None,
        typer.Argument(
            help="The prompt; read from standard input if left out or '-'.", show_default=False
        ),
    ] = None,
    model: ModelOpt = None,
    adapter: AdapterOpt = None,
    system: SystemOpt = None,
    max_new_tokens: MaxNewTokensOpt = 512,
    temperature: TemperatureOpt = 0.0,
    top_p: TopPOpt = 1.0,
    top_k: TopKOpt = 0,
    seed: SeedOpt = None,
    image: ImageOpt = None,
    audio: AudioOpt = None,
    device: DeviceOpt = "auto",
    tools: Annotated[
        Path | None,
        typer.Option(
            help="A JSON file of tool declarations (OpenAI style; Gemma 4): the reply's calls "
            'follow it as a {"tool_calls": [...]} line.',
            show_default=False,
        ),
    ] = None,
) -> None:
    """Generate one reply, streamed to stdout as it is produced."""
    if prompt is None or prompt == "-":
        if sys.stdin.isatty():
            raise UserError(
                problem(COMMAND_LINE, "no prompt given", "pass it as an argument or pipe it in")
            )
        prompt = sys.stdin.read()
    from gemmaforge.infer.chat import generate_once

    session, name = _session(model, adapter, device)
    media = [("image", str(path)) for path in image or []]
    media += [("audio", str(path)) for path in audio or []]
    sampling = Sampling(max_new_tokens, temperature, top_p=top_p, top_k=top_k, seed=seed)
    declared = _tools_file(tools) if tools else None
    generate_once(session, name, prompt, system, sampling, media=media, tools=declared)


def _tools_file(path: Path) -> list[dict]:
    """The tool declarations in a JSON file (a list, or {"tools": [...]})."""
    import json

    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        what = f"cannot read the tools ({err})"
        raise UserError(problem(str(path), what, "give a JSON file")) from None
    value = value.get("tools") if isinstance(value, dict) else value
    if not isinstance(value, list):
        raise UserError(
            problem(str(path), "is not a JSON list of tools", 'write [{"type": "function", ...}]')
        )
    return value


def chat(
    model: ModelOpt = None,
    adapter: AdapterOpt = None,
    system: SystemOpt = None,
    max_new_tokens: MaxNewTokensOpt = 512,
    temperature: TemperatureOpt = 0.0,
    top_p: TopPOpt = 1.0,
    top_k: TopKOpt = 0,
    seed: SeedOpt = None,
    device: DeviceOpt = "auto",
) -> None:
    """Chat in the terminal (multi-turn): /reset clears the history, /exit or Ctrl-D ends."""
    from gemmaforge.infer.chat import chat_loop

    session, name = _session(model, adapter, device)
    sampling = Sampling(max_new_tokens, temperature, top_p=top_p, top_k=top_k, seed=seed)
    chat_loop(session, name, system, sampling)


def serve(
    model: ModelOpt = None,
    adapter: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME=PATH: serve a run or adapter folder (or hub://NS/NAME@V) as model NAME "
            "(repeatable).",
            metavar="NAME=PATH",
            show_default=False,
        ),
    ] = None,
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default).")] = "127.0.0.1",
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="GEMMAFORGE_API_KEY",
            help="Require `Authorization: Bearer KEY` on /v1 requests.",
            show_default=False,
        ),
    ] = None,
    allow_media_paths: Annotated[
        bool,
        typer.Option(
            "--allow-media-paths",
            help="Let requests name image files on this machine (else data URLs only).",
        ),
    ] = False,
    base_name: Annotated[
        str | None,
        typer.Option(
            help="Model name of the base (default: its file/folder name).", show_default=False
        ),
    ] = None,
    max_request_mb: Annotated[
        float, typer.Option(min=0.001, help="Largest request body, in MiB.")
    ] = 20.0,
    allow_origin: Annotated[
        list[str] | None,
        typer.Option(
            help="A web origin (scheme://host:port) whose pages may call the server "
            "(repeatable; without --api-key, cross-origin requests are refused otherwise).",
            show_default=False,
        ),
    ] = None,
    max_batch: Annotated[
        int,
        typer.Option(
            min=1,
            help="Requests decoded together (continuous batching; 1: one at a time).",
        ),
    ] = 16,
    device: DeviceOpt = "auto",
) -> None:
    """Serve an OpenAI-compatible API (/v1/chat/completions) for a base model and adapters."""
    from gemmaforge.infer.serve import serve as run_server

    specs = [_adapter_spec(spec) for spec in adapter or []]
    if model is None and not specs:
        raise UserError(
            problem(COMMAND_LINE, "no model given", "pass --model BASE and/or --adapter NAME=RUN")
        )
    session = open_session(model, specs, base_name, device=device)
    if api_key is None and host not in ("127.0.0.1", "localhost", "::1"):
        typer.echo(f"warning: {host} is reachable by others and --api-key is not set", err=True)
    typer.echo(f"Serving {', '.join(session.names)} at http://{host}:{port}/v1", err=True)
    run_server(
        session,
        host,
        port,
        api_key=api_key,
        allow_media_paths=allow_media_paths,
        max_request_bytes=int(max_request_mb * 2**20),
        allow_origins=tuple(allow_origin or ()),
        max_batch=max_batch,
    )


def _session(model: str | None, adapter: str | None, device: str):
    """The loaded model for generate/chat, and the name of the model to talk to."""

    if model is None and adapter is None:
        raise UserError(
            problem(COMMAND_LINE, "no model given", "pass --model BASE and/or --adapter RUN")
        )
    session = open_session(model, [("adapter", adapter)] if adapter else [], device=device)
    return session, "adapter" if adapter else session.base_name


def _adapter_spec(spec: str) -> tuple[str, str]:
    name, sep, path = spec.partition("=")
    if not (sep and name and path):
        raise UserError(
            problem(
                COMMAND_LINE,
                f"--adapter {spec!r} is not NAME=PATH",
                "e.g. --adapter legal=runs/legal",
            )
        )
    return name, path
