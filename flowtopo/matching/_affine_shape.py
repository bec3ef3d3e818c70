"""The affine shape of two trees' leaves, a leaf-correspondence cue (written here).

How well one affine map carries one side's mode centroids onto the other's under a leaf
correspondence.

Two networks' representations of the same inputs are, to first order, related by an affine map
(a supervised affine map transfers labels at 0.94-1.0 of the target's own accuracy on the
benchmark pairs). Under the RIGHT correspondence the c matched centroids of one side are then
an affine image of the other's; under a wrong one they are not. The normalised residual of the
least-squares affine fit, forward and backward,

    r = 1/2 * sum_{A->B in (S->T, T->S)} ||[A 1] W - B||² / ||B - mean(B)||²,

is blind to a similarity of either side (rotation, reflection, uniform scale, translation), and
its forward term to any affine map of the source (its backward term to one of the target). The
rank cues of `flowtopo.matching._cues` are not (an anisotropic map reorders distances). Each
term is weighted by its side's variance on purpose: the fully affine-invariant version (one
minus the mean squared canonical correlation of the matched centroids) weighs a low-variance
direction, mostly noise, like the leading ones, and ranked the true correspondence first on 3
of 5 hierarchical pairs at k = 3 and 2 of 5 at k = 4 (against 4 and 4 below). It only
says something when the fit has residual degrees of freedom: an affine map of k dims fits any
k + 1 points exactly, so c points leave c - k - 1 per output dim (`AFFINE_SHAPE_DOF` needed;
with a latent dim too large for that, the centroids are compared in their leading principal
axes, `leading_centroids`).

Measured on the hierarchical benchmark pairs (8 classes, 8 modes a side; all 40,320 leaf
assignments enumerated at latent dims 3 and 4; docs/method.md "Affine shape"): the true
correspondence had the lowest residual of all 40,320 on 4 of 5 pairs at k = 3 and at k = 4;
the correlation of the whitened centroid distances (what `_leaf_search.qap_leaf_candidates`
assigns by) put it first on 3 of 5 at k = 3 and 2 of 5 at k = 4. The sibling classes of those
sets sit in near-symmetric positions (regular simplices) that distances barely break.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flowtopo.topology import DensityTree

AFFINE_SHAPE_DOF = 3
"""Residual degrees of freedom per output dim (matched modes - k - 1) the criterion needs."""


def leading_centroids(tree: DensityTree, leaves: list[int], points: np.ndarray, dims: int
                      ) -> np.ndarray:
    """(c, dims) centroids of ``leaves`` in the leading ``dims`` principal axes of ``points``.

    With c matched modes an affine fit in k dims leaves c - k - 1 residual degrees of freedom;
    when the latent dim is too large for `AFFINE_SHAPE_DOF`, the shape is compared in the
    directions of largest variance (for the pca encoder: the latent's own first coordinates).
    """
    centred = points - points.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    mu = np.array([tree.nodes[u].centroid for u in leaves])
    return (mu - points.mean(0)) @ vt[:dims].T


def _residuals(cs: np.ndarray, ct: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """(T,) `affine_shape_residual` of T assignments at once.

    Rows ``i`` (T, m) of ``cs`` are matched to rows ``j`` (T, m) of ``ct``.

    With both sides centred, the least-squares fit of B on [A 1] projects B onto A's column
    space: the residual is ||B||² - ||Q_Aᵀ B||² (Q_A from a batched QR of the centred A).
    """
    x, y = cs[i], ct[j]
    x = x - x.mean(1, keepdims=True)
    y = y - y.mean(1, keepdims=True)
    qx, qy = np.linalg.qr(x)[0], np.linalg.qr(y)[0]
    out = np.zeros(len(i))
    for q, b in ((qx, y), (qy, x)):
        total = (b**2).sum((1, 2))
        kept = (np.swapaxes(q, 1, 2) @ b) ** 2
        out += np.maximum(total - kept.sum((1, 2)), 0.0) / np.maximum(total, 1e-300)
    return out / 2


def affine_shape_residual(cs: np.ndarray, ct: np.ndarray, pairs: list[tuple[int, int]]
                          ) -> float:
    """Symmetric normalised residual of the affine fit of matched centroids (module docstring).

    Args:
        cs: (c_s, k) source centroids.
        ct: (c_t, k_t) target centroids.
        pairs: (source row, target row) index pairs into ``cs`` and ``ct``, more than k + 1.

    Returns:
        A number in [0, 1]: 0 when the matched centroids are exact affine images of each other.

    """
    p = np.asarray(pairs, dtype=np.int64)
    return float(_residuals(cs, ct, p[None, :, 0], p[None, :, 1])[0])


def _descend(cs: np.ndarray, ct: np.ndarray, start: list[tuple[int, int]]
             ) -> tuple[float, list[tuple[int, int]]]:
    """Local search from ``start``: swap two targets, or take an unmatched row, while it helps.

    The moves of `flowtopo.matching._cues.climb` on indices, first improvement to a fixed
    point; each pass scores all its moves in one batch and takes the first that improves.
    """
    cur = np.asarray(start, dtype=np.int64)  # (m, 2)
    m = len(cur)
    sa, sb = np.triu_indices(m, 1)  # swaps (a, b), a < b
    best = affine_shape_residual(cs, ct, [tuple(r) for r in cur])
    while True:
        free_s = np.setdiff1d(np.arange(len(cs)), cur[:, 0])
        free_t = np.setdiff1d(np.arange(len(ct)), cur[:, 1])
        swaps = np.repeat(cur[None], len(sa), 0)
        swaps[np.arange(len(sa)), sa, 1] = cur[sb, 1]
        swaps[np.arange(len(sa)), sb, 1] = cur[sa, 1]
        ra, rv = np.repeat(np.arange(m), len(free_t)), np.tile(free_t, m)
        to_t = np.repeat(cur[None], len(ra), 0)
        to_t[np.arange(len(ra)), ra, 1] = rv
        qa, qu = np.repeat(np.arange(m), len(free_s)), np.tile(free_s, m)
        to_s = np.repeat(cur[None], len(qa), 0)
        to_s[np.arange(len(qa)), qa, 0] = qu
        stack = np.concatenate([swaps, to_t, to_s])
        if not len(stack):
            break
        # the scan order of a one-at-a-time search: by the pair a moved, swaps first, then
        # an unmatched target, then an unmatched source
        moved = np.concatenate([sa, ra, qa])
        kind = np.repeat([0, 1, 2], [len(sa), len(ra), len(qa)])
        stack = stack[np.lexsort((kind, moved))]
        scores = _residuals(cs, ct, stack[:, :, 0], stack[:, :, 1])
        better = np.flatnonzero(scores < best - 1e-12)
        if not len(better):
            break
        cur, best = stack[better[0]], float(scores[better[0]])
    return best, [(int(u), int(v)) for u, v in cur]


def affine_shape_candidates(cs: np.ndarray, ct: np.ndarray, *, starts: int = 48, seed: int = 0,
                            keep: int = 8) -> list[tuple[float, list[tuple[int, int]]]]:
    """Leaf assignments of low affine-shape residual, by local search from random starts.

    Args:
        cs: (c_s, k) source centroids.
        ct: (c_t, k_t) target centroids.
        starts: random injective assignments of min(c_s, c_t) rows descended from.
        seed: seeds the starts.
        keep: distinct local minima returned.

    Returns:
        [(residual, [(source row, target row), ...]), ...], lowest residual first.

    """
    rng = np.random.default_rng(seed)
    m = min(len(cs), len(ct))
    seen: set[tuple[tuple[int, int], ...]] = set()
    out = []
    for _ in range(starts):
        start = list(zip((int(u) for u in rng.permutation(len(cs))[:m]),
                         (int(v) for v in rng.permutation(len(ct))[:m]), strict=True))
        score, found = _descend(cs, ct, start)
        key = tuple(sorted(found))
        if key not in seen:
            seen.add(key)
            out.append((score, found))
    out.sort(key=lambda t: t[0])
    return out[:keep]


@dataclass
class AffineShape:
    """The affine shape of two trees' leaves, in leaf node ids (what `align_tree` uses).

    Attributes:
        leaves_s: source leaf ids, the rows of ``cen_s``.
        leaves_t: target leaf ids, the rows of ``cen_t``.
        cen_s: (c_s, dims) source centroids in the leading principal axes (`leading_centroids`).
        cen_t: (c_t, dims) target centroids likewise.

    """

    leaves_s: list[int]
    leaves_t: list[int]
    cen_s: np.ndarray
    cen_t: np.ndarray

    @classmethod
    def of(cls, ts: DensityTree, tt: DensityTree, source: np.ndarray, target: np.ndarray
           ) -> AffineShape | None:
        """The shape of the leaves of ``ts`` (on ``source`` (n, k)) and ``tt`` (on ``target``).

        None when the smaller tree has too few leaves to leave `AFFINE_SHAPE_DOF` residual
        degrees of freedom in even one dim.
        """
        ls, lt = [n.id for n in ts.leaves()], [n.id for n in tt.leaves()]
        dims = min(source.shape[1], target.shape[1], min(len(ls), len(lt)) - 1 - AFFINE_SHAPE_DOF)
        if dims < 1:
            return None
        return cls(ls, lt, leading_centroids(ts, ls, source, dims),
                   leading_centroids(tt, lt, target, dims))

    def residual(self, pairs: list[tuple[int, int]]) -> float:
        """`affine_shape_residual` of the leaf pairs among ``pairs`` (node ids).

        NaN when they are too few for the fit to have a residual.
        """
        pos_s = {u: i for i, u in enumerate(self.leaves_s)}
        pos_t = {v: j for j, v in enumerate(self.leaves_t)}
        idx = [(pos_s[u], pos_t[v]) for u, v in pairs if u in pos_s and v in pos_t]
        if len(idx) < self.cen_s.shape[1] + 2:
            return float("nan")
        return affine_shape_residual(self.cen_s, self.cen_t, idx)

    def candidates(self, seed: int) -> list[list[tuple[int, int]]]:
        """Leaf-id assignments of low residual (`affine_shape_candidates`), lowest first."""
        return [[(self.leaves_s[i], self.leaves_t[j]) for i, j in pairs]
                for _, pairs in affine_shape_candidates(self.cen_s, self.cen_t, seed=seed)]
