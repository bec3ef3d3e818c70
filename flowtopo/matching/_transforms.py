"""Fitting maps between latent spaces from weighted point pairs (numpy only).

Every fit solves ``min Σ_i w_i |T(x_i) - y_i|²`` over its family:

- ``affine``: T(x) = A x + b.
- ``linear``: T(x) = A x.
- ``orthogonal``: T(x) = s Q x + b with Q semi-orthogonal (QᵀQ = I or QQᵀ = I) and s > 0
  (weighted Procrustes with isotropic scale; Umeyama 1991).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

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
TRANSFORMS = (*FITS, "nonlinear")


def fit_map(kind: str, x: np.ndarray, y: np.ndarray, w: np.ndarray | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
    """Fit ``kind`` (``nonlinear`` starts from affine) on pairs x (m, ks) -> y (m, kt)."""
    base = "affine" if kind == "nonlinear" else kind
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
