"""How well a translated source distribution fits the target: likelihood or sliced Wasserstein."""

from __future__ import annotations

import numpy as np

from flowtopo.matching._result import LatentSpace


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


def fit_score(source: LatentSpace, target: LatentSpace, matrix: np.ndarray, offset: np.ndarray,
              seed: int = 0, n: int = 4000) -> tuple[float, str]:
    """How badly the mapped source fits the target (lower is better), and the criterion used.

    With an exact target density and equal dims: the negative log-likelihood of the mapped
    source under the target pulled back through the map,
    ``-(mean log p_t(A x + b) + log|det A|)`` (KL(source || T⁻¹#target) up to a constant).
    Otherwise the sliced-Wasserstein distance between mapped source and target points.
    """
    mapped = source.points @ matrix.T + offset
    if callable(target.log_density) and matrix.shape[0] == matrix.shape[1]:
        rng = np.random.default_rng(seed)
        idx = rng.choice(len(mapped), min(n, len(mapped)), replace=False)
        sign, logdet = np.linalg.slogdet(matrix)
        if sign != 0:
            ll = np.asarray(target.log_density(mapped[idx]), dtype=np.float64)
            return float(-(ll.mean() + logdet)), "nll"
    return sliced_wasserstein(mapped, target.points, seed=seed), "sliced_w2"
