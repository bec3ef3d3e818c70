"""Held-out measures of how well codes fit a prior, on plain arrays."""

from __future__ import annotations

import numpy as np


def noise_kl(noise: np.ndarray, sigma: float) -> float:
    """KL( N(μ̂, Σ̂) || N(0, σ² I) ) of the moment-matched Gaussian of ``noise`` (n, d); 0 if d=0."""
    d = noise.shape[1]
    if d == 0:
        return 0.0
    mu = noise.mean(0)
    cov = np.atleast_2d(np.cov(noise, rowvar=False)) + 1e-9 * np.eye(d)
    logdet = np.linalg.slogdet(cov)[1]
    return float(0.5 * (np.trace(cov) / sigma**2 + mu @ mu / sigma**2 - d
                        + 2 * d * np.log(sigma) - logdet))


def c2st_accuracy(a: np.ndarray, b: np.ndarray, seed: int = 0, neighbors: int = 5) -> float:
    """Classifier two-sample test: held-out accuracy of a kNN classifier telling a from b.

    0.5 means indistinguishable. Equal sizes are drawn from both; half trains, half tests.
    Reference: Lopez-Paz & Oquab, "Revisiting Classifier Two-Sample Tests", ICLR 2017.
    """
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(seed)
    m = min(len(a), len(b))
    x = np.concatenate([a[rng.permutation(len(a))[:m]], b[rng.permutation(len(b))[:m]]])
    y = np.concatenate([np.zeros(m), np.ones(m)])
    perm = rng.permutation(2 * m)
    tr, te = perm[:m], perm[m:]
    clf = KNeighborsClassifier(neighbors).fit(x[tr], y[tr])
    return float((clf.predict(x[te]) == y[te]).mean())
