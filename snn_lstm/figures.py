"""Figures (matplotlib, PNG), drawn off-screen."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from torch import Tensor  # noqa: E402


def plot_sine_predictions(target: Tensor, spikes: Tensor, snapshots: dict[int, Tensor], path: Path) -> Path:
    """Fig. 4 of the paper: the prediction of f(x_{t+1}) against the target after
    several numbers of training iterations, above the input spike raster."""
    steps = sorted(snapshots)
    fig, axes = plt.subplots(len(steps) + 1, 1, figsize=(8, 1.8 * (len(steps) + 1)), sharex=True)
    time = range(len(target))
    for ax, step in zip(axes, steps):
        ax.plot(time, target.numpy(), color="black", lw=1.2, label="target f(x$_{t+1}$)")
        ax.plot(time, snapshots[step].numpy(), color="tab:red", lw=1.2, label="prediction")
        ax.set_ylabel(f"{step} it.")
        ax.set_ylim(-0.2, 2.4)
    axes[0].legend(loc="upper right", fontsize=8, ncol=2)
    rows, cols = spikes.T.nonzero(as_tuple=True)
    axes[-1].scatter(cols.numpy(), rows.numpy(), s=2, color="tab:blue")
    axes[-1].set_ylabel("input\nchannel")
    axes[-1].set_xlabel("time step t")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
