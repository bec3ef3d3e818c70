"""Leaf correspondences from scale-free invariants, combined by rank (written here).

Between two DIFFERENT networks no single invariant of the density carries the correspondence of
clusters reliably (measured on held-out pairs of classifiers' hidden layers: raw centroid
distances 12-75 % of clusters right, border counts 0-100 %). What does is several scale-free
separations compared by rank, each computed from one density tree's leaves alone:

- ``euclidean``: centroid distances. Not invariant under an anisotropic rescaling, but between
  two networks' principal axes it was the most reliable single cue.
- ``spread``: centroid distance in units of the two clusters' root-mean-square spreads.
- ``mahalanobis``: centroid distance in the metric of the two clusters' pooled covariance.
- ``projected``: centroid distance in units of the two clusters' spreads along the line that
  joins them.
- ``merge``: how far the density drops between two modes, ``(peak_i + peak_j) / 2 -
  level(lowest common ancestor)``: the tree's own merge heights relative to its peaks.
  Invariant under any volume-preserving map and any map with a constant Jacobian.

Each matrix is rank-transformed (its off-diagonal entries replaced by their quantiles), so only
the ORDER of separations is compared: a cue whose scale differs between the spaces still votes.
`cue_candidates` runs scipy's quadratic assignment (FAQ; Vogelstein et al., PLoS ONE 2015) on
every cue with several restarts, pools the distinct assignments, and `consensus` scores an
assignment by the mean Spearman correlation, over all cues, between the two sides' matched
entries. Pooling candidates across cues and then voting recovered the best reachable
correspondence on five network pairs on digits where each cue alone failed on some; whitened
distances and leaf masses were tried as cues and dropped: both lowered the vote (basin masses
of kNN densities are noisy; whitening amplifies the low-variance axes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata, spearmanr

from flowtopo.topology import DensityTree

CUES = ("euclidean", "spread", "mahalanobis", "projected", "merge")


@dataclass
class LeafCues:
    """The leaves of one tree and their rank-transformed separation matrices.

    Attributes:
        leaves: (c,) leaf node ids.
        matrices: cue name -> (c, c) quantile-ranked separations (0 on the diagonal).

    """

    leaves: list[int]
    matrices: dict[str, np.ndarray]


def _rank(d: np.ndarray) -> np.ndarray:
    c = len(d)
    out = np.zeros_like(d)
    if c < 2:
        return out
    iu = np.triu_indices(c, 1)
    out[iu] = rankdata(d[iu]) / len(iu[0])
    return out + out.T


def _merge_drop(tree: DensityTree, leaves: list[int]) -> np.ndarray:
    """(c, c) density drop between modes: mean peak minus the level of their common ancestor."""
    def ancestors(n: int) -> list[int]:
        out = [n]
        while tree.nodes[out[-1]].parent is not None:
            out.append(tree.nodes[out[-1]].parent)  # type: ignore[arg-type]
        return out

    anc = {u: ancestors(u) for u in leaves}
    c = len(leaves)
    d = np.zeros((c, c))
    for i in range(c):
        seen = set(anc[leaves[i]])
        for j in range(i + 1, c):
            lca = next(a for a in anc[leaves[j]] if a in seen)
            peak = 0.5 * (tree.nodes[leaves[i]].peak + tree.nodes[leaves[j]].peak)
            d[i, j] = d[j, i] = peak - tree.nodes[lca].level
    return d


def leaf_cues(tree: DensityTree, points: np.ndarray) -> LeafCues:
    """Rank-transformed separation matrices (`CUES`) of ``tree``'s leaves on ``points`` (n, k)."""
    leaves = [n.id for n in tree.leaves()]
    k = points.shape[1]
    mu = np.array([tree.nodes[u].centroid for u in leaves])
    ridge = 1e-6 * np.trace(np.atleast_2d(np.cov(points, rowvar=False))) / k
    cov = np.array([np.atleast_2d(tree.nodes[u].covariance) + ridge * np.eye(k)
                    for u in leaves])
    c = len(leaves)
    maha, proj = np.zeros((c, c)), np.zeros((c, c))
    for i in range(c):
        for j in range(i + 1, c):
            diff = mu[i] - mu[j]
            pooled = 0.5 * (cov[i] + cov[j])
            maha[i, j] = maha[j, i] = float(np.sqrt(diff @ np.linalg.solve(pooled, diff)))
            u = diff / max(float(np.linalg.norm(diff)), 1e-300)
            spread = 0.5 * (u @ cov[i] @ u + u @ cov[j] @ u)
            proj[i, j] = proj[j, i] = float(np.linalg.norm(diff) / np.sqrt(max(spread, 1e-300)))
    rms = np.sqrt(np.trace(cov, axis1=1, axis2=2) / k)
    dist = np.linalg.norm(mu[:, None] - mu[None], axis=-1)
    raw = {"euclidean": dist,
           "spread": dist / np.sqrt(0.5 * (rms[:, None] ** 2 + rms[None] ** 2)),
           "mahalanobis": maha, "projected": proj, "merge": _merge_drop(tree, leaves)}
    return LeafCues(leaves, {name: _rank(raw[name]) for name in CUES})


