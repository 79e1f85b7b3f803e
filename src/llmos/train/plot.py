"""`llmos runs plot`: train and val loss of several runs on one chart (matplotlib, optional)."""

from __future__ import annotations

from pathlib import Path

from llmos.errors import LlmosError
from llmos.train.runs import RunStore


def _smooth(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_runs(runs: list[str], out: str | Path, smooth: int = 20, store: RunStore | None = None) -> Path:
    """Write a PNG with each run's (smoothed) train loss as a thin line and val loss as markers."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise LlmosError("`llmos runs plot` needs matplotlib (pip install matplotlib)") from None
    store = store or RunStore()
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for i, name in enumerate(runs):
        run = store.get(name)
        color = f"C{i % 10}"
        train = store.metrics(run.id, "train/loss")
        val = store.metrics(run.id, "val/loss")
        if train:
            steps, values = zip(*train)
            ax.plot(steps, _smooth(list(values), max(1, smooth)), color=color, alpha=0.6, linewidth=1,
                    label=f"{run.id} train")
        if val:
            steps, values = zip(*val)
            ax.plot(steps, values, color=color, marker="o", linewidth=2, label=f"{run.id} val")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
