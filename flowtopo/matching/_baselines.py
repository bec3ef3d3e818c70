"""Baselines to beat, each a real implementation (numpy/scipy/POT).

- ``identity``: T(z) = z (dims padded/truncated).
- ``gw``: Gromov-Wasserstein (POT ``ot.gromov.gromov_wasserstein``) between subsamples'
  distance matrices; the coupling's barycentric projection gives pairs; fit the map.
  O(n_sub²) memory. Reference: Mémoli 2011; Peyré, Cuturi, Solomon, ICML 2016.
- ``cluster_qap``: k-means centroids in both spaces, quadratic assignment (scipy
  ``quadratic_assignment``, FAQ, several seeds) of the centroid distance matrices, Procrustes,
  then nearest-centroid refinement (the mini-vec2vec recipe; Dar et al. 2025).
- ``relative``: relative representations (cosine similarities to anchors; Moschella et al.,
  ICLR 2023) with GIVEN anchor pairs, decoded to target coordinates by least squares.
  Semi-supervised.
- ``oracle``: the map fitted on TRUE pairs (least squares / Procrustes). Supervised upper bound.
"""

from __future__ import annotations

import numpy as np

from flowtopo.errors import InputError
from flowtopo.matching._result import AlignResult, LatentSpace
from flowtopo.matching._transforms import fit_map, fit_residual


def _subsample(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return x if len(x) <= n else x[rng.choice(len(x), n, replace=False)]


def align_identity(source: LatentSpace, target: LatentSpace, *, transform: str = "affine",
                   seed: int = 0) -> AlignResult:
    """T(z) = z (``transform`` and ``seed`` are accepted like every method's, and unused)."""
    a = np.eye(target.k, source.k)
    return AlignResult(a, np.zeros(target.k), "identity", "linear")


def align_gw(source: LatentSpace, target: LatentSpace, *, transform: str = "affine",
             seed: int = 0, n_sub: int = 500) -> AlignResult:
    """Gromov-Wasserstein on subsamples, then the map fitted on the coupling."""
    import ot

    rng = np.random.default_rng(seed)
    xs, xt = _subsample(source.points, n_sub, rng), _subsample(target.points, n_sub, rng)
    cs, ct = ot.dist(xs, xs, metric="euclidean"), ot.dist(xt, xt, metric="euclidean")
    cs, ct = cs / cs.max(), ct / ct.max()
    p, q = ot.unif(len(xs)), ot.unif(len(xt))
    runs = []
    for attempt in range(3):  # GW is non-convex: a few random starts, keep the lowest loss
        g0 = rng.permutation(np.eye(len(xs), len(xt))) / len(xs) if attempt else None
        plan, log = ot.gromov.gromov_wasserstein(cs, ct, p, q, loss_fun="square_loss",
                                                 log=True, G0=g0)
        runs.append((float(log["gw_dist"]), attempt, plan))
    value, _, plan = min(runs, key=lambda r: (r[0], r[1]))
    ys = (plan @ xt) / plan.sum(1, keepdims=True)
    a, b = fit_map(transform, xs, ys)
    res = fit_residual(xs, ys, a, b, seed=seed) if transform == "nonlinear" else None
    return AlignResult(a, b, "gw", transform, cost=value, residual=res,
                       info={"n_sub": len(xs)})


def align_cluster_qap(source: LatentSpace, target: LatentSpace, *, transform: str = "affine",
                      seed: int = 0, n_clusters: int = 24, restarts: int = 8,
                      iters: int = 10) -> AlignResult:
    """k-means + quadratic assignment + Procrustes + refinement (mini-vec2vec)."""
    from scipy.optimize import quadratic_assignment
    from sklearn.cluster import KMeans

    k = min(n_clusters, len(source.points) // 5, len(target.points) // 5)
    cs = KMeans(k, n_init=4, random_state=seed).fit(source.points).cluster_centers_
    ct = KMeans(k, n_init=4, random_state=seed).fit(target.points).cluster_centers_
    ds, dt = np.linalg.norm(cs[:, None] - cs[None], axis=-1), np.linalg.norm(
        ct[:, None] - ct[None], axis=-1)
    tries = [quadratic_assignment(ds, dt, method="faq", options={
        "maximize": True, "rng": np.random.default_rng(seed + r),
        "P0": "randomized" if r else "barycenter"}) for r in range(max(1, restarts))]
    best = max(tries, key=lambda res: res.fun)  # the first of equals, as before
    perm = best.col_ind
    a, b = fit_map("orthogonal", cs, ct[perm])
    for _ in range(iters):  # refinement: nearest target centroid, refit
        mapped = cs @ a.T + b
        nearest = np.argmin(np.linalg.norm(mapped[:, None] - ct[None], axis=-1), 1)
        a, b = fit_map(transform, cs, ct[nearest])
    return AlignResult(a, b, "cluster_qap", transform, cost=float(best.fun),
                       info={"n_clusters": k})


def _rel(z: np.ndarray, anchors: np.ndarray, center: np.ndarray) -> np.ndarray:
    zc, ac = z - center, anchors - center
    zc = zc / np.maximum(np.linalg.norm(zc, axis=1, keepdims=True), 1e-12)
    ac = ac / np.maximum(np.linalg.norm(ac, axis=1, keepdims=True), 1e-12)
    return zc @ ac.T


def align_relative(source: LatentSpace, target: LatentSpace, *,
                   anchors: tuple[np.ndarray, np.ndarray] | None = None, transform: str = "affine",
                   seed: int = 0) -> AlignResult:
    """Relative representations with given anchor pairs (semi-supervised), linearised.

    The decoder from relative coordinates to target latents is fitted by least squares on the
    target's own points; the map is then fitted on source points -> decoded target points.
    """
    if anchors is None:
        raise InputError("method 'relative' needs anchors=(source_anchors, target_anchors), "
                         "paired rows")
    a_s, a_t = (np.asarray(a, dtype=np.float64) for a in anchors)
    if a_s.shape[0] != a_t.shape[0] or a_s.shape[0] < 2:
        raise InputError("anchors must be two arrays with the same number (>= 2) of rows")
    rt = _rel(target.points, a_t, target.points.mean(0))
    dec = np.linalg.lstsq(np.c_[rt, np.ones(len(rt))], target.points, rcond=None)[0]
    rs = _rel(source.points, a_s, source.points.mean(0))
    decoded = np.c_[rs, np.ones(len(rs))] @ dec
    a, b = fit_map(transform, source.points, decoded)
    return AlignResult(a, b, "relative", transform, supervised=True,
                       info={"n_anchors": len(a_s)})


def align_oracle(source: LatentSpace, target: LatentSpace, *,
                 pairs: tuple[np.ndarray, np.ndarray] | None = None, transform: str = "affine",
                 seed: int = 0) -> AlignResult:
    """The map fitted on true pairs: the supervised upper bound (flagged ``supervised``)."""
    if pairs is None:
        raise InputError("method 'oracle' needs pairs=(source_points, target_points), paired "
                         "rows (it is the supervised upper bound)")
    xs, xt = (np.asarray(p, dtype=np.float64) for p in pairs)
    if xs.shape[0] != xt.shape[0]:
        raise InputError("oracle pairs must have the same number of rows")
    a, b = fit_map(transform, xs, xt)
    res = fit_residual(xs, xt, a, b, seed=seed) if transform == "nonlinear" else None
    return AlignResult(a, b, "oracle", transform, supervised=True, residual=res)
