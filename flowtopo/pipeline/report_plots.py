"""The report's pictures: training curves, family comparison, what each tree node means."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

# flowtopo.plotting (matplotlib, ~0.7 s) is imported where a picture is drawn: the report's
# process reads PANELS and CURVE_METRICS and leaves the drawing to its worker

PANELS: tuple[tuple[str, str | None, str, float | None, str], ...] = (
    # (title, training metric, validation metric, reference line, what the line means)
    ("adversarial loss -log D(z)", "adv_g_loss", "val_adv_loss", math.log(2),
     "log 2: the discriminator cannot tell"),
    ("discriminator loss (BCE)", "adv_d_loss", "val_disc_loss", math.log(2),
     "log 2: chance"),
    ("NLL (nats/dim)", None, "val_nll", None, ""),
    ("reconstruction MSE", "train_recon", "val_recon", None, ""),
    ("two-sample accuracy", None, "val_c2st", 0.5, "0.5: indistinguishable from the prior"),
)
"""Panels of the training curves; `CURVE_METRICS` lists the metrics they read."""
CURVE_METRICS = tuple(dict.fromkeys(m for _, tr, va, _, _ in PANELS for m in (tr, va) if m))
DECADES = 2.0
"""A panel whose positive values span at least this many decades gets a log axis."""


def _log_if_decades(ax: Any, values: list[float]) -> None:
    v = np.asarray([x for x in values if np.isfinite(x)])
    if len(v) and (v > 0).all() and np.log10(v.max() / v.min()) >= DECADES:
        ax.set_yscale("log")


def _polyline(curves: list[list[tuple[float, float]]]) -> np.ndarray:
    """``curves``' points as one (n, 2) array, a row of NaN between two curves.

    Drawn as one line, matplotlib breaks it at each NaN: one artist per family and style
    instead of one per run, which takes the legend's ``loc="best"`` search (it tests every
    line against every candidate place) from ~2 s to ~0.1 s at 60 runs x 5 panels.
    """
    parts = [np.asarray(c, float).reshape(-1, 2) for c in curves if len(c)]
    gap = np.full((1, 2), np.nan)
    return np.concatenate([p for c in parts for p in (c, gap)][:-1]) if parts else np.empty(
        (0, 2))


def loss_curves_figure(histories: list[dict[str, Any]]) -> Any:
    """The training curves: train (solid) and validation (dashed) per run, coloured by family.

    Each panel has its reference line where one exists (log 2 for the adversarial and
    discriminator losses, 0.5 for the two-sample accuracy), a dot at each run's best epoch
    on its validation curve, a log axis when its values span `DECADES` decades, and a legend.

    Args:
        histories: one dict per run: ``family``, ``metrics`` (name -> [(step, value)]) and
            optionally ``best_epoch``.

    Returns:
        The matplotlib Figure.

    """
    from matplotlib.lines import Line2D

    from flowtopo.plotting import COLOURS, new_figure

    fig, axes = new_figure(len(PANELS), 3.6)
    families = sorted({h["family"] for h in histories})
    colour = {f: COLOURS[i % len(COLOURS)] for i, f in enumerate(families)}
    for ax, (title, train, val, ref, ref_label) in zip(axes, PANELS, strict=True):
        seen: list[float] = []
        for f in families:  # one polyline per family and style, runs apart by a NaN (below)
            runs = [h for h in histories if h["family"] == f]
            for name, style in ((train, "-"), (val, "--")):
                curves = [h["metrics"].get(name, []) for h in runs] if name else []
                xy = _polyline(curves)
                if len(xy):
                    ax.plot(xy[:, 0], xy[:, 1], style, color=colour[f], lw=1, alpha=0.8)
                    seen += [v for pts in curves for _, v in pts]
            dots = []  # each run's best epoch on its validation curve
            for h in runs:
                at = [v for step, v in h["metrics"].get(val, []) if step == h.get("best_epoch")]
                dots += [(h["best_epoch"], at[0])] if at else []
            if dots:
                ax.plot(*zip(*dots, strict=True), "o", ls="none", color=colour[f], ms=4,
                        mec="k", mew=0.5)
        handles = [Line2D([], [], color=colour[f], label=f) for f in families]
        handles += [Line2D([], [], color="k", ls="-", label="train")] if train else []
        handles += [Line2D([], [], color="k", ls="--", label="validation"),
                    Line2D([], [], color="w", marker="o", mfc="#888888", mec="k",
                           label="best epoch")]
        if ref is not None:
            ax.axhline(ref, color="#444444", lw=0.8, ls=":")
            handles.append(Line2D([], [], color="#444444", ls=":", label=ref_label))
        _log_if_decades(ax, seen)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch")
        ax.legend(handles=handles, fontsize=6, loc="best")
    return fig


def plot_loss_curves(histories: list[dict[str, Any]], path: Path) -> Path:
    """Write `loss_curves_figure` as a PNG to ``path``."""
    from flowtopo.plotting import save

    return save(loss_curves_figure(histories), path)


def families_figure(rows: list[dict[str, Any]]) -> Any:
    """Each finished run's held-out fit, by family (one dot per run; lower is better)."""
    from flowtopo.plotting import COLOURS, new_figure

    metrics = (("best_adv_loss", math.log(2), "log 2"), ("best_nll", None, ""),
               ("best_c2st", 0.5, "0.5: chance"))
    fig, axes = new_figure(len(metrics), 3.6)
    families = list(dict.fromkeys(r["group"] for r in rows))
    for ax, (m, ref, ref_label) in zip(axes, metrics, strict=True):
        seen: list[float] = []
        for i, f in enumerate(families):
            vals = [r[m] for r in rows if r["group"] == f and r.get(m) is not None]
            ax.scatter([i] * len(vals), vals, s=14, color=COLOURS[i % len(COLOURS)], label=f)
            seen += vals
        if ref is not None:
            ax.axhline(ref, color="#444444", lw=0.8, ls=":", label=ref_label)
        _log_if_decades(ax, seen)
        ax.set_xticks(range(len(families)), families, rotation=30, ha="right", fontsize=7)
        ax.set_title(m, fontsize=9)
        ax.legend(fontsize=6, loc="best")
    return fig


def plot_families(rows: list[dict[str, Any]], path: Path) -> Path:
    """Write `families_figure` as a PNG to ``path``."""
    from flowtopo.plotting import save

    return save(families_figure(rows), path)


def plot_node_labels(tree: Any, labels: np.ndarray, path: Path) -> Path:
    """Label composition of every tree node (stacked bars; node id, mass on the axis)."""
    from flowtopo.plotting import COLOURS, new_figure, save

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
    from flowtopo.plotting import COLOURS, new_figure, save

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
