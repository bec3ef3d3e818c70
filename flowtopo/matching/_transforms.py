"""Fitting maps between latent spaces from weighted point pairs (numpy only).

Every fit solves ``min Σ_i w_i |T(x_i) - y_i|²`` over its family:

- ``affine``: T(x) = A x + b.
- ``linear``: T(x) = A x.
- ``orthogonal``: T(x) = s Q x + b with Q semi-orthogonal (QᵀQ = I or QQᵀ = I) and s > 0
  (weighted Procrustes with isotropic scale; Umeyama 1991).
- ``piecewise``: an affine map per piece (a matched leaf), blended by soft membership,
  ``T(x) = Σ_l r_l(x) (A_l x + b_l) + r_0(x) (A x + b)``, where ``r`` are the posterior
  probabilities of a Gaussian mixture with one component per piece (its members' mean,
  covariance and share) and ``r_0`` those of points far from every piece (the global affine
  map A, b). Each A_l is fitted by ridge regression shrunk toward A, so a piece with few
  points stays close to the global map (`PiecewiseAffine`, written here).
- ``nonlinear``: the affine map plus a thin-plate-spline correction (`fit_residual`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import logsumexp

from flowtopo.errors import InputError


def _weights(w: np.ndarray | None, n: int) -> np.ndarray:
    w = np.ones(n) if w is None else np.asarray(w, dtype=np.float64)
    return w / w.sum()


def fit_affine(x: np.ndarray, y: np.ndarray, w: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least squares ``y ≈ A x + b``. Returns (A (kt, ks), b (kt,))."""
    w = _weights(w, len(x))
    mx, my = w @ x, w @ y
    xc, yc = x - mx, y - my
    sw = np.sqrt(w)[:, None]
    a = np.linalg.lstsq(sw * xc, sw * yc, rcond=None)[0].T
    return a, my - a @ mx


def fit_linear(x: np.ndarray, y: np.ndarray, w: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least squares ``y ≈ A x``. Returns (A, zeros)."""
    sw = np.sqrt(_weights(w, len(x)))[:, None]
    a = np.linalg.lstsq(sw * x, sw * y, rcond=None)[0].T
    return a, np.zeros(y.shape[1])


def fit_orthogonal(x: np.ndarray, y: np.ndarray, w: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Weighted Procrustes with isotropic scale ``y ≈ s Q x + b``. Returns (s Q, b)."""
    w = _weights(w, len(x))
    mx, my = w @ x, w @ y
    xc, yc = x - mx, y - my
    cov = (yc * w[:, None]).T @ xc  # (kt, ks)
    u, sv, vt = np.linalg.svd(cov, full_matrices=False)
    q = u @ vt
    var = float((w * (xc**2).sum(1)).sum())
    s = float(sv.sum() / var) if var > 0 else 1.0
    return s * q, my - s * q @ mx


FITS: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    "affine": fit_affine,
    "linear": fit_linear,
    "orthogonal": fit_orthogonal,
}
TRANSFORMS = (*FITS, "piecewise", "nonlinear")