def consensus(cs: LeafCues, ct: LeafCues, pairs: list[tuple[int, int]]) -> float:
    """Mean Spearman correlation over cues of the matched leaves' entries.

    Args:
        cs: the source's cues.
        ct: the target's cues.
        pairs: (source leaf id, target leaf id) pairs; other node ids are ignored.

    Returns:
        A score in [-1, 1]; higher means the two sides order their separations alike. NaN
        with fewer than three matched leaves.

    """
    pos_s = {u: i for i, u in enumerate(cs.leaves)}
    pos_t = {v: j for j, v in enumerate(ct.leaves)}
    idx = [(pos_s[u], pos_t[v]) for u, v in pairs if u in pos_s and v in pos_t]
    if len(idx) < 3:
        return float("nan")
    i, j = (np.array(a) for a in zip(*idx, strict=True))
    iu = np.triu_indices(len(i), 1)
    scores = []
    for name in CUES:
        a = cs.matrices[name][np.ix_(i, i)][iu]
        b = ct.matrices[name][np.ix_(j, j)][iu]
        if np.ptp(a) > 0 and np.ptp(b) > 0:
            scores.append(float(spearmanr(a, b).statistic))
    return float(np.mean(scores)) if scores else float("nan")


def cue_candidates(cs: LeafCues, ct: LeafCues, *, restarts: int = 24, seed: int = 0,
                   min_pairs: int = 3) -> list[tuple[float, list[tuple[int, int]]]]:
    """Leaf assignments proposed by quadratic assignment of each cue, best consensus first.

    The smaller side is padded with dummy leaves (zero rows), which stay unmatched.

    Returns:
        [(consensus, [(source leaf, target leaf), ...]), ...], distinct assignments with at
        least ``min_pairs`` leaf pairs.

    """
    from scipy.optimize import quadratic_assignment

    ns, nt = len(cs.leaves), len(ct.leaves)
    m = max(ns, nt)
    seen: set[tuple[tuple[int, int], ...]] = set()
    out = []
    for name in CUES:
        a, b = np.zeros((m, m)), np.zeros((m, m))
        a[:ns, :ns], b[:nt, :nt] = cs.matrices[name], ct.matrices[name]
        for r in range(restarts):
            res = quadratic_assignment(a, b, method="faq", options={
                "maximize": True, "rng": np.random.default_rng(seed + r),
                "P0": "randomized" if r else "barycenter"})
            pairs = tuple((cs.leaves[i], ct.leaves[j]) for i, j in enumerate(res.col_ind)
                          if i < ns and j < nt)
            if len(pairs) < min_pairs or pairs in seen:
                continue
            seen.add(pairs)
            out.append((consensus(cs, ct, list(pairs)), list(pairs)))
    out.sort(key=lambda t: -t[0])
    return out
