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
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_surrogates(path: Path) -> Path:
    """Fig. 2d of the paper: the Gaussian surrogate derivatives (alpha1 = 4 for the
    gates, alpha2 = 0.3 for the candidate) beside sigma'(u) and tanh'(u)."""
    import torch

    from snn_lstm.spiking.surrogate import gaussian

    u = torch.linspace(-3, 3, 601)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(u, gaussian(u, 4.0), label="Gaussian, alpha1 = 4 (i, f, o)")
    ax.plot(u, gaussian(u, 0.3), label="Gaussian, alpha2 = 0.3 (g)")
    ax.plot(u, torch.sigmoid(u) * (1 - torch.sigmoid(u)), "--", label="sigmoid'(u)")
    ax.plot(u, 1 - torch.tanh(u) ** 2, "--", label="tanh'(u)")
    ax.set_xlabel("u = a - theta")
    ax.set_ylabel("derivative")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_alpha_grid(cells: list[tuple[float, float, float]], path: Path) -> Path:
    """Fig. 6 of the paper: accuracy (alpha1, alpha2, acc) as a heatmap; the mean
    where a cell has several runs."""
    import numpy as np

    alpha1s = sorted({a for a, _, _ in cells})
    alpha2s = sorted({b for _, b, _ in cells})
    grid = np.full((len(alpha2s), len(alpha1s)), np.nan)
    for j, b in enumerate(alpha2s):
        for i, a in enumerate(alpha1s):
            values = [acc for x, y, acc in cells if (x, y) == (a, b)]
            if values:
                grid[j, i] = 100 * float(np.mean(values))
    fig, ax = plt.subplots(figsize=(1.2 * len(alpha1s) + 2, 0.9 * len(alpha2s) + 1.6))
    image = ax.imshow(grid, cmap="viridis", origin="lower")
    for j in range(len(alpha2s)):
        for i in range(len(alpha1s)):
            if not np.isnan(grid[j, i]):
                ax.text(i, j, f"{grid[j, i]:.1f}", ha="center", va="center", color="white", fontsize=8)
    ax.set_xticks(range(len(alpha1s)), [f"{a:g}" for a in alpha1s])
    ax.set_yticks(range(len(alpha2s)), [f"{b:g}" for b in alpha2s])
    ax.set_xlabel("alpha1 (i, f, o)")
    ax.set_ylabel("alpha2 (g)")
    fig.colorbar(image, ax=ax, label="test accuracy %")
    return _save(fig, path)


def plot_training_curves(curves: dict[str, list[tuple[int, float]]], metric: str, path: Path) -> Path:
    """One line per table row: `metric` against the training step."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for row, points in curves.items():
        steps, values = zip(*points)
        ax.plot(steps, values, marker=".", label=row)
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_firing_rates(rates: dict[str, list[float]], parts: tuple[str, ...], path: Path) -> Path:
    """Grouped bars: the firing rate of each gate, c and h, one group per row."""
    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 3.6))
    width = 0.8 / max(1, len(rates))
    for k, (row, values) in enumerate(rates.items()):
        ax.bar(np.arange(len(parts)) + k * width, values, width, label=row)
    ax.set_xticks(np.arange(len(parts)) + 0.4 - width / 2, parts)
    ax.set_ylabel("firing rate")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    return _save(fig, path)
