"""Leaf correspondences from separations of the leaves, compared by rank (written here).

What two latent spaces share, when no invariant of the density carries the correspondence of
clusters exactly, is which clusters lie near each other and which far apart. Separations of
each pair of leaves are computed from one density tree's leaves alone:

- ``euclidean``: the distance between the two leaves' centroids.
- ``gap``: how close the two leaves come, the 2 % quantile of the distances between their
  members (the width of the low-density valley between two modes: two classes that a network
  confuses touch, whatever the network).
- ``spread``: centroid distance in units of the two clusters' root-mean-square spreads.
- ``mahalanobis``: centroid distance in the metric of the two clusters' pooled covariance.
- ``projected``: centroid distance in units of the two clusters' spreads along the line that
  joins them.
- ``merge``: how far the density drops between two modes, ``(peak_i + peak_j) / 2 -
  level(lowest common ancestor)``: the tree's own merge heights relative to its peaks.

Each matrix is rank-transformed (its off-diagonal entries replaced by their quantiles), so only
the ORDER of separations is compared: a cue whose scale differs between the spaces still votes.
`consensus` scores an assignment by the mean Spearman correlation, over the cues, between the
two sides' matched entries. `cue_candidates` proposes assignments by scipy's quadratic
assignment (FAQ; Vogelstein et al., PLoS ONE 2015) on every cue with several restarts, then
climbs each of the best by swapping leaves while the consensus rises (`climb`).

Two cue sets (`CUE_SETS`):

- ``scale_free`` (spread, Mahalanobis, projected, merge, with euclidean): for latents related
  by a map of the family (an anisotropic affine map changes the order of plain distances, not
  of these); there the fit decides among near-top candidates.
- ``networks`` (euclidean, gap): for two DIFFERENT networks, where the consensus decides. On
  pairs of classifiers' hidden layers (the 10 benchmark pairs and 8 held-out pairs with other
  architectures and seeds, latent dims 4 to 8) the Spearman correlation of each cue between
  the two sides under the TRUE correspondence was, mean (min) over 49 pair-dims: euclidean
  0.77 (0.09), gap 0.76 (0.32), Mahalanobis 0.66 (0.07), spread 0.63 (-0.27), projected 0.59
  (-0.55), merge 0.34 (-0.88). Averaged in, the last four drowned the two reliable ones: the
  leaf mass matched to the right class by the highest-consensus assignment rose from 0.63 to
  0.69 on the benchmark pairs and from 0.50 to 0.63 on the held-out ones with the two alone
  (docs/method.md "Cues").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from flowtopo.topology import DensityTree

CUE_SETS: dict[str, tuple[str, ...]] = {
    "scale_free": ("euclidean", "spread", "mahalanobis", "projected", "merge"),
    "networks": ("euclidean", "gap"),
}
GAP_QUANTILE = 0.02
"""The quantile of member-to-member distances that measures how close two leaves come."""
GAP_MEMBERS = 300
"""Members per leaf the gap is computed on (a seeded subsample of larger leaves)."""


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


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """(m,) 1-based ranks of an (m,) vector, ties given their mean rank.

    What ``scipy.stats.rankdata(x)`` returns, to the bit (tested), without its per-call checks:
    `climb` ranks two short vectors per consensus evaluation, thousands of times per alignment,
    where scipy's overhead was 40% of the tree method's time.
    """
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    first = np.empty(len(x), dtype=bool)
    first[:1] = True
    np.not_equal(xs[1:], xs[:-1], out=first[1:])
    dense = np.cumsum(first) - 1
    starts = np.append(np.flatnonzero(first), len(x))
    ranks = np.empty(len(x))
    ranks[order] = 0.5 * (starts[dense] + starts[dense + 1] - 1) + 1
    return ranks


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two (m,) vectors (Pearson's on their ranks)."""
    ra, rb = _average_ranks(a), _average_ranks(b)
    ra -= ra.mean()
    rb -= rb.mean()
    return float(ra @ rb / np.sqrt((ra @ ra) * (rb @ rb)))


def _gap(members: list[np.ndarray]) -> np.ndarray:
    """(c, c) `GAP_QUANTILE` of the distances between the members of leaves i and j."""
    c = len(members)
    g = np.zeros((c, c))
    for i in range(c):
        for j in range(i + 1, c):
            d = np.linalg.norm(members[i][:, None] - members[j][None], axis=-1)
            g[i, j] = g[j, i] = float(np.quantile(d, GAP_QUANTILE))
    return g


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


def _shape_cues(tree: DensityTree, leaves: list[int], points: np.ndarray, mu: np.ndarray
                ) -> dict[str, np.ndarray]:
    """The spread-scaled separations: spread, mahalanobis, projected, each (c, c)."""
    k = points.shape[1]
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
    return {"spread": dist / np.sqrt(0.5 * (rms[:, None] ** 2 + rms[None] ** 2)),
            "mahalanobis": maha, "projected": proj}


