"""Picture of a prior: density contours (k = 2, or a slice through 0 for k > 2) and samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from flowtopo.plotting import new_figure, save
from flowtopo.priors._base import Prior


def plot_prior(prior: Prior, path: str | Path, n: int = 2000) -> Path:
    """Write a PNG of ``prior`` and return its path.

    For k >= 2 the contours are of the density on the plane of the first two dims (other dims
    at 0); samples are shown in the same two dims. For k = 1 the density curve and a histogram.
    """
    fig, (ax,) = new_figure(1, 5.0)
    with torch.no_grad():
        d = prior()
        s = d.sample((n,)).double().numpy()
        if prior.k == 1:
            g = np.linspace(s.min() - 1, s.max() + 1, 400)
            dens = d.log_prob(torch.as_tensor(g[:, None], dtype=torch.float32)).exp().numpy()
            ax.hist(s[:, 0], bins=60, density=True, alpha=0.4)
            ax.plot(g, dens, lw=1.5)
        else:
            lo, hi = s[:, :2].min(0) - 1, s[:, :2].max(0) + 1
            gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 200), np.linspace(lo[1], hi[1], 200))
            pts = np.zeros((gx.size, prior.k))
            pts[:, 0], pts[:, 1] = gx.ravel(), gy.ravel()
            dens = d.log_prob(torch.as_tensor(pts, dtype=torch.float32)).exp().numpy()
            ax.scatter(s[:, 0], s[:, 1], s=2, c="k", alpha=0.3, linewidths=0)
            ax.contour(gx, gy, dens.reshape(gx.shape), levels=10, linewidths=0.8)
            ax.set_aspect("equal", adjustable="datalim")
    ax.set_title(f"prior {prior.name} (k={prior.k})", fontsize=10)
    return save(fig, path)
