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
   Leaf correspondences are also proposed from scale-free invariants compared by rank
   (`flowtopo.matching._cues`: the order of centroid distances and of how close two leaves
   come), the cue that carries the correspondence between two DIFFERENT networks.
   The winner (`_pick`): with ``select="fit"``, the best-fitting candidate among those whose
   cue consensus is within `CONSENSUS_MARGIN` of the best consensus; with
   ``select="consensus"`` (two different networks), the candidate of highest consensus, or of
   lowest affine-shape residual among those within `SHAPE_MARGIN` of it when the modes leave
   that residual degrees of freedom (`flowtopo.matching._affine_shape`, whose local search
   also proposes candidates).
5. Match across scales: when the two trees have different numbers of modes, the finer tree is
   coarsened to the other's count (its merge threshold raised between the persistences of its
   c-th and (c+1)-th modes), so a mode whose persistence sits near the threshold in one tree
   and not the other cannot tear the matching apart. ``across_scales=False`` keeps every mode
   (unequal counts; the cue search leaves the extra ones unmatched): coarsening by persistence
   can merge two real clusters and keep a split one (docs/method.md "Matching across scales").
6. When a density is exact (a callable ``log_density``), the winner is polished by symmetric
   maximum likelihood (`flowtopo.matching._ml_polish`): the OT refinement pairs two independent
   samples and keeps their noise; the likelihood uses every point against an exact density.