def fit_map(kind: str, x: np.ndarray, y: np.ndarray, w: np.ndarray | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
    """Fit ``kind`` on pairs x (m, ks) -> y (m, kt).

    ``piecewise`` and ``nonlinear`` return their global affine part (see `fit_piecewise`,
    `fit_residual`).
    """
    base = "affine" if kind in ("nonlinear", "piecewise") else kind
    if base not in FITS:
        raise InputError(f"unknown transform {kind!r}; valid: {', '.join(TRANSFORMS)}")
    return FITS[base](x, y, w)


def fit_residual(x: np.ndarray, y: np.ndarray, matrix: np.ndarray, offset: np.ndarray,
                 max_points: int = 1500, seed: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """A smooth thin-plate-spline correction r with ``T(x) = A x + b + r(x)`` (scipy RBF)."""
    from scipy.interpolate import RBFInterpolator

    rng = np.random.default_rng(seed)
    if len(x) > max_points:
        idx = rng.choice(len(x), max_points, replace=False)
        x, y = x[idx], y[idx]
    resid = y - (x @ matrix.T + offset)
    scale = float(np.mean(np.var(resid, axis=0))) * len(x)
    return RBFInterpolator(x, resid, kernel="thin_plate_spline", smoothing=max(scale, 1e-6),
                           degree=1)


@dataclass
class PiecewiseAffine:
    """``T(x) = Σ_l r_l(x) (A_l x + b_l) + r_0(x) (A x + b)`` (module docstring).

    Attributes:
        matrix: (kt, ks) global linear part A.
        offset: (kt,) global offset b.
        means: (L, ks) piece means in source space.
        chols: (L, ks, ks) Cholesky factors of the piece covariances.
        log_weights: (L + 1,) log mixture shares; the last is the global map's.
        matrices: (L, kt, ks) per-piece linear parts.
        offsets: (L, kt) per-piece offsets.
        background: (ks,) diagonal variance of the global map's broad component (four times
            the source's variance: it wins only far from every piece).

    """

    matrix: np.ndarray
    offset: np.ndarray
    means: np.ndarray
    chols: np.ndarray
    log_weights: np.ndarray
    matrices: np.ndarray
    offsets: np.ndarray
    background: np.ndarray

    def responsibilities(self, x: np.ndarray) -> np.ndarray:
        """(m, ks) -> (m, L + 1) soft membership; the last column is the global map's."""
        logp = []
        for mu, chol in zip(self.means, self.chols, strict=True):
            sol = np.linalg.solve(chol, (x - mu).T)  # (ks, m)
            logp.append(-0.5 * (sol**2).sum(0) - np.log(np.diag(chol)).sum())
        logp.append(-0.5 * ((x - self.background_mean) ** 2 / self.background).sum(1)
                    - 0.5 * np.log(self.background).sum())
        lp = np.stack(logp, 1) + self.log_weights
        return np.exp(lp - logsumexp(lp, axis=1, keepdims=True))

    @property
    def background_mean(self) -> np.ndarray:
        """(ks,) centre of the broad component: the pieces' weighted mean."""
        w = np.exp(self.log_weights[:-1])
        return (w[:, None] * self.means).sum(0) / max(float(w.sum()), 1e-300)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """(m, ks) -> (m, kt)."""
        r = self.responsibilities(x)
        out = r[:, -1:] * (x @ self.matrix.T + self.offset)
        for i, (a, b) in enumerate(zip(self.matrices, self.offsets, strict=True)):
            out += r[:, i:i + 1] * (x @ a.T + b)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (`from_dict` inverts it)."""
        return {k: np.asarray(v).tolist() for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PiecewiseAffine:
        """Inverse of `to_dict`."""
        return cls(**{k: np.asarray(v, dtype=np.float64) for k, v in d.items()})


def fit_piecewise(x: np.ndarray, y: np.ndarray, piece: np.ndarray, matrix: np.ndarray,
                  offset: np.ndarray, *, shrink: float = 1.0, min_points: int | None = None
                  ) -> PiecewiseAffine:
    """A `PiecewiseAffine` from point pairs x (m, ks) -> y (m, kt) labelled by piece.

    Args:
        x: (m, ks) source points.
        y: (m, kt) their partners.
        piece: (m,) piece index of each pair (>= 0), or -1 for pairs of no piece.
        matrix: (kt, ks) global linear part (the fallback, and the ridge's centre).
        offset: (kt,) global offset.
        shrink: ridge strength, in units of the piece's own scatter: A_l minimises
            ``Σ |A_l x_c + b_l - y|² + shrink·tr(S)/ks · |A_l - A|²`` over its pairs, with
            x_c centred and S their scatter matrix.
        min_points: pieces with fewer pairs are dropped (default ks + 2).

    """
    ks = x.shape[1]
    min_points = ks + 2 if min_points is None else min_points
    means, chols, counts, mats, offs = [], [], [], [], []
    total_var = np.var(x, axis=0) + 1e-12
    for p in np.unique(piece[piece >= 0]):
        sel = piece == p
        if sel.sum() < min_points:
            continue
        xp, yp = x[sel], y[sel]
        mx, my = xp.mean(0), yp.mean(0)
        xc, yc = xp - mx, yp - my
        scatter = xc.T @ xc
        lam = shrink * np.trace(scatter) / ks
        # ridge toward the global map: (S + λI) Aᵀ = xcᵀ yc + λ Aᵀ
        a = np.linalg.solve(scatter + lam * np.eye(ks), xc.T @ yc + lam * matrix.T).T
        cov = np.cov(xp, rowvar=False).reshape(ks, ks) + 1e-6 * np.diag(total_var)
        means.append(mx)
        chols.append(np.linalg.cholesky(cov))
        counts.append(sel.sum())
        mats.append(a)
        offs.append(my - a @ mx)
    kt = matrix.shape[0]
    counts_all = np.array([*counts, max(1, int((piece < 0).sum()))], dtype=np.float64)
    return PiecewiseAffine(
        matrix=matrix, offset=offset,
        means=np.array(means).reshape(-1, ks), chols=np.array(chols).reshape(-1, ks, ks),
        log_weights=np.log(counts_all / counts_all.sum()),
        matrices=np.array(mats).reshape(-1, kt, ks), offsets=np.array(offs).reshape(-1, kt),
        background=4.0 * total_var)
