"""``method="tree"``: match the density trees of two latent spaces and fit the map.

1. Density trees of both spaces (from their exact densities when given).
2. Tree matching (`TreeMatcher`): the optimal matching and its near-tied alternatives.
3. For each candidate: fit the map on matched node centroids (weight = smaller mass), then
   refine: inside every matched pair of leaves, exact optimal transport (POT ``ot.emd``)
   between the mapped source members and the target members; the plan's barycentric
   projection gives point pairs; refit on all of them (mass-weighted).
4. Score each candidate (after one quick refinement) by how well the mapped source fits the
   target (`fit_score`: exact likelihood when the target density is known, else sliced
   Wasserstein); the best is refined fully
   (``refine_iters`` rounds of ``per_leaf`` points per leaf). ``ambiguous`` when several
   structural matchings tie, or when the two best fits are within 0.05 nats.
   Leaf correspondences are also tried (`flowtopo.matching._leaf_search`): all of them for
   small trees (<= 6 leaves), else those proposed by quadratic assignment of whitened
   centroid distances; learned densities reproduce clusters more reliably than nesting.
5. When a density is exact (a callable ``log_density``), the winner is polished by symmetric
   maximum likelihood (`flowtopo.matching._ml_polish`): the OT refinement pairs two independent
   samples and keeps their noise; the likelihood uses every point against an exact density.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from flowtopo.errors import InputError
from flowtopo.matching._fit_quality import fit_score
from flowtopo.matching._leaf_search import (
    centroid_fit,
    leaf_candidates,
    needed,
    qap_leaf_candidates,
)
from flowtopo.matching._ml_polish import ml_polish
from flowtopo.matching._result import AlignResult, Candidate, LatentSpace
from flowtopo.matching._transforms import fit_map, fit_residual
from flowtopo.matching._tree_match import TreeMatcher, TreeMatching
from flowtopo.topology import DensityTree, density_tree


class NotIdentifiable(InputError):
    """The densities do not pin down the map (too few distinguishable clusters)."""


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _check_identifiable(ts: DensityTree, tt: DensityTree, pairs: list[tuple[int, int]],
                        kind: str, k_s: int) -> None:
    x = np.array([ts.nodes[u].centroid for u, _ in pairs])
    leaves = [u for u, _ in pairs if ts.nodes[u].is_leaf]
    pts = x if kind == "linear" else x - x.mean(0)
    scale = float(np.abs(pts).max()) or 1.0
    rank = np.linalg.matrix_rank(pts / scale, tol=1e-3)
    if rank < k_s:
        raise NotIdentifiable(
            f"the map is not identifiable from the densities: source has "
            f"{len(ts.leaves())} mode(s), target {len(tt.leaves())}, and the {len(leaves)} "
            f"matched clusters span only {rank} of {k_s} dims; {_article(kind)} {kind} map "
            f"needs "
            f"{needed(kind, k_s)} matched clusters in general position (an isotropic "
            "Gaussian, for one, is invariant under every rotation)")


def _leaf_pairs(ts: DensityTree, tt: DensityTree, pairs: list[tuple[int, int]]
                ) -> list[tuple[int, int]]:
    """Matched pairs usable for point-level refinement: the finest matched clusters."""
    matched_s = {u for u, _ in pairs}
    out = []
    for u, v in pairs:
        kids = ts.nodes[u].children
        if not any(c in matched_s for c in kids):
            out.append((u, v))
    return out


def _refine(src: np.ndarray, tgt: np.ndarray, ts: DensityTree, tt: DensityTree,
            pairs: list[tuple[int, int]], kind: str, matrix: np.ndarray, offset: np.ndarray,
            iters: int, per_leaf: int, rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    import ot

    xs, ys = np.zeros((0, src.shape[1])), np.zeros((0, tgt.shape[1]))
    leaf_pairs = _leaf_pairs(ts, tt, pairs)
    for _ in range(iters):
        xs_l, ys_l, ws_l = [], [], []
        for u, v in leaf_pairs:
            mu, mv = ts.nodes[u].members, tt.nodes[v].members
            m = min(per_leaf, len(mu), len(mv))
            if m < 2:
                continue
            a = src[rng.choice(mu, m, replace=False)]
            b = tgt[rng.choice(mv, m, replace=False)]
            cost = ot.dist(a @ matrix.T + offset, b)
            plan = ot.emd(np.full(m, 1 / m), np.full(m, 1 / m), cost)
            xs_l.append(a)
            ys_l.append(m * plan @ b)  # barycentric projection of the plan
            ws_l.append(np.full(m, min(ts.nodes[u].mass, tt.nodes[v].mass) / m))
        if not xs_l:
            break
        xs, ys, w = np.concatenate(xs_l), np.concatenate(ys_l), np.concatenate(ws_l)
        matrix, offset = fit_map(kind, xs, ys, w)
    return matrix, offset, xs, ys


def align_tree(source: LatentSpace, target: LatentSpace, *, transform: str = "affine",
               seed: int = 0, k_neighbors: int = 15, min_persistence: float = 2.0,
               min_mass: float = 0.01, refine_iters: int = 6, per_leaf: int = 1000,
               tie: float = 0.03, polish: bool = True, **_: Any) -> AlignResult:
    """Align ``source`` to ``target`` by matching their density trees (see module docstring).

    Raises:
        NotIdentifiable: too few matched clusters in general position for the map.

    """
    rng = np.random.default_rng(seed)
    ts = density_tree(source.points, source.log_density, k_neighbors=k_neighbors,
                      min_persistence=min_persistence, min_mass=min_mass)
    tt = density_tree(target.points, target.log_density, k_neighbors=k_neighbors,
                      min_persistence=min_persistence, min_mass=min_mass)
    matcher = TreeMatcher(ts, tt, tie=tie)
    found: list[TreeMatching] = matcher.candidates()
    structural_tie = len(found) > 1
    leaf_search = (leaf_candidates(ts, tt, source, target, transform, seed)
                   or qap_leaf_candidates(ts, tt, source, target, transform, seed))
    known = {tuple(sorted(c.pairs)) for c in found}
    found += [c for c in leaf_search if tuple(sorted(c.pairs)) not in known]
    _check_identifiable(ts, tt, found[0].pairs if not leaf_search else leaf_search[0].pairs,
                        transform, source.k)
    scored: list[Candidate] = []
    for cand in found:  # score every candidate after one quick refinement
        a, b = centroid_fit(ts, tt, cand.pairs, transform)
        a, b, _, _ = _refine(source.points, target.points, ts, tt, cand.pairs, transform, a, b,
                             1, 200, rng)
        fit, criterion = fit_score(source, target, a, b, seed)
        scored.append(Candidate(cand.pairs, cand.cost, fit, a, b))
    scored.sort(key=lambda c: c.fit)
    close = len(scored) > 1 and criterion == "nll" and scored[1].fit - scored[0].fit < 0.05
    best = scored[0]  # then refine the winner fully
    a, b, xs, ys = _refine(source.points, target.points, ts, tt, best.node_pairs, transform,
                           best.matrix, best.offset, refine_iters, per_leaf, rng)
    polished = ml_polish(source, target, transform, a, b, seed=seed) if polish else None
    if polished is not None:
        a, b = polished.matrix, polished.offset
    best.matrix, best.offset = a, b
    best.fit, criterion = fit_score(source, target, a, b, seed)
    residual = None
    if transform == "nonlinear":
        residual = fit_residual(xs, ys, a, b, seed=seed)
    return AlignResult(
        matrix=best.matrix, offset=best.offset, method="tree", transform_kind=transform,
        node_pairs=best.node_pairs, cost=best.tree_cost, ambiguous=structural_tie or close,
        candidates=scored, residual=residual,
        info={"source_tree": ts, "target_tree": tt, "n_candidates": len(scored),
              "fit": best.fit, "fit_criterion": criterion,
              "polish": None if polished is None else {
                  "sides": polished.sides, "before": polished.before,
                  "after": polished.after, "iterations": polished.iterations}})
