"""The oracle-free fit check for point clouds: a classifier two-sample test calibrated on a null.

Whether a map T carries the source distribution onto the target's can be asked of samples alone:
train a classifier to tell mapped source points ``T(x)`` from target points ``y`` and measure its
held-out accuracy (0.5 when it cannot tell them apart; Lopez-Paz & Oquab, "Revisiting
Classifier Two-Sample Tests", ICLR 2017). A kNN classifier's accuracy on two finite samples of
ONE distribution is not exactly 0.5, so the test is calibrated against a null measured on the
spot: the same classifier, with the same sample sizes, telling two disjoint random halves of the
target apart. The statistic is the excess accuracy over that null:

    excess = acc(T#source vs target) - mean acc(target half vs target half)

Both sides are whitened with the TARGET's mean and covariance first, so the kNN distances are
in the target's own units whatever its scale. A map is flagged when the excess is both large
(> `POOR_FIT_C2ST`, an effect size) and significant (> 3 null standard deviations); the fit
check of `flowtopo.matching.align` applies it to every method's map, with or without exact
densities (where exact densities exist the symmetric KL is checked too).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

POOR_FIT_C2ST = 0.1
"""Excess two-sample accuracy above which a map is flagged (docs/method.md: right maps measure
under 0.05 on the synthetic problems and on supervised maps of network representations; maps
with the wrong cluster correspondence 0.15 and more)."""


@dataclass
class FitCheck:
    """The outcome of `c2st_fit_check`.

    Attributes:
        accuracy: held-out accuracy telling mapped source from target (0.5 = indistinguishable).
        null_mean: mean accuracy telling two random halves of the target apart.
        null_sd: its standard deviation over the null repeats.
        excess: ``accuracy - null_mean``.
        n: points per side in each test.

    """

    accuracy: float
    null_mean: float
    null_sd: float
    excess: float
    n: int

    @property
    def poor(self) -> bool:
        """True when the excess is both large and significant (module docstring)."""
        return self.excess > max(POOR_FIT_C2ST, 3 * self.null_sd)

    def to_dict(self) -> dict[str, float | int | bool]:
        """JSON-ready form."""
        return {"accuracy": self.accuracy, "null_mean": self.null_mean,
                "null_sd": self.null_sd, "excess": self.excess, "n": self.n, "poor": self.poor}


def _accuracy(a: np.ndarray, b: np.ndarray, rng: np.random.Generator, neighbors: int) -> float:
    """Two-fold cross-validated accuracy of a kNN classifier telling a (m, k) from b (m, k)."""
    from sklearn.neighbors import KNeighborsClassifier

    x = np.concatenate([a, b])
    y = np.r_[np.zeros(len(a)), np.ones(len(b))]
    fold = rng.permutation(len(x)) % 2
    correct = 0
    for f in (0, 1):
        tr, te = fold != f, fold == f
        clf = KNeighborsClassifier(neighbors).fit(x[tr], y[tr])
        correct += int((clf.predict(x[te]) == y[te]).sum())
    return correct / len(x)


def c2st_fit_check(mapped: np.ndarray, target: np.ndarray, *, n: int = 1000,
                   null_repeats: int = 5, neighbors: int = 10, seed: int = 0) -> FitCheck:
    """Classifier two-sample test of mapped source points against target points.

    Args:
        mapped: (n_s, k) source points after the map.
        target: (n_t, k) target points (not paired with ``mapped``).
        n: points per side (at most half the target, so the null can use disjoint halves).
        null_repeats: random target splits for the null.
        neighbors: k of the kNN classifier.
        seed: seeds every subsample.

    Returns:
        A `FitCheck`; ``poor`` says whether the map is flagged.

    """
    rng = np.random.default_rng(seed)
    m = int(min(n, len(mapped), len(target) // 2))
    mean = target.mean(0)
    evals, evecs = np.linalg.eigh(np.atleast_2d(np.cov(target, rowvar=False)))
    white = evecs / np.sqrt(np.maximum(evals, 1e-12 * max(evals.max(), 1e-300)))

    def w(x: np.ndarray) -> np.ndarray:
        return (x - mean) @ white

    t, s = w(target), w(np.asarray(mapped, dtype=np.float64))
    if not np.isfinite(s).all():  # a map that sends points to infinity fits nothing
        return FitCheck(1.0, 0.5, 0.0, 0.5, m)
    nulls = []
    for _ in range(null_repeats):
        perm = rng.permutation(len(t))
        nulls.append(_accuracy(t[perm[:m]], t[perm[m:2 * m]], rng, neighbors))
    acc = _accuracy(s[rng.choice(len(s), m, replace=False)],
                    t[rng.choice(len(t), m, replace=False)], rng, neighbors)
    null_mean, null_sd = float(np.mean(nulls)), float(np.std(nulls, ddof=1))
    return FitCheck(acc, null_mean, null_sd, acc - null_mean, m)


def map_fit_check(transform: Callable[[np.ndarray], np.ndarray], source: np.ndarray,
                  target: np.ndarray, *, seed: int = 0) -> FitCheck:
    """`c2st_fit_check` of ``transform(source)`` against ``target``."""
    return c2st_fit_check(transform(source), target, seed=seed)
