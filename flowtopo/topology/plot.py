"""Pictures of a density tree: points by leaf with density contours, dendrogram, diagram."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes

from flowtopo.plotting import COLOURS, new_figure, project_2d, save
from flowtopo.topology._tree import DensityTree

LEGEND_MAX = 12
"""Legend entries drawn at most (the largest modes first)."""


def leaf_colours(tree: DensityTree) -> dict[int, str]:
    """A colour per leaf id (by decreasing mass)."""
    return {leaf.id: COLOURS[i % len(COLOURS)] for i, leaf in enumerate(tree.leaves())}


def label_colours(tree: DensityTree, labels: np.ndarray) -> dict[int, str]:
    """A colour per leaf: its members' most common label's (``COLOURS`` in sorted-label order).

    Two trees over the same labelled inputs get the same colour for modes of the same class,
    whichever model they come from; the node-label bars use the same order.

    Args:
        tree: a density tree over n points.
        labels: (n,) integer labels of those points.

    """
    classes = list(np.unique(labels))
    out = {}
    for leaf in tree.leaves():
        values, counts = np.unique(labels[leaf.members], return_counts=True)
        if len(values):
            out[leaf.id] = COLOURS[classes.index(values[counts.argmax()]) % len(COLOURS)]
    return out


def draw_points(ax: Axes, tree: DensityTree, points: np.ndarray,
                log_density: Callable[[np.ndarray], np.ndarray] | None = None,
                colours: dict[int, str] | None = None, title: str = "") -> None:
    """Points coloured by leaf basin; contours of the density for k = 2 when given."""
    colours = colours or leaf_colours(tree)
    leaves = tree.leaves()
    both, how = project_2d(np.vstack([points, [leaf.centroid for leaf in leaves]]))
    p, centres = both[: len(points)], both[len(points):]
    ax.scatter(p[:, 0], p[:, 1], s=3, c=[colours.get(int(label), "#999999")
                                         for label in tree.labels], linewidths=0, alpha=0.7)
    if log_density is not None and points.shape[1] == 2:
        lo, hi = points.min(0), points.max(0)
        gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 150), np.linspace(lo[1], hi[1], 150))
        ld = log_density(np.stack([gx.ravel(), gy.ravel()], 1)).reshape(gx.shape)
        levels = sorted({n.level for n in tree.internal()} | {n.peak - 1 for n in tree.leaves()})
        ax.contour(gx, gy, ld, levels=[lv for lv in levels if np.isfinite(lv)][-12:],
                   colors="k", linewidths=0.5, alpha=0.6)
    for leaf, c in zip(leaves, centres, strict=True):
        ax.annotate(str(leaf.id), c, fontsize=8, weight="bold")
    for leaf in leaves[:LEGEND_MAX]:  # a legend entry per mode (its colour, id and mass)
        ax.scatter([], [], s=12, c=colours.get(leaf.id, "#999999"),
                   label=f"mode {leaf.id} ({leaf.mass:.2f})")
    if leaves:
        ax.legend(fontsize=6, loc="best", markerscale=1.0)
    ax.set_title(title or f"basins by mode ({how})", fontsize=9)
    ax.set_aspect("equal", adjustable="datalim")


def draw_dendrogram(ax: Axes, tree: DensityTree, colours: dict[int, str] | None = None) -> None:
    """The tree: y = log-density level, leaves spread on x, masses written at the nodes."""
    colours = colours or leaf_colours(tree)
    xpos: dict[int, float] = {}

    def place(nid: int) -> float:
        node = tree.nodes[nid]
        if node.is_leaf:
            xpos[nid] = float(len([v for v in xpos.values()]))
            return xpos[nid]
        xs = [place(c) for c in node.children]
        xpos[nid] = float(np.mean(xs))
        return xpos[nid]

    place(0)
    for node in tree.nodes.values():
        top = node.peak if node.is_leaf else node.level
        colour = colours.get(node.id, "k")
        ax.plot([xpos[node.id]] * 2, [node.merge_level, top], color=colour, lw=2)
        if node.children:
            xs = [xpos[c] for c in node.children]
            ax.plot([min(xs), max(xs)], [node.level] * 2, color="k", lw=1)
        ax.annotate(f"{node.id}: {node.mass:.2f}", (xpos[node.id], top), fontsize=7,
                    ha="center", va="bottom")
    ax.set_xticks([])
    ax.set_ylabel("log density level")
    ax.set_title("density tree (node: mass)", fontsize=9)


def draw_diagram(ax: Axes, tree: DensityTree) -> None:
    """0-dim persistence diagram (birth = peak, death = merge level) with the threshold band."""
    d = tree.diagram
    if len(d):
        ax.scatter(d[:, 1], d[:, 0], s=6, c="k")
        lo, hi = float(d.min()), float(d.max())
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8)
        tau = tree.params.get("min_persistence", 0.0)
        ax.fill_between([lo, hi], [lo, hi], [lo + tau, hi + tau], color="grey", alpha=0.2)
    ax.set_xlabel("death (merge level)")
    ax.set_ylabel("birth (peak)")
    ax.set_title("persistence diagram", fontsize=9)


def plot_tree(tree: DensityTree, points: np.ndarray, path: str | Path,
              log_density: Callable[[np.ndarray], np.ndarray] | None = None,
              colours: dict[int, str] | None = None) -> Path:
    """Write the three panels as a PNG and return its path.

    ``colours`` (leaf id -> colour) defaults to `leaf_colours`; `label_colours` gives every
    model's trees the same colour for the same main label.
    """
    fig, axes = new_figure(3, 4.2)
    colours = colours or leaf_colours(tree)
    draw_points(axes[0], tree, points, log_density, colours)
    draw_dendrogram(axes[1], tree, colours)
    draw_diagram(axes[2], tree)
    return save(fig, path)
