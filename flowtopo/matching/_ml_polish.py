"""Maximum-likelihood polish of a fitted map when the latent densities are exact.

The tree method's point-level refinement (optimal transport inside matched leaves) pairs two
INDEPENDENT samples, so its estimate carries the sampling noise of both; in 2-D, retrieving a
point's partner among a thousand neighbours needs a finer map than that. When the densities are
known exactly (`LatentSpace.log_density` callables, as for trained FlowAEs), the map can be
polished by maximum likelihood, started from the refined map (the likelihood alone is
multimodal; the tree picks the basin):

    min_T  -E_x[log p_t(T x)] - log|det A|          (source points under the pulled-back target)
           -E_y[log p_s(T⁻¹ y)] + log|det A|        (target points under the pushed source)

for ``T x = A x + b`` (each term is a KL divergence up to a constant, so the sum is the
symmetric KL between T#source and target; a side whose density is unknown is left out). Both
samples enter whole, which is what removes most of the noise. The family is kept: ``linear``
fixes ``b = 0``; ``orthogonal`` moves ``A = s Q₀ expm(S - Sᵀ)`` (scale and rotation only).
L-BFGS; the chain rule through the map is exact (`objective_and_gradient`); the densities'
spatial gradients are exact when the space has a ``score`` (a prior's autograd gradient, as for
trained FlowAEs) and central differences of the numpy callable otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.linalg import expm
from scipy.optimize import minimize

from flowtopo.matching._result import LatentSpace


@dataclass
class Polish:
    """The outcome: the polished map and the objective before and after."""

    matrix: np.ndarray
    offset: np.ndarray
    before: float
    after: float
    sides: str
    iterations: int


def _parametrise(kind: str, a0: np.ndarray, b0: np.ndarray
                 ) -> tuple[np.ndarray, Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]]:
    """Start vector and decoder ``theta -> (A, b)`` for the transform family ``kind``."""
    k = a0.shape[0]
    if kind == "orthogonal":
        s0 = float(np.abs(np.linalg.det(a0)) ** (1 / k))
        q0 = a0 / s0
        iu = np.triu_indices(k, 1)
        n_s = len(iu[0])

        def decode(th: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            skew = np.zeros((k, k))
            skew[iu] = th[1:1 + n_s]
            return s0 * np.exp(th[0]) * q0 @ expm(skew - skew.T), th[1 + n_s:]

        return np.concatenate([[0.0], np.zeros(n_s), b0]), decode
    if kind == "linear":
        return a0.ravel().copy(), lambda th: (th.reshape(k, k), np.zeros(k))
    return (np.concatenate([a0.ravel(), b0]),
            lambda th: (th[: k * k].reshape(k, k), th[k * k:]))


def _decode_jacobian(decode: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
                     th: np.ndarray, h: float = 1e-7) -> np.ndarray:
    """(k² + k, p) Jacobian of ``theta -> concat(A.ravel(), b)`` by central differences."""
    cols = []
    for i in range(len(th)):
        e = np.zeros_like(th)
        e[i] = h
        (a1, b1), (a0, b0) = decode(th + e), decode(th - e)
        cols.append(np.concatenate([(a1 - a0).ravel(), b1 - b0]) / (2 * h))
    return np.stack(cols, axis=1)


Score = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
"""``y (m, k) -> (log p(y) (m,), ∇log p(y) (m, k))``."""


def finite_difference_score(log_p: Callable[[np.ndarray], np.ndarray], h: float = 1e-5
                            ) -> Score:
    """A `Score` from values alone: central differences, 2k + 1 evaluations per point."""

    def score(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m, k = y.shape
        shifts = np.concatenate([np.zeros((1, k)), h * np.eye(k), -h * np.eye(k)])
        vals = np.asarray(log_p((y[None] + shifts[:, None]).reshape(-1, k)),
                          dtype=np.float64).reshape(2 * k + 1, m)
        return vals[0], ((vals[1:k + 1] - vals[k + 1:]) / (2 * h)).T

    return score


def space_score(space: LatentSpace) -> tuple[Score | None, int]:
    """The space's `Score` and its cost in density evaluations per point (None, 0 if none).

    An exact ``space.score`` (autograd: one forward and one backward pass) counts as 3.
    """
    if space.score is not None:
        return space.score, 3
    if callable(space.log_density):
        return finite_difference_score(space.log_density), 2 * space.k + 1
    return None, 0


def objective_and_gradient(xs: np.ndarray | None, yt: np.ndarray | None,
                           score_t: Score | None, score_s: Score | None,
                           a: np.ndarray, b: np.ndarray
                           ) -> tuple[float, np.ndarray, np.ndarray]:
    """The symmetric NLL (module docstring) at ``T x = A x + b`` and its gradient in (A, b).

    ``score_t``/``score_s`` give each density and its gradient in SPACE (`Score`); the chain
    rule through the map is exact: with g = ∇log p_t(A x + b),
    ``∂/∂A [-E log p_t - log|det A|] = -E[g xᵀ] - A⁻ᵀ``; with z = A⁻¹(y - b), g = ∇log p_s(z),
    ``∂/∂A [-E log p_s(z) + log|det A|] = A⁻ᵀ E[g zᵀ] + A⁻ᵀ`` and ``∂/∂b = A⁻ᵀ E[g]``.

    Returns:
        (value, dA (k, k), db (k,)); value is inf when A is singular.

    """
    sign, logdet = np.linalg.slogdet(a)
    k = a.shape[0]
    if sign == 0 or not np.isfinite(logdet):
        return float("inf"), np.zeros((k, k)), np.zeros(k)
    a_inv_t = np.linalg.inv(a).T
    val, ga, gb = 0.0, np.zeros((k, k)), np.zeros(k)
    if score_t is not None and xs is not None:
        lp, g = score_t(xs @ a.T + b)
        val -= float(lp.mean()) + logdet
        ga -= g.T @ xs / len(xs) + a_inv_t
        gb -= g.mean(0)
    if score_s is not None and yt is not None:
        z = (yt - b) @ a_inv_t
        lp, g = score_s(z)
        val -= float(lp.mean()) - logdet
        ga += a_inv_t @ (g.T @ z / len(z) + np.eye(k))
        gb += a_inv_t @ g.mean(0)
    return val, ga, gb


def ml_polish(source: LatentSpace, target: LatentSpace, kind: str, matrix: np.ndarray,
              offset: np.ndarray, *, max_points: int = 20000, budget: int = 100_000,
              seed: int = 0, max_iter: int = 200) -> Polish | None:
    """Polish ``(matrix, offset)`` by symmetric maximum likelihood (module docstring).

    Args:
        source: source latents (n_s, k); ``log_density`` callable or None.
        target: target latents (n_t, k); ``log_density`` callable or None.
        kind: transform family (``affine``, ``linear``, ``orthogonal``, ``nonlinear``: its
            affine part).
        matrix: (k, k) start.
        offset: (k,) start.
        max_points: at most this many points of each side enter the objective.
        budget: and at most ``budget / cost`` points, where cost = density evaluations per
            point and gradient (2k + 1 by central differences, 3 with an exact ``score``);
            never fewer than 2,000.
        seed: subsampling seed.
        max_iter: L-BFGS iterations.

    Returns:
        The polished map, or None when it does not apply (no callable density on either side,
        different dimensions, a singular start) or did not lower the objective.

    """
    k = matrix.shape[0]
    (score_t, cost_t), (score_s, cost_s) = space_score(target), space_score(source)
    if (score_t is None and score_s is None) or matrix.shape != (k, k) or source.k != k:
        return None
    if abs(np.linalg.det(matrix)) < 1e-12:
        return None
    rng = np.random.default_rng(seed)
    cap = min(max_points, max(2000, budget // max(cost_t, cost_s)))

    def sub(x: np.ndarray) -> np.ndarray:
        return x[rng.choice(len(x), cap, replace=False)] if len(x) > cap else x

    xs, yt = sub(source.points), sub(target.points)
    theta0, decode = _parametrise(kind, matrix, offset)

    def fun(th: np.ndarray) -> tuple[float, np.ndarray]:
        a, b = decode(th)
        val, ga, gb = objective_and_gradient(xs, yt, score_t, score_s, a, b)
        if not np.isfinite(val):
            return 1e12, np.zeros_like(th)
        grad = np.concatenate([ga.ravel(), gb])
        if kind == "affine" or kind == "nonlinear":
            return val, grad
        if kind == "linear":
            return val, ga.ravel()
        return val, _decode_jacobian(decode, th).T @ grad

    before = fun(theta0)[0]
    res = minimize(fun, theta0, jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
    if not np.isfinite(res.fun) or res.fun >= before:
        return None
    a, b = decode(res.x)
    sides = "two-sided" if score_t is not None and score_s is not None else (
        "target" if score_t is not None else "source")
    return Polish(a, np.asarray(b, dtype=np.float64), before, float(res.fun), sides,
                  int(res.nit))


def symmetric_kl(source: LatentSpace, target: LatentSpace, matrix: np.ndarray,
                 offset: np.ndarray, *, n: int = 5000, seed: int = 0) -> float | None:
    """Oracle-free fit check: KL(T#source || target) + KL(source || T⁻¹#target), in nats.

    Monte-Carlo over (at most ``n``) points of each side with both exact densities:
    ``KL(T#s || t) = E_x[log p_s(x) - log p_t(T x) - log|det A|]`` and symmetrically. About 0
    when the map carries one distribution onto the other; large when the spaces do not match
    (different prior families, collapsed clusters) even if every cluster found a partner.
    Returns None without two callable densities of equal dimension or for a singular map.
    """
    k = matrix.shape[0]
    p_t = target.log_density if callable(target.log_density) else None
    p_s = source.log_density if callable(source.log_density) else None
    if p_t is None or p_s is None or matrix.shape != (k, k) or source.k != k:
        return None
    sign, logdet = np.linalg.slogdet(matrix)
    if sign == 0:
        return None
    rng = np.random.default_rng(seed)
    xs = source.points[rng.choice(len(source.points), min(n, len(source.points)), replace=False)]
    yt = target.points[rng.choice(len(target.points), min(n, len(target.points)), replace=False)]
    fwd = np.mean(p_s(xs)) - np.mean(p_t(xs @ matrix.T + offset)) - logdet
    bwd = np.mean(p_t(yt)) - np.mean(p_s((yt - offset) @ np.linalg.inv(matrix).T)) + logdet
    return float(fwd + bwd)
