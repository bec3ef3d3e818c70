"""Small matplotlib helpers shared by the pictures. No pyplot: no global state is touched."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf"]
"""The colour cycle of every picture (tree leaves, families, matched modes)."""


def new_figure(ncols: int = 1, size: float = 4.0) -> tuple[Figure, list[Axes]]:
    """A figure with ``ncols`` square panels."""
    fig = Figure(figsize=(size * ncols, size), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def save(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as PNG to ``path`` (parents created) and return the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=110)
    return p


def project_2d(x: np.ndarray) -> tuple[np.ndarray, str]:
    """The first two coordinates when D <= 2, else the first two principal axes.

    Returns:
        ((n, 2) coordinates, a label saying which).

    """
    if x.shape[1] == 1:
        return np.concatenate([x, np.zeros_like(x)], 1), "x"
    if x.shape[1] == 2:
        return x, "coordinates"
    xc = x - x.mean(0)
    vt = np.linalg.svd(xc, full_matrices=False)[2]
    return xc @ vt[:2].T, "first two principal axes"


def scatter(ax: Axes, x: np.ndarray, labels: np.ndarray | None = None, title: str = "") -> None:
    """Scatter ``x`` (n, D) projected to 2-D, coloured by integer ``labels``, with a legend."""
    p, how = project_2d(x)
    if labels is None:
        ax.scatter(p[:, 0], p[:, 1], s=3, c="k", alpha=0.6, linewidths=0, label="points")
    else:
        labels = np.asarray(labels)
        cmap = matplotlib.colormaps["tab10"]
        for i, c in enumerate(np.unique(labels)):
            m = labels == c
            ax.scatter(p[m, 0], p[m, 1], s=3, color=cmap(i % 10), alpha=0.6, linewidths=0,
                       label=f"label {c}")
    ax.legend(fontsize=6, loc="best", markerscale=2.0)
    ax.set_title(f"{title} ({how})" if title else how, fontsize=9)
    ax.set_aspect("equal", adjustable="datalim")