7. ``transform="piecewise"``: one affine map per matched leaf pair, fitted on that pair's
   optimal-transport point pairs and blended by soft leaf membership (`fit_piecewise`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flowtopo.errors import InputError
from flowtopo.matching._affine_shape import AffineShape
from flowtopo.matching._cues import consensus, cue_candidates, leaf_cues
from flowtopo.matching._leaf_search import (
    centroid_fit,
    leaf_candidates,
    needed,
    qap_leaf_candidates,
)
from flowtopo.matching._ml_polish import ml_polish
from flowtopo.matching._result import AlignResult, Candidate, LatentSpace
from flowtopo.matching._transforms import fit_map, fit_piecewise, fit_residual
from flowtopo.matching._translation_fit import fit_score
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
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """OT refinement inside matched leaves; returns (A, b, xs, ys, piece of each pair)."""
    import ot

    xs, ys = np.zeros((0, src.shape[1])), np.zeros((0, tgt.shape[1]))
    piece = np.zeros(0, dtype=np.int64)
    leaf_pairs = _leaf_pairs(ts, tt, pairs)
    for _ in range(iters):
        xs_l, ys_l, ws_l, ps_l = [], [], [], []
        for p, (u, v) in enumerate(leaf_pairs):
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
            ps_l.append(np.full(m, p))
        if not xs_l:
            break
        xs, ys, w = np.concatenate(xs_l), np.concatenate(ys_l), np.concatenate(ws_l)
        piece = np.concatenate(ps_l)
        matrix, offset = fit_map(kind, xs, ys, w)
    return matrix, offset, xs, ys, piece


def _at_leaf_count(space: LatentSpace, tree: DensityTree, c: int, k_neighbors: int,
                   min_persistence: float, min_mass: float) -> DensityTree:
    """``tree``'s density coarsened to about ``c`` modes (its threshold raised), or ``tree``."""
    d = tree.diagram
    pers = np.sort((d[:, 0] - d[:, 1])[np.isfinite(d[:, 0] - d[:, 1])])[::-1]
    if len(pers) <= c:
        return tree
    threshold = 0.5 * (pers[c - 1] + pers[c])
    if threshold <= min_persistence:
        return tree
    return density_tree(space.points, space.log_density, k_neighbors=k_neighbors,
                        min_persistence=float(threshold), min_mass=min_mass)


CONSENSUS_MARGIN = 0.1
"""Candidates whose cue consensus is within this of the best are judged by their fit."""


SHAPE_MARGIN = 0.02
"""With ``select="consensus"``, candidates whose consensus is within this of the best are judged
by their affine shape (`flowtopo.matching._affine_shape`), when the matched modes leave it
enough degrees of freedom (docs/method.md "Affine shape": margins 0 to 0.1 measured)."""


SHAPE_DECISIVE = 10.0
"""With ``select="consensus"``, a candidate whose affine-shape residual is this many times
below every other plausible candidate's (consensus within `CONSENSUS_MARGIN` of the best) is
picked whatever its consensus: its modes are an affine image of the other side's to within the
centroids' noise, the others' are not (docs/method.md "Affine shape")."""


RANDOM_CLIMBS = 32
"""Random assignments climbed (`flowtopo.matching._cues.climb`) beside the quadratic-assignment
proposals when the consensus decides (``select="consensus"``)."""

SELECT = ("fit", "consensus")
"""How `align_tree` picks among candidate matchings (see `_pick`)."""


def _pick(fits: list[float], agree: list[float], leaves: list[int], select: str,
          shape: list[float] | None = None) -> int:
    """Index of the best candidate.

    ``select="fit"`` (latents related by a map of the family, e.g. two models of one data set):
    the best fit among those whose consensus is within `CONSENSUS_MARGIN` of the top: the
    consensus rules out correspondences that contradict the clusters' geometry, the fit (the
    exact likelihood when densities are exact) decides among the plausible ones.

    ``select="consensus"`` (two DIFFERENT networks): the highest consensus among the
    candidates that match the most leaves, the fit breaking ties. There the distribution fit
    of one quick affine map does not tell a right correspondence from a wrong one (measured:
    the supervised affine map itself fails the two-sample check on most pairs of classifiers'
    hidden layers; docs/method.md "Cues"); the order of separations does more often. With
    ``shape`` (each candidate's affine-shape residual, `flowtopo.matching._affine_shape`; NaN
    where it has none), the lowest residual among those within `SHAPE_MARGIN` of that highest
    consensus: the order of separations cannot break a near-symmetry of the modes' positions
    that their affine shape does. A residual `SHAPE_DECISIVE` times below every other one
    within `CONSENSUS_MARGIN` of that consensus wins outright (`_decisive`).

    Candidates without a consensus (fewer than three matched leaves) are judged by fit alone
    when no candidate has one.
    """
    f = np.nan_to_num(np.asarray(fits, dtype=np.float64), nan=np.inf)
    a = np.asarray(agree, dtype=np.float64)
    if not np.isfinite(a).any():
        return int(np.argmin(f))
    if select == "fit":
        ok = ~np.isfinite(a) | (a >= np.nanmax(a) - CONSENSUS_MARGIN)
        return int(np.argmin(np.where(ok, f, np.inf)))
    n = np.where(np.isfinite(a), np.asarray(leaves), -1)
    ok = n == n.max()
    if shape is not None:
        top = np.nanmax(np.where(ok, a, -np.inf))
        res = np.nan_to_num(np.asarray(shape, dtype=np.float64), nan=np.inf)
        decisive = _decisive(np.where(ok & (a >= top - CONSENSUS_MARGIN), res, np.inf))
        if decisive is not None:
            return decisive
        r = np.where(ok & (a >= top - SHAPE_MARGIN), res, np.inf)
        if np.isfinite(r).any():
            return int(np.argmin(r))
    ok &= a >= np.nanmax(np.where(ok, a, -np.inf)) - 1e-12
    return int(np.argmin(np.where(ok, f, np.inf)))


def _decisive(residuals: np.ndarray) -> int | None:
    """Index of the lowest residual when it is `SHAPE_DECISIVE` times below every other one.

    ``residuals``: (n,), inf where a candidate is not eligible. None when no residual is that
    far below the rest, or when there is no other to compare with. Candidates of the same
    residual (to 1e-9, relative) are one assignment that several proposers found: the first
    of them stands for it.
    """
    i = int(np.argmin(residuals))
    low = residuals[i]
    if not np.isfinite(low):
        return None
    others = residuals[np.isfinite(residuals) & (residuals > low * (1 + 1e-9) + 1e-300)]
    return i if others.size and others.min() >= SHAPE_DECISIVE * low else None


@dataclass
class _Selection:
    """The candidates of one direction, scored, the chosen one first."""

    scored: list[Candidate]
    agree: list[float]
    shape: list[float]
    criterion: str
    structural_tie: bool


def _select(ts: DensityTree, tt: DensityTree, source: LatentSpace, target: LatentSpace,
            transform: str, seed: int, tie: float, cue_restarts: int, max_cue: int,
            select: str, rng: np.random.Generator) -> _Selection:
    """Propose matchings (structural, leaf search, cues), score each, put the winner first."""
    found: list[TreeMatching] = TreeMatcher(ts, tt, tie=tie).candidates()
    structural_tie = len(found) > 1
    leaf_search = (leaf_candidates(ts, tt, source, target, transform, seed)
                   or qap_leaf_candidates(ts, tt, source, target, transform, seed))
    cue_set = "networks" if select == "consensus" else "scale_free"
    cs = leaf_cues(ts, source.points, cue_set, seed)
    ct = leaf_cues(tt, target.points, cue_set, seed)
    cues = [TreeMatching(float("nan"), [(0, 0), *pairs]) for _, pairs in cue_candidates(
        cs, ct, restarts=cue_restarts, seed=seed, min_pairs=needed(transform, source.k),
        random_climbs=RANDOM_CLIMBS if select == "consensus" else 0)]
    shape = AffineShape.of(ts, tt, source.points, target.points) if select == "consensus" \
        else None
    shaped = [TreeMatching(float("nan"), [(0, 0), *p]) for p in shape.candidates(seed)] \
        if shape is not None else []
    known = {tuple(sorted(c.pairs)) for c in found}
    for cand in [*leaf_search, *cues[:max_cue], *shaped]:
        if tuple(sorted(cand.pairs)) not in known:
            known.add(tuple(sorted(cand.pairs)))
            found.append(cand)
    first = leaf_search[0] if leaf_search else (cues[0] if cues else found[0])
    _check_identifiable(ts, tt, first.pairs, transform, source.k)
    scored: list[Candidate] = []
    agree: list[float] = []
    residuals: list[float] = []
    criterion = ""
    for cand in found:  # score every candidate after one quick refinement
        a, b = centroid_fit(ts, tt, cand.pairs, transform)
        a, b, _, _, _ = _refine(source.points, target.points, ts, tt, cand.pairs, transform, a,
                                b, 1, 200, rng)
        fit, criterion = fit_score(source, target, a, b, seed)
        scored.append(Candidate(cand.pairs, cand.cost, fit, a, b))
        agree.append(consensus(cs, ct, cand.pairs))
        residuals.append(shape.residual(cand.pairs) if shape is not None else float("nan"))
    leaves = [sum(ts.nodes[u].is_leaf and tt.nodes[v].is_leaf for u, v in c.node_pairs)
              for c in scored]
    pick = _pick([c.fit for c in scored], agree, leaves, select,
                 residuals if shape is not None else None)
    order = sorted(range(len(scored)), key=lambda i: (i != pick, scored[i].fit))
    return _Selection([scored[i] for i in order], [agree[i] for i in order],
                      [residuals[i] for i in order], criterion, structural_tie)


def leaf_round_trip(ts: DensityTree, forward: list[tuple[int, int]],
                    backward: list[tuple[int, int]]) -> float:
    """Mass share of the forward-matched source leaves that the backward matching sends home.

    ``forward`` holds (source node, target node) pairs, ``backward`` (target node, source
    node) pairs from an independent alignment in the other direction; 1.0 when the two leaf
    correspondences are inverse to each other.
    """
    back = dict(backward)
    leaves = [(u, v) for u, v in forward if ts.nodes[u].is_leaf]
    total = sum(ts.nodes[u].mass for u, _ in leaves)
    home = sum(ts.nodes[u].mass for u, v in leaves if back.get(v) == u)
    return float(home / total) if total > 0 else 0.0


def _leaf_of(tree: DensityTree, n: int) -> np.ndarray:
    lab = np.full(n, -1)
    for leaf in tree.leaves():
        lab[np.asarray(leaf.members, dtype=np.int64)] = leaf.id
    return lab


def leaf_agreement(a: AlignResult, b: AlignResult, n_source: int, n_target: int) -> float:
    """Mass share on which two tree alignments of the SAME points send sources to one place.

    ``a`` and ``b`` align the same source rows to the same target rows (e.g. at two latent
    dims: their trees and leaves differ). A source point agrees when the target leaves that
    its leaf is matched to under ``a`` and under ``b`` share at least half the members of the
    smaller; the result is the share of agreeing points among those matched by both.

    Args:
        a: one alignment (with its ``source_tree`` and ``target_tree``).
        b: the other.
        n_source: source rows.
        n_target: target rows.

    """
    ts_a, tt_a = a.source_tree, a.target_tree
    ts_b, tt_b = b.source_tree, b.target_tree
    if ts_a is None or tt_a is None or ts_b is None or tt_b is None:
        raise InputError("leaf_agreement compares two tree alignments (with their trees)")
    ca = {u: v for u, v in a.node_pairs if ts_a.nodes[u].is_leaf}
    cb = {u: v for u, v in b.node_pairs if ts_b.nodes[u].is_leaf}
    la, lb = _leaf_of(ts_a, n_source), _leaf_of(ts_b, n_source)
    ma, mb = _leaf_of(tt_a, n_target), _leaf_of(tt_b, n_target)
    both = np.array([u in ca and w in cb for u, w in zip(la, lb, strict=True)])
    if not both.any():
        return 0.0
    same: dict[tuple[int, int], bool] = {}
    agree = 0
    for u, w in zip(la[both], lb[both], strict=True):
        key = (ca[u], cb[w])
        if key not in same:
            x, y = ma == key[0], mb == key[1]
            same[key] = bool((x & y).sum() >= 0.5 * max(1, min(x.sum(), y.sum())))
        agree += same[key]
    return float(agree / both.sum())


def align_tree(source: LatentSpace, target: LatentSpace, *, transform: str = "affine",
               seed: int = 0, k_neighbors: int = 15, min_persistence: float = 2.0,
               min_mass: float = 0.01, refine_iters: int = 6, per_leaf: int = 1000,
               tie: float = 0.03, polish: bool = True, cue_restarts: int = 24,
               max_cue_candidates: int = 16, round_trip: bool = True, select: str = "fit",
               across_scales: bool = True) -> AlignResult:
    """Align ``source`` to ``target`` by matching their density trees (see module docstring).

    With ``round_trip`` the leaf correspondence is also chosen independently in the other
    direction (target to source, the same trees); ``round_trip`` in the result is the mass
    share on which the two agree (`leaf_round_trip`), and a low agreement flags the map.

    ``select`` (`SELECT`) is how the winner is picked among the candidates (`_pick`):
    ``"fit"`` for latents related by a map of the family, ``"consensus"`` for two different
    networks (what `flowtopo.translate` uses). ``across_scales`` coarsens the finer tree to
    the other's number of modes (module docstring, 5); ``info["modes"]`` holds the two
    counts before, ``info["coarsened"]`` whether it changed a tree.

    Raises:
        NotIdentifiable: too few matched clusters in general position for the map.
        InputError: an unknown ``select``.

    """
    if select not in SELECT:
        raise InputError(f"unknown select {select!r}; valid: {', '.join(SELECT)}")
    rng = np.random.default_rng(seed)
    ts = density_tree(source.points, source.log_density, k_neighbors=k_neighbors,
                      min_persistence=min_persistence, min_mass=min_mass)
    tt = density_tree(target.points, target.log_density, k_neighbors=k_neighbors,
                      min_persistence=min_persistence, min_mass=min_mass)
    modes = [len(ts.leaves()), len(tt.leaves())]
    c = min(modes)
    if across_scales and len(ts.leaves()) > c:
        ts = _at_leaf_count(source, ts, c, k_neighbors, min_persistence, min_mass)
    if across_scales and len(tt.leaves()) > c:
        tt = _at_leaf_count(target, tt, c, k_neighbors, min_persistence, min_mass)
    sel = _select(ts, tt, source, target, transform, seed, tie, cue_restarts,
                  max_cue_candidates, select, rng)
    scored, best, criterion = sel.scored, sel.scored[0], sel.criterion
    agreement = None
    if round_trip:
        back = _select(tt, ts, target, source, transform, seed, tie, cue_restarts,
                       max_cue_candidates, select, rng)
        agreement = leaf_round_trip(ts, best.node_pairs, back.scored[0].node_pairs)
    close = len(scored) > 1 and criterion == "nll" and abs(scored[1].fit - best.fit) < 0.05
    # then refine the winner fully
    a, b, xs, ys, piece = _refine(source.points, target.points, ts, tt, best.node_pairs,
                                  transform, best.matrix, best.offset, refine_iters, per_leaf,
                                  rng)
    polished = ml_polish(source, target, transform, a, b, seed=seed) if polish else None
    if polished is not None:
        a, b = polished.matrix, polished.offset
        if transform == "piecewise":  # point pairs under the polished map
            _, _, xs, ys, piece = _refine(source.points, target.points, ts, tt,
                                          best.node_pairs, transform, a, b, 1, per_leaf, rng)
    best.matrix, best.offset = a, b
    best.fit, criterion = fit_score(source, target, a, b, seed)
    residual = None
    if transform == "nonlinear":
        residual = fit_residual(xs, ys, a, b, seed=seed)
    piecewise = fit_piecewise(xs, ys, piece, a, b) if transform == "piecewise" else None
    return AlignResult(
        matrix=best.matrix, offset=best.offset, method="tree", transform_kind=transform,
        node_pairs=best.node_pairs, cost=best.tree_cost,
        ambiguous=sel.structural_tie or close, candidates=scored, residual=residual,
        piecewise=piecewise, round_trip=agreement, source_tree=ts, target_tree=tt,
        info={"n_candidates": len(scored),
              "fit": best.fit, "fit_criterion": criterion, "consensus": sel.agree[0],
              "affine_shape": None if np.isnan(sel.shape[0]) else sel.shape[0],
              "select": select, "modes": modes,
              "coarsened": [len(ts.leaves()), len(tt.leaves())] != modes,
              "polish": None if polished is None else {
                  "sides": polished.sides, "before": polished.before,
                  "after": polished.after, "iterations": polished.iterations}})
