"""Leaf-level correspondences, beside the structural tree matching.

Learned densities reproduce a data set's clusters more reliably than their nesting (two models
of the same digits may nest the same ten modes differently, or not at all), and the top-down
tree matcher can only delete whole subtrees. So leaves are also matched directly:

- `leaf_candidates`: small trees (<= 6 leaves on the smaller side): every injective leaf
  assignment is fitted from leaf centroids and scored by `fit_score`.
- `qap_leaf_candidates`: any size: both spaces are whitened (zero mean, identity covariance),
  which turns an affine relation between them into an orthogonal one, so the distance
  matrices of the whitened leaf centroids agree up to a permutation; scipy's
  ``quadratic_assignment`` (FAQ, several restarts; the smaller side padded with dummy leaves)
  proposes permutations, each fitted and scored by `fit_score`.

Each returns `TreeMatching` s whose pairs are (root, root) plus leaf pairs; the caller scores
them with the structural candidates.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from flowtopo.matching._result import LatentSpace
from flowtopo.matching._transforms import fit_map
from flowtopo.matching._translation_fit import fit_score
from flowtopo.matching._tree_match import TreeMatching
from flowtopo.topology import DensityTree


def needed(kind: str, k: int) -> int:
    """Matched clusters in general position a ``kind`` map of k dims needs."""
    return k if kind == "linear" else k + 1


def centroid_fit(ts: DensityTree, tt: DensityTree, pairs: list[tuple[int, int]], kind: str
                  ) -> tuple[np.ndarray, np.ndarray]:
    x = np.array([ts.nodes[u].centroid for u, _ in pairs])
    y = np.array([tt.nodes[v].centroid for _, v in pairs])
    w = np.array([min(ts.nodes[u].mass, tt.nodes[v].mass) for u, v in pairs]) + 1e-6
    return fit_map(kind, x, y, w)


def leaf_candidates(ts: DensityTree, tt: DensityTree, source: LatentSpace,
                     target: LatentSpace, kind: str, seed: int, max_leaves: int = 6,
                     keep: int = 4, max_assignments: int = 5040) -> list[TreeMatching]:
    """Leaf correspondences ranked by how well their centroid fit maps source onto target.

    Learned densities reproduce the data's clusters more reliably than their nesting, so for
    small trees (<= ``max_leaves`` leaves on the smaller side, and at most ``max_assignments``
    injective assignments: 6 leaves against 12 would be 665,280) every injective assignment of
    leaves is fitted from leaf centroids and scored by `fit_score` on 1,000 points; the best
    ``keep`` join the structural candidates. Returns [] when the search does not apply.
    """
    ls, lt = [n.id for n in ts.leaves()], [n.id for n in tt.leaves()]
    m = min(len(ls), len(lt))
    if m > max_leaves or m < needed(kind, source.k):
        return []
    if math.perm(max(len(ls), len(lt)), m) > max_assignments:
        return []
    scored = []
    for sub in itertools.combinations(ls, m):
        for perm in itertools.permutations(lt, m):
            pairs = list(zip(sub, perm, strict=True))
            a, b = centroid_fit(ts, tt, pairs, kind)
            fit, _ = fit_score(source, target, a, b, seed, n=1000)
            if np.isfinite(fit):
                scored.append((fit, [(0, 0), *pairs]))
    scored.sort(key=lambda t: t[0])
    return [TreeMatching(float("nan"), list(p)) for _, p in scored[:keep]]


def _whitened(points: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    mean = points.mean(0)
    evals, evecs = np.linalg.eigh(np.cov(points, rowvar=False))
    return (centroids - mean) @ evecs / np.sqrt(np.maximum(evals, 1e-12))


def qap_leaf_candidates(ts: DensityTree, tt: DensityTree, source: LatentSpace,
                         target: LatentSpace, kind: str, seed: int, restarts: int = 12,
                         keep: int = 4) -> list[TreeMatching]:
    """Leaf correspondences from quadratic assignment of whitened centroid distances.

    Returns the ``keep`` best (by `fit_score` on 1,000 points) distinct permutations found
    in ``restarts`` FAQ runs; [] when either side has fewer leaves than the map needs.
    """
    from scipy.optimize import quadratic_assignment

    ls, lt = [n.id for n in ts.leaves()], [n.id for n in tt.leaves()]
    if min(len(ls), len(lt)) < needed(kind, source.k):
        return []
    cs = _whitened(source.points, np.array([ts.nodes[u].centroid for u in ls]))
    ct = _whitened(target.points, np.array([tt.nodes[v].centroid for v in lt]))
    m = max(len(ls), len(lt))
    ds, dt = np.zeros((m, m)), np.zeros((m, m))  # dummy leaves: zero rows and columns
    ds[: len(ls), : len(ls)] = np.linalg.norm(cs[:, None] - cs[None], axis=-1)
    dt[: len(lt), : len(lt)] = np.linalg.norm(ct[:, None] - ct[None], axis=-1)
    seen: set[tuple[tuple[int, int], ...]] = set()
    scored = []
    for r in range(restarts):
        res = quadratic_assignment(ds, dt, method="faq", options={
            "maximize": True, "rng": np.random.default_rng(seed + r),
            "P0": "randomized" if r else "barycenter"})
        pairs = tuple((ls[i], lt[j]) for i, j in enumerate(res.col_ind)
                      if i < len(ls) and j < len(lt))
        if pairs in seen or len(pairs) < needed(kind, source.k):
            continue
        seen.add(pairs)
        a, b = centroid_fit(ts, tt, list(pairs), kind)
        fit, _ = fit_score(source, target, a, b, seed, n=1000)
        if np.isfinite(fit):
            scored.append((fit, [(0, 0), *pairs]))
    scored.sort(key=lambda t: t[0])
    return [TreeMatching(float("nan"), list(p)) for _, p in scored[:keep]]
