"""Pictures of datasets: a scatter coloured by label, with exact density contours when known."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flowtopo.data._base import Dataset
from flowtopo.plotting import new_figure, save, scatter


def plot_dataset(ds: Dataset, path: str | Path) -> Path:
    """Write a PNG of ``ds`` and return its path.

    Panels: test points (2-D projection) with exact density contours when D = 2 and the density
    is known; the ground-truth latent when known.
    """
    panels = 2 if ds.latent_test is not None else 1
    fig, axes = new_figure(panels)
    scatter(axes[0], ds.x_test, ds.y_test, title=f"{ds.name}: data")
    if ds.dim == 2 and ds.raw_log_density is not None:
        lo, hi = ds.x_test.min(0), ds.x_test.max(0)
        gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 120), np.linspace(lo[1], hi[1], 120))
        ld = ds.log_density(np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32))
        axes[0].contour(gx, gy, np.exp(ld).reshape(gx.shape), levels=8, linewidths=0.7)
    if ds.latent_test is not None:
        scatter(axes[1], ds.latent_test, ds.y_test, title="ground-truth latent")
    return save(fig, path)
