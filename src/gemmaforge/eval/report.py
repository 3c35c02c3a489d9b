"""Write an evaluation to `RUN/eval/`: report.json (everything), report.md (for people) and
loss_curve.png (training and validation loss from the run's metrics.jsonl).

Files are written atomically, like the rest of the run folder; the plot uses matplotlib's
Agg backend, so it works without a display.
"""

from __future__ import annotations

from pathlib import Path

from gemmaforge.files import write_json_atomic, write_text_atomic
from gemmaforge.plots import plot_loss_curve

CELL_CHARS = 160
"""Longest text shown in a table cell of report.md (report.json holds the full texts)."""
LOWER_IS_BETTER = ("wer", "cer", "perplexity")


def write_report(run_dir: Path, report: dict) -> Path:
    """Write the three files to a new numbered folder `run_dir/eval/N/` (every evaluation is
    kept) and, as the latest, to `run_dir/eval/` itself (`eval/latest` names N); return the
    numbered folder."""
    top = run_dir / "eval"
    top.mkdir(exist_ok=True)
    number = 1 + max((int(p.name) for p in top.iterdir() if p.name.isdigit()), default=0)
    kept = top / str(number)
    kept.mkdir()
    for folder in (kept, top):
        plotted = plot_loss_curve(run_dir / "metrics.jsonl", folder / "loss_curve.png")
        write_json_atomic(folder / "report.json", report)
        write_text_atomic(folder / "report.md", markdown(report, plotted))
    write_text_atomic(top / "latest", f"{number}\n")
    return kept


def markdown(report: dict, with_plot: bool) -> str:
    base, tuned = report["metrics"]["base"], report["metrics"]["adapter"]
    lines = [
        f"# Evaluation of {report['run']}",
        "",
        f"- Base model: `{report['base_model']}` (sha256 `{report['base_sha256'][:16]}…`)",
        f"- Data: {report['data']}; {report['examples_scored']} examples",
        f"- Task: {report['task']}",
    ]
    if report["max_new_tokens"]:
        lines.append(f"- Replies: greedy, up to {report['max_new_tokens']} new tokens")
    lines += ["", "| metric | base | adapter | change |", "| --- | ---: | ---: | ---: |"]
    for name, before, after in _metric_rows(base, tuned):
        lines.append(f"| {name} | {before:.3f} | {after:.3f} | {after - before:+.3f} |")
    lines += ["", f"Lower is better for {', '.join(LOWER_IS_BETTER)}; higher for the rest."]
    if with_plot:
        lines += ["", "![training and validation loss](loss_curve.png)"]
    if report["examples"]:
        lines += ["", "## Examples", "", _example_table(report["examples"])]
    return "\n".join(lines) + "\n"


def _metric_rows(base: dict, tuned: dict) -> list[tuple[str, float, float]]:
    rows = []
    for name, value in base.items():
        if isinstance(value, dict):
            rows += [(f"field `{key}`", value[key], tuned[name][key]) for key in value]
        else:
            rows.append((name, value, tuned[name]))
    return rows


def _example_table(examples: list[dict]) -> str:
    lines = [
        "| row | prompt | reference | base | score | adapter | score |",
        "| --- | --- | --- | --- | ---: | --- | ---: |",
    ]
    for ex in examples:
        cells = [ex["where"], ex["prompt"], ex["reference"], ex["base"]]
        text = " | ".join(_cell(c) for c in cells)
        lines.append(
            f"| {text} | {ex['base_score']:.2f} | {_cell(ex['adapter'])} | "
            f"{ex['adapter_score']:.2f} |"
        )
    return "\n".join(lines)


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell, shortened to CELL_CHARS."""
    if len(text) > CELL_CHARS:
        text = text[: CELL_CHARS - 1] + "…"
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", "<br>") or "(empty)"
