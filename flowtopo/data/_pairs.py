"""Synthetic latent-space pairs with a known translation (for alignment tests and benchmarks).

The target space is ``T(u) = A bend(u) + b`` of the source's: a random affine map (rotation
times anisotropic scale, and a shift) after a mild smooth warp ``bend``, the unit-triangular
``u[:h] += w tanh(u[h:2h])`` (h = k // 2). ``bend`` preserves volume and inverts in closed
form, so the target's log density is EXACT: ``log p(bend⁻¹(A⁻¹(y - b))) - log|det A|``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from flowtopo.data._hierarchy import HierarchicalMixture
from flowtopo.data._rotation import random_rotation


@dataclass(frozen=True)
class WarpedPair:
    """Unpaired training latents of two spaces, their exact densities, and paired test latents.

    Attributes:
        source: (n, k) source latents. source_log_prob: (m, k) -> (m,).
        target: (n, k) target latents, drawn independently. target_log_prob: (m, k) -> (m,).
        test_source: (n_test, k); test_target: (n_test, k) = true_map(test_source).
        test_labels: (n_test,) leaf labels of the test points.
        true_map: the translation (m, k) -> (m, k).

    """

    source: np.ndarray
    source_log_prob: Callable[[np.ndarray], np.ndarray]
    target: np.ndarray
    target_log_prob: Callable[[np.ndarray], np.ndarray]
    test_source: np.ndarray
    test_target: np.ndarray
    test_labels: np.ndarray
    true_map: Callable[[np.ndarray], np.ndarray]


def _bend(u: np.ndarray, w: float) -> np.ndarray:
    h = u.shape[1] // 2
    out = u.copy()
    out[:, :h] += w * np.tanh(u[:, h:2 * h])
    return out


def warped_pair(shape: list, k: int, *, seed: int = 0, warp: float = 0.1, n: int = 6000,
                n_test: int = 2000, separation: float = 10.0) -> WarpedPair:
    """Two latent spaces of one hierarchical mixture related by ``A bend(u) + b`` (see module).

    Args:
        shape: nested list tree of the mixture (see `HierarchicalMixture.build`).
        k: latent dimension.
        seed: seeds the mixture, the map and the samples.
        warp: amplitude w of the warp (0 = exactly affine).
        n: training points per space.
        n_test: paired test points.
        separation: distance scale between sibling clusters.

    """
    rng = np.random.default_rng(seed)
    mix = HierarchicalMixture.build(shape, k, seed=k + seed, separation=separation)
    a = random_rotation(k, k + seed) @ np.diag(rng.uniform(0.5, 2, k))
    b = 3 * rng.normal(size=k)
    a_inv, log_det = np.linalg.inv(a), float(np.log(abs(np.linalg.det(a))))

    def true_map(u: np.ndarray) -> np.ndarray:
        return _bend(u, warp) @ a.T + b

    def target_log_prob(y: np.ndarray) -> np.ndarray:
        return mix.log_prob(_bend((y - b) @ a_inv.T, -warp)) - log_det

    u_s, u_t = mix.sample(n, rng)[0], mix.sample(n, rng)[0]
    test, labels = mix.sample(n_test, rng)
    return WarpedPair(u_s, mix.log_prob, true_map(u_t), target_log_prob, test, true_map(test),
                      labels, true_map)
