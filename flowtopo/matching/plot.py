"""Pictures of a match: matched tree nodes in the same colour in both spaces; score matrices."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from flowtopo.matching._result import AlignResult
from flowtopo.plotting import COLOURS, new_figure, project_2d, save
from flowtopo.topology._tree import DensityTree


def matched_colours(res: AlignResult) -> tuple[dict[int, str], dict[int, str]]:
    """Source and target node id -> colour; a matched pair shares its colour, others are grey."""
    src: dict[int, str] = {}
    tgt: dict[int, str] = {}
    for i, (s, t) in enumerate(res.node_pairs):
        src[int(s)] = tgt[int(t)] = COLOURS[i % len(COLOURS)]
    return src, tgt


def _leaf_colour(tree: DensityTree, colours: dict[int, str], leaf: int) -> str:
    """A leaf's own colour if matched, else its nearest matched ancestor's, else grey."""
    nid: int | None = leaf
    while nid is not None:
        if nid in colours:
            return colours[nid]
        nid = tree.nodes[nid].parent
    return "#bbbbbb"


def plot_match(res: AlignResult, z_source: np.ndarray, z_target: np.ndarray,
               test_source: np.ndarray, test_target: np.ndarray, labels: np.ndarray | None,
               path: str | Path, titles: tuple[str, str] = ("source", "target")) -> Path:
    """Three panels: both latent spaces by matched node, and the translated test latents.

    Args:
        res: a tree alignment (its trees built on ``z_source`` and ``z_target``).
        z_source: (n, k_s) the source latents the source tree was built on.
        z_target: (m, k_t) the target latents the target tree was built on.
        test_source: (p, k_s) paired test latents (row i of both is the same input).
        test_target: (p, k_t).
        labels: (p,) class labels of the test inputs, or None.
        path: the PNG to write.
        titles: names of the two spaces.

    """
    fig, axes = new_figure(3, 4.2)
    src_c, tgt_c = matched_colours(res)
    for ax, z, key, tree, colours, title in (
            (axes[0], z_source, "source_tree", res.source_tree, src_c, titles[0]),
            (axes[1], z_target, "target_tree", res.target_tree, tgt_c, titles[1])):
        if tree is None or len(tree.labels) != len(z):
            p, how = project_2d(z)
            ax.scatter(p[:, 0], p[:, 1], s=3, c="#777777", linewidths=0)
        else:
            both, how = project_2d(np.vstack([z, [n.centroid for n in tree.nodes.values()]]))
            p = both[: len(z)]
            cols = {leaf.id: _leaf_colour(tree, colours, leaf.id) for leaf in tree.leaves()}
            ax.scatter(p[:, 0], p[:, 1], s=3, linewidths=0, alpha=0.7,
                       c=[cols.get(int(lab), "#bbbbbb") for lab in tree.labels])
            for node, c in zip(tree.nodes.values(), both[len(z):], strict=True):
                if node.id in colours:
                    ax.scatter([c[0]], [c[1]], s=60, marker="*", c=colours[node.id],
                               edgecolors="k", linewidths=0.5)
                    ax.annotate(str(node.id), c, fontsize=8, weight="bold")
            partner = dict(res.node_pairs) if key == "source_tree" else {
                t: s for s, t in res.node_pairs}
            for nid, colour in list(colours.items())[:12]:  # the legend: who is matched to whom
                other = partner.get(nid, "?")
                pair = f"{nid} -> {other}" if key == "source_tree" else f"{other} -> {nid}"
                ax.scatter([], [], s=40, marker="*", c=colour, edgecolors="k",
                           linewidths=0.5, label=f"matched {pair}")
            ax.scatter([], [], s=12, c="#bbbbbb", label="unmatched")
            ax.legend(fontsize=6, loc="best")
        ax.set_title(f"{title} ({how})", fontsize=9)
        ax.set_aspect("equal", adjustable="datalim")
    moved = res.transform(test_source)
    proj, how = project_2d(np.vstack([test_target, moved]))
    axes[2].scatter(proj[: len(test_target), 0], proj[: len(test_target), 1], s=3,
                    c="#888888", linewidths=0, alpha=0.5, label="target test")
    axes[2].scatter(proj[len(test_target):, 0], proj[len(test_target):, 1], s=3, c="#d62728",
                    linewidths=0, alpha=0.5, label="translated source")
    axes[2].legend(fontsize=6, loc="best", markerscale=2.0)
    axes[2].set_title(f"target test (grey), translated source (red), {how}", fontsize=9)
    fig.suptitle("matched tree nodes share a colour (stars: node centroids)", fontsize=10)
    del labels  # the colours above already tell the clusters; labels are scored, not drawn
    return save(fig, path)


def plot_score_matrix(matrix: Sequence[Sequence[float | None]], names: Sequence[str],
                      path: str | Path, title: str = "R²") -> Path:
    """A heat map of pairwise scores (row = source, column = target); None = not aligned."""
    m = np.array([[np.nan if v is None else float(v) for v in row] for row in matrix])
    fig, (ax,) = new_figure(1, 1.2 + 0.9 * len(names))
    im = ax.imshow(m, vmin=min(0.0, float(np.nanmin(m)) if np.isfinite(m).any() else 0.0),
                   vmax=1.0, cmap="viridis")
    for (i, j), v in np.ndenumerate(m):
        ax.text(j, i, "" if np.isnan(v) else f"{v:.2f}", ha="center", va="center",
                color="w" if np.isfinite(v) and v < 0.6 else "k", fontsize=8)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("target")
    ax.set_ylabel("source")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    return save(fig, path)
