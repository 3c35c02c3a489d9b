"""The loss plot, drawn by training (RUN/loss.png, at each validation) and by `eval`
(RUN/eval/loss_curve.png). Ground level, so both layers use one function.

matplotlib's Agg backend is used, so it works without a display; the file is written
atomically (a temp name, then a rename).
"""

from __future__ import annotations

from pathlib import Path

from gemmaforge.files import read_jsonl


def plot_loss_curve(metrics_file: Path, out: Path) -> bool:
    """Plot loss and eval_loss against step; False (nothing written) if nothing was logged."""
    records = read_jsonl(metrics_file)
    if not records:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot([r["step"] for r in records], [r["loss"] for r in records], label="loss")
    evals = [r for r in records if r.get("eval_loss") is not None]
    if evals:
        ax.plot(
            [r["step"] for r in evals],
            [r["eval_loss"] for r in evals],
            marker="o",
            label="eval_loss",
        )
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = out.with_name(f".{out.name}.tmp")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    tmp.replace(out)
    return True