def leaf_cues(tree: DensityTree, points: np.ndarray, cues: str = "scale_free", seed: int = 0
              ) -> LeafCues:
    """Rank-transformed separation matrices of ``tree``'s leaves on ``points`` (n, k).

    Args:
        tree: a density tree of ``points``.
        points: (n, k) the points the tree was built on (its members index them).
        cues: a key of `CUE_SETS`.
        seed: seeds the subsample of leaves larger than `GAP_MEMBERS`.

    """
    names = CUE_SETS[cues]
    leaves = [n.id for n in tree.leaves()]
    mu = np.array([tree.nodes[u].centroid for u in leaves])
    raw = {"euclidean": np.linalg.norm(mu[:, None] - mu[None], axis=-1)}
    if "gap" in names:
        rng = np.random.default_rng(seed)
        members = []
        for u in leaves:
            m = np.asarray(tree.nodes[u].members)
            if len(m) > GAP_MEMBERS:
                m = rng.choice(m, GAP_MEMBERS, replace=False)
            members.append(points[m])
        raw["gap"] = _gap(members)
    if "spread" in names:
        raw.update(_shape_cues(tree, leaves, points, mu))
    if "merge" in names:
        raw["merge"] = _merge_drop(tree, leaves)
    return LeafCues(leaves, {name: _rank(raw[name]) for name in names})


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
    for name in cs.matrices:
        a = cs.matrices[name][np.ix_(i, i)][iu]
        b = ct.matrices[name][np.ix_(j, j)][iu]
        if np.ptp(a) > 0 and np.ptp(b) > 0:
            scores.append(_spearman(a, b))
    return float(np.mean(scores)) if scores else float("nan")


def climb(cs: LeafCues, ct: LeafCues, pairs: list[tuple[int, int]]
          ) -> tuple[float, list[tuple[int, int]]]:
    """Local search from ``pairs``: swap two targets, or take an unmatched leaf, while it helps.

    An unmatched leaf is taken on either side: a pair's target replaced by an unmatched target,
    or its source by an unmatched source (with more source leaves than target leaves, which
    ones stay unmatched is part of the search: a class one network splits in two modes).

    Returns:
        (consensus, pairs) at a local maximum of `consensus` (first improvement, to a fixed
        point; each pass is O(c²) consensus evaluations).

    """
    cur = [(u, v) for u, v in pairs if u in cs.leaves and v in ct.leaves]
    best = consensus(cs, ct, cur)
    if not np.isfinite(best):
        return best, cur

    def unmatched(cur: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
        return ([u for u in cs.leaves if u not in {a for a, _ in cur}],
                [v for v in ct.leaves if v not in {b for _, b in cur}])

    free_s, free_t = unmatched(cur)
    improved = True
    while improved:
        improved = False
        for a in range(len(cur)):
            trials = []
            for b in range(a + 1, len(cur)):  # swap the targets of a and b
                t = list(cur)
                t[a], t[b] = (cur[a][0], cur[b][1]), (cur[b][0], cur[a][1])
                trials.append(t)
            for v in free_t:  # give a an unmatched target
                t = list(cur)
                t[a] = (cur[a][0], v)
                trials.append(t)
            for u in free_s:  # or an unmatched source its target
                t = list(cur)
                t[a] = (u, cur[a][1])
                trials.append(t)
            for trial in trials:
                score = consensus(cs, ct, trial)
                if score > best + 1e-12:
                    cur, best, improved = trial, score, True
                    free_s, free_t = unmatched(cur)
                    break  # first improvement; the moves of a are rebuilt on the next pass
    return best, cur


def cue_candidates(cs: LeafCues, ct: LeafCues, *, restarts: int = 24, seed: int = 0,
                   min_pairs: int = 3, climbs: int = 8, random_climbs: int = 0
                   ) -> list[tuple[float, list[tuple[int, int]]]]:
    """Leaf assignments proposed by quadratic assignment of each cue, best consensus first.

    The smaller side is padded with dummy leaves (zero rows), which stay unmatched. The
    ``climbs`` best proposals, and ``random_climbs`` random assignments (seeded), are then
    improved by `climb` and pooled with the rest.

    Returns:
        [(consensus, [(source leaf, target leaf), ...]), ...], distinct assignments with at
        least ``min_pairs`` leaf pairs.

    """
    from scipy.optimize import quadratic_assignment

    ns, nt = len(cs.leaves), len(ct.leaves)
    m = max(ns, nt)
    seen: set[tuple[tuple[int, int], ...]] = set()
    out = []
    for name in cs.matrices:
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
    rng = np.random.default_rng(seed)
    def random_start() -> list[tuple[int, int]]:
        sources = cs.leaves if ns <= nt else [int(u) for u in rng.permutation(cs.leaves)]
        return list(zip(sources, [int(v) for v in rng.permutation(ct.leaves)], strict=False))

    starts = [p for _, p in out[:climbs]] + [random_start() for _ in range(random_climbs)]
    for start in starts:
        score, better = climb(cs, ct, start)
        key = tuple(better)
        if key not in seen and np.isfinite(score) and len(better) >= min_pairs:
            seen.add(key)
            out.append((score, better))
    out.sort(key=lambda t: -t[0])
    return out
