"""The report's pictures: loss curves, family comparison, what each tree node means."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from flowtopo.plotting import new_figure, save
from flowtopo.topology.plot import COLOURS

CURVES = ("val_adv_loss", "val_disc_loss", "val_nll", "val_c2st")


def plot_loss_curves(histories: list[dict[str, Any]], path: Path) -> Path:
    """Per-epoch validation curves of every trial, one colour per prior family.

    Args:
        histories: one dict per run: ``family`` and ``metrics`` (name -> [(step, value)]).
        path: the PNG to write.

    """
    fig, axes = new_figure(len(CURVES), 3.6)
    families = sorted({h["family"] for h in histories})
    colour = {f: COLOURS[i % len(COLOURS)] for i, f in enumerate(families)}
    for ax, name in zip(axes, CURVES, strict=True):
        for h in histories:
            pts = h["metrics"].get(name, [])
            if pts:
                ax.plot(*zip(*pts, strict=True), color=colour[h["family"]], lw=1, alpha=0.8)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch")
    for f in families:
        axes[0].plot([], [], color=colour[f], label=f)
    if families:
        axes[0].legend(fontsize=7)
    return save(fig, path)


def plot_families(rows: list[dict[str, Any]], path: Path) -> Path:
    """Each finished run's held-out fit, by family (one dot per run; lower is better)."""
    metrics = ("best_adv_loss", "best_nll", "best_c2st")
    fig, axes = new_figure(len(metrics), 3.6)
    families = list(dict.fromkeys(r["group"] for r in rows))
    for ax, m in zip(axes, metrics, strict=True):
        for i, f in enumerate(families):
            vals = [r[m] for r in rows if r["group"] == f and r.get(m) is not None]
            ax.scatter([i] * len(vals), vals, s=14, color=COLOURS[i % len(COLOURS)])
        ax.set_xticks(range(len(families)), families, rotation=30, ha="right", fontsize=7)
        ax.set_title(m, fontsize=9)
    return save(fig, path)


def plot_node_labels(tree: Any, labels: np.ndarray, path: Path) -> Path:
    """Label composition of every tree node (stacked bars; node id, mass on the axis)."""
    classes = np.unique(labels)
    nodes = sorted(tree.nodes.values(), key=lambda n: (n.depth, n.id))
    fig, (ax,) = new_figure(1, max(3.5, 0.35 * len(nodes) + 1.5))
    for row, node in enumerate(nodes):
        counts = np.array([(labels[node.members] == c).sum() for c in classes], float)
        frac = counts / max(counts.sum(), 1.0)
        left = 0.0
        for j, f in enumerate(frac):
            ax.barh(row, f, left=left, color=COLOURS[j % len(COLOURS)], height=0.8)
            if f > 0.12:
                ax.text(left + f / 2, row, str(classes[j]), ha="center", va="center", fontsize=7)
            left += f
    ax.set_yticks(range(len(nodes)),
                  [f"{'leaf' if n.is_leaf else 'node'} {n.id} ({n.mass:.2f})" for n in nodes],
                  fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("label fraction of the node's members")
    ax.set_title("what each node holds (labels)", fontsize=9)
    return save(fig, path)


def plot_exemplars(exemplars: dict[int, np.ndarray], path: Path) -> Path:
    """Decoded exemplars of each leaf: images when D is a square >= 16, else feature profiles.

    Args:
        exemplars: leaf id -> (m, D) decoded points (data units).
        path: the PNG to write.

    """
    leaves = list(exemplars)
    d = next(iter(exemplars.values())).shape[1]
    side = math.isqrt(d)
    image = side * side == d and d >= 16
    per = max(len(v) for v in exemplars.values())
    if image:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(1.0 * per, 1.0 * len(leaves) + 0.4), layout="constrained")
        FigureCanvasAgg(fig)
        grid = fig.subplots(len(leaves), per, squeeze=False)
        for i, leaf in enumerate(leaves):
            for j in range(per):
                ax = grid[i][j]
                ax.set_xticks([])
                ax.set_yticks([])
                if j < len(exemplars[leaf]):
                    ax.imshow(exemplars[leaf][j].reshape(side, side), cmap="gray_r")
                if j == 0:
                    ax.set_ylabel(f"leaf {leaf}", fontsize=7)
        fig.suptitle("decoded exemplars (highest-density members of each leaf)", fontsize=9)
        return save(fig, path)
    fig, (ax,) = new_figure(1, 4.5)
    for i, leaf in enumerate(leaves):
        for j, x in enumerate(exemplars[leaf]):
            ax.plot(x, color=COLOURS[i % len(COLOURS)], lw=1, alpha=0.6,
                    label=f"leaf {leaf}" if j == 0 else None)
    ax.set_xlabel("feature")
    ax.legend(fontsize=7)
    ax.set_title("decoded exemplars of each leaf (feature profiles)", fontsize=9)
    return save(fig, path)
