"""How well a translated source distribution fits the target: sliced Wasserstein (numpy)."""

from __future__ import annotations

import numpy as np


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, n_proj: int = 64, n: int = 2000,
                       seed: int = 0) -> float:
    """Sliced W2 distance between point clouds a (n_a, k) and b (n_b, k).

    Equal-size subsamples of at most ``n`` points; ``n_proj`` random directions (seeded).
    """
    rng = np.random.default_rng(seed)
    m = min(len(a), len(b), n)
    a = a[rng.choice(len(a), m, replace=False)]
    b = b[rng.choice(len(b), m, replace=False)]
    dirs = rng.normal(size=(a.shape[1], n_proj))
    dirs /= np.linalg.norm(dirs, axis=0, keepdims=True)
    pa, pb = np.sort(a @ dirs, 0), np.sort(b @ dirs, 0)
    return float(np.sqrt(np.mean((pa - pb) ** 2)))
