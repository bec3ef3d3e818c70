"""Building a `DensityTree`: 0-dim persistence of super-level sets on a kNN graph (ToMATo-style).

1. kNN graph (scipy cKDTree); log density f exact (given) or estimated from kNN radii.
2. Gradient ascent on the graph assigns every point to the basin of a local maximum. A point
   is joined to its peak through higher points, so the components of every super-level set
   are those of the graph of basins, where two basins are joined at the best level
   ``min(f_i, f_j)`` of the edges between them (vectorised: no per-point Python work).
3. Basin edges by decreasing level, union-find with the elder rule: the component with the
   lower peak dies at the edge level (persistence = its peak - level). It is a cluster of its
   own if its persistence >= ``min_persistence`` and its basins hold >= ``min_mass`` of the
   points, else it is absorbed into the elder (ToMATo's rule).
4. Inner nodes whose level is within ``min_persistence`` of their parent's are contracted
   (multi-way splits); leaves below ``min_mass`` are folded into a sibling.
References: Chazal, Guibas, Oudot, Skraba, "Persistence-based clustering in Riemannian
manifolds" (ToMATo), J. ACM 2013; Carr, Snoeyink, Axen, "Computing contour trees", 2003.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree
from scipy.special import gammaln

from flowtopo.errors import InputError
from flowtopo.topology._tree import DensityTree, TreeNode


def knn_log_density(points: np.ndarray, k_neighbors: int = 15,
                    dist: np.ndarray | None = None) -> np.ndarray:
    """KNN density estimate ``log(k / (n V_d r_k^d))``: (n, d) -> (n,).

    ``dist`` (n, >= k+1) are sorted neighbour distances including the point itself.
    """
    n, d = points.shape
    if dist is None:
        dist = cKDTree(points).query(points, k_neighbors + 1, workers=-1)[0]
    r = np.maximum(dist[:, k_neighbors], 1e-300)
    log_vd = 0.5 * d * math.log(math.pi) - gammaln(0.5 * d + 1)
    return math.log(k_neighbors / n) - log_vd - d * np.log(r)


LogDensity = np.ndarray | Callable[[np.ndarray], np.ndarray]


def _check_inputs(points: np.ndarray, log_density: LogDensity | None, k_neighbors: int
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    x = np.asarray(points, dtype=np.float64)
    if x.ndim != 2:
        raise InputError(f"density_tree: points must be (n, k), got shape {x.shape}")
    n, k = x.shape
    if n < k + 2:
        raise InputError(f"density_tree: need at least k + 2 = {k + 2} points, got {n}")
    if not np.isfinite(x).all():
        raise InputError(f"density_tree: points contain {int((~np.isfinite(x)).sum())} "
                         "NaN/inf values")
    if k_neighbors < 1:
        raise InputError(f"density_tree: k_neighbors must be >= 1, got {k_neighbors}")
    f = None
    if callable(log_density):
        log_density = log_density(x)
    if log_density is not None:
        f = np.asarray(log_density, dtype=np.float64).reshape(-1)
        if f.shape[0] != n:
            raise InputError(f"density_tree: {n} points but {f.shape[0]} log-density values")
        if not np.isfinite(f).all():
            raise InputError("density_tree: log_density contains NaN/inf values")
    return x, f


def _roots(ptr: np.ndarray) -> np.ndarray:
    """Follow pointers to fixed points by pointer doubling (vectorised)."""
    ptr = ptr.copy()
    while True:
        nxt = ptr[ptr]
        if np.array_equal(nxt, ptr):
            return ptr
        ptr = nxt


def _top(values: np.ndarray, m: int) -> np.ndarray:
    """Indices of the ``m`` largest values (unordered), in O(n)."""
    if len(values) <= m:
        return np.arange(len(values))
    return np.argpartition(-values, m)[:m]


def segment_levels(x: np.ndarray, f: np.ndarray, r: np.ndarray, c: np.ndarray,
                   log_density: LogDensity | None, tree: cKDTree, kn: int, steps: int
                   ) -> np.ndarray:
    """Estimated minimum log density on the segments [x_r, x_c]: (m,) levels.

    Exact (sampled at ``steps`` points) when ``log_density`` is a callable; otherwise the kNN
    estimate's drop along the segment below its ends, subtracted from min(f_r, f_c).
    """
    base = np.minimum(f[r], f[c])
    if len(r) == 0:
        return base
    t = np.linspace(0.0, 1.0, steps)
    seg = x[r][:, None, :] + t[None, :, None] * (x[c] - x[r])[:, None, :]  # (m, steps, k)
    flat = seg.reshape(-1, x.shape[1])
    if callable(log_density):
        lv = np.asarray(log_density(flat), dtype=np.float64).reshape(len(r), steps).min(1)
        return np.minimum(lv, base)
    dist = tree.query(flat, kn, workers=-1)[0].reshape(len(flat), -1)
    est = knn_log_density(flat, kn, np.concatenate([np.zeros((len(flat), 1)), dist], 1))
    est = est.reshape(len(r), steps)
    drop = np.minimum(est[:, 0], est[:, -1]) - est.min(1)
    return base - np.maximum(drop, 0.0)


def _bridges(x: np.ndarray, f: np.ndarray, comp: np.ndarray, tree: cKDTree, kn: int,
             log_density: LogDensity | None, min_size: float, steps: int = 33,
             candidates: int = 5, front: int = 128
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edges joining the pieces of a disconnected kNN graph, with a level estimate each.

    For every pair of pieces holding >= ``min_size`` points, the ``candidates`` closest pairs
    among the ``front`` points of each that reach furthest toward the other, and the pair of
    their peaks, are tried; the
    level of a segment [x_i, x_j] is the minimum of the log density on it: exact when
    ``log_density`` is a callable, otherwise the kNN estimate's drop along the segment added to
    min(f_i, f_j). The pair with the highest such level bridges the two pieces (the saddle is
    the best path's minimum). Smaller pieces are bridged once, to their nearest big piece.

    Returns:
        (rows, cols, levels) of the bridges.

    """
    by_comp = np.argsort(comp, kind="stable")
    pieces = np.split(by_comp, np.cumsum(np.bincount(comp))[:-1])
    big_ids = [i for i, p in enumerate(pieces) if len(p) >= min_size] or [
        int(np.argmax([len(p) for p in pieces]))]
    centroid = {i: x[pieces[i]].mean(0) for i in big_ids}
    rows, cols, pair = [], [], []
    for ia, a in enumerate(big_ids):
        for b in big_ids[ia + 1:]:
            # the points of each piece that reach furthest toward the other (a KD-tree query
            # across a wide gap prunes badly in high dimension), then exact closest pairs
            axis = centroid[b] - centroid[a]
            pa = pieces[a][_top(x[pieces[a]] @ axis, front)]
            pb = pieces[b][_top(-(x[pieces[b]] @ axis), front)]
            xa, xb = x[pa], x[pb]
            d = (xa * xa).sum(1)[:, None] + (xb * xb).sum(1)[None, :] - 2.0 * xa @ xb.T
            for flat in _top(-d.ravel(), candidates):
                i, j = np.unravel_index(flat, d.shape)
                rows.append(int(pa[i]))
                cols.append(int(pb[j]))
                pair.append((a, b))
            rows.append(int(pieces[a][np.argmax(f[pieces[a]])]))  # peak to peak: through the
            cols.append(int(pieces[b][np.argmax(f[pieces[b]])]))  # saddle for blob-like pieces
            pair.append((a, b))
    # tiny pieces (absorbed anyway): one bridge each, to the nearest point of a big piece
    is_big = np.zeros(len(pieces), bool)
    is_big[big_ids] = True
    tiny = np.flatnonzero(~is_big[comp])
    if len(tiny):
        big_pts = np.flatnonzero(is_big[comp])
        d, j = cKDTree(x[big_pts]).query(x[tiny], 1, workers=-1)
        order = np.lexsort((d, comp[tiny]))  # by piece, then distance: first of each piece wins
        first = order[np.r_[True, np.diff(comp[tiny][order]) != 0]]
        rows.extend(tiny[first].tolist())
        cols.extend(big_pts[j[first]].tolist())
        pair.extend((int(comp[tiny[i]]), -1) for i in first)
    r, c = np.asarray(rows), np.asarray(cols)
    lv = segment_levels(x, f, r, c, log_density, tree, kn, steps)
    # per pair of pieces keep the candidate with the highest minimum (max-min path)
    best: dict[tuple[int, int], int] = {}
    for idx, key in enumerate(pair):
        if key not in best or lv[idx] > lv[best[key]]:
            best[key] = idx
    keep = np.asarray(sorted(best.values()))
    return r[keep], c[keep], lv[keep]


@dataclass
class _Graph:
    """The kNN graph of the points, reduced to its basins (stages 1 and 2 of the module doc).

    ``edges`` are the basin pairs (by their peaks), each at its best level, sorted by
    decreasing level; ``lowest_seen`` is the lowest log density met, bridges included.
    """

    basin: np.ndarray  # (n,) peak vertex of each point's ascent basin
    edges: tuple[np.ndarray, np.ndarray, np.ndarray]  # (i, j, level)
    pieces: int  # connected components of the kNN graph
    bridged: bool
    lowest_seen: float


def _basin_graph(x: np.ndarray, f: np.ndarray, kd: cKDTree, nbr: np.ndarray, kn: int,
                 log_density: LogDensity | None, bridge: bool, min_size: float) -> _Graph:
    """Gradient ascent to basins, then the best edge between every two basins.

    Each point points to its highest neighbour (or itself): every point is joined to its
    basin's peak through higher points, so the super-level-set components are those of the
    graph of BASINS, whose edge levels are the best edge between two basins.
    """
    n = x.shape[0]
    cand = np.concatenate([np.arange(n)[:, None], nbr[:, 1:]], 1)
    ascent_root = _roots(cand[np.arange(n), np.argmax(f[cand], 1)])
    rows = np.repeat(np.arange(n), kn)
    cols = nbr[:, 1:].reshape(-1)
    n_comp, comp = connected_components(coo_matrix((np.ones(len(rows)), (rows, cols)),
                                                   shape=(n, n)), directed=False)
    inter = ascent_root[rows] != ascent_root[cols]
    rows, cols = rows[inter], cols[inter]
    level = np.minimum(f[rows], f[cols])
    bridged = bridge and n_comp > 1
    lowest_seen = float(f.min())
    if bridged:
        br, bc, bl = _bridges(x, f, comp, kd, kn, log_density, min_size)
        rows, cols = np.concatenate([rows, br]), np.concatenate([cols, bc])
        level = np.concatenate([level, bl])
        lowest_seen = min(lowest_seen, float(bl.min()))
    ba, bb = ascent_root[rows], ascent_root[cols]
    lo_b, hi_b = np.minimum(ba, bb), np.maximum(ba, bb)
    order = np.lexsort((-level, hi_b, lo_b))  # per basin pair, highest level first
    first = np.r_[True, (np.diff(lo_b[order]) != 0) | (np.diff(hi_b[order]) != 0)]
    pick = order[first[: len(order)]]
    ei, ej, e_lv = lo_b[pick], hi_b[pick], level[pick]
    by_level = np.argsort(-e_lv, kind="stable")
    return _Graph(ascent_root, (ei[by_level], ej[by_level], e_lv[by_level]), n_comp, bridged,
                  lowest_seen)


class _Merges:
    """Union-find over basins with the elder rule, recording the significant merges (stage 3).

    ``children``/``level`` hold the raw tree (node ids in creation order), ``leaf_peak`` each
    leaf's peak vertex, ``diagram`` every (birth, death) pair.
    """

    def __init__(self, f: np.ndarray, basin: np.ndarray, min_persistence: float,
                 min_size: float) -> None:
        n = len(f)
        self.f, self.min_persistence, self.min_size = f, min_persistence, min_size
        self.parent = np.arange(n)
        self.size = np.bincount(basin, minlength=n)  # basin sizes, held at the basin peaks
        self.peak = np.arange(n)  # peak vertex of each root
        self.absorbed_into = np.full(n, -1)  # peak vertex -> peak vertex that absorbed it
        self.node_of: dict[int, int] = {}  # root -> tree node representing the component
        self.children: dict[int, list[int]] = {}
        self.level: dict[int, float] = {}
        self.leaf_peak: dict[int, int] = {}
        self.diagram: list[tuple[float, float]] = []

    def find(self, a: int) -> int:
        parent = self.parent
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def node_for(self, root: int) -> int:
        """The tree node of the component ``root`` (a new leaf at its peak when it has none)."""
        if root not in self.node_of:
            nid = len(self.level)
            self.level[nid] = float(self.f[self.peak[root]])
            self.leaf_peak[nid] = int(self.peak[root])
            self.children[nid] = []
            self.node_of[root] = nid
        return self.node_of[root]

    def _merge(self, elder_root: int, young_root: int, level: float) -> None:
        """A significant merge: a new inner node over the two components' nodes."""
        young, elder = self.node_for(young_root), self.node_for(elder_root)
        nid = len(self.level)
        self.level[nid] = level
        self.children[nid] = [elder, young]
        self.node_of[elder_root] = nid

    def add_edges(self, ei: np.ndarray, ej: np.ndarray, e_lv: np.ndarray) -> None:
        """Join basins along edges given by decreasing level; the younger component dies."""
        f, peak, size = self.f, self.peak, self.size
        for a, b, lv in zip(ei.tolist(), ej.tolist(), e_lv.tolist(), strict=True):
            ra, rb = self.find(a), self.find(b)
            if ra == rb:
                continue
            if f[peak[ra]] < f[peak[rb]]:
                ra, rb = rb, ra  # ra: elder, rb: younger
            pers = float(f[peak[rb]]) - lv
            self.diagram.append((float(f[peak[rb]]), lv))
            if pers >= self.min_persistence and size[rb] >= self.min_size:
                self._merge(ra, rb, lv)
            else:
                self.absorbed_into[peak[rb]] = peak[ra]
            self.parent[rb] = ra
            size[ra] += size[rb]
            self.node_of.pop(rb, None)

    def join_pieces(self, basin: np.ndarray, lowest: float) -> int:
        """Join what is still apart (no bridges) at ``lowest``; return the root node."""
        f, peak = self.f, self.peak
        comps = sorted({self.find(int(i)) for i in np.unique(basin)}, key=lambda r: -f[peak[r]])
        top = comps[0]
        for r in comps[1:]:
            if self.size[r] >= self.min_size:
                self.diagram.append((float(f[peak[r]]), lowest))
                self._merge(top, r, lowest)
            else:
                self.absorbed_into[peak[r]] = peak[top]
        root_node = self.node_for(top)
        self.diagram.append((float(f[peak[top]]), lowest))
        return root_node

    def labels(self, basin: np.ndarray) -> np.ndarray:
        """Each point's raw leaf: its basin -> the absorptions followed -> that peak's leaf."""
        n = len(basin)
        ptr = np.where(self.absorbed_into >= 0, self.absorbed_into, np.arange(n))
        final_peak = _roots(ptr)[basin]
        peak_to_leaf = np.full(n, -1)
        for nid, pk in self.leaf_peak.items():
            peak_to_leaf[pk] = nid
        labels = peak_to_leaf[final_peak]
        if (labels < 0).any():  # cannot happen by construction; guard against silent garbage
            raise RuntimeError("density_tree: a basin without a leaf (please report)")
        return labels


def density_tree(
    points: np.ndarray,
    log_density: LogDensity | None = None,
    *,
    k_neighbors: int = 15,
    min_persistence: float = 2.0,
    min_mass: float = 0.01,
    bridge: bool = True,
) -> DensityTree:
    """The merge tree of the super-level sets of a density sampled at ``points``.

    Args:
        points: (n, k) samples (latents).
        log_density: (n,) exact log density at the points (e.g. the model's prior), a callable
            ``(m, k) -> (m,)`` giving it anywhere (then gaps between separated clusters are
            measured exactly), or None for a kNN estimate.
        k_neighbors: neighbours in the kNN graph.
        min_persistence: clusters whose peak rises less than this (in nats of log density)
            above the level where they merge are absorbed; merges closer than this are
            contracted into one multi-way node. The default, 2 nats (a density ratio of
            e² ≈ 7.4), keeps symmetric multi-way splits whole despite estimation noise.
        min_mass: clusters with fewer than this fraction of the points are absorbed.
        bridge: when the kNN graph falls apart (well separated clusters), join the pieces by
            their closest points at the estimated level of the gap (see `_bridges`), so their
            nesting is kept. With ``bridge=False`` the pieces join at the lowest level seen
            ("level 0", as in DESIGN.md).

    Returns:
        The `DensityTree`. Levels are log densities, so persistence is invariant to affine
        maps of the points (they shift every log density by the same constant).

    Raises:
        InputError: NaN/inf, fewer than k + 2 points, mismatched lengths.

    """
    x, f = _check_inputs(points, log_density, k_neighbors)
    n = x.shape[0]
    kn = min(k_neighbors, n - 1)
    kd = cKDTree(x)
    dist, nbr = kd.query(x, kn + 1, workers=-1)
    source = "exact" if f is not None else "knn"
    if f is None:
        f = knn_log_density(x, kn, dist)
    min_size = min_mass * n
    graph = _basin_graph(x, f, kd, nbr, kn, log_density, bridge, min_size)
    merges = _Merges(f, graph.basin, min_persistence, min_size)
    merges.add_edges(*graph.edges)
    root = merges.join_pieces(graph.basin, graph.lowest_seen)
    raw = _RawTree(root, merges.children, merges.level, merges.leaf_peak,
                   merges.labels(graph.basin))
    params = {"k_neighbors": kn, "min_persistence": min_persistence, "min_mass": min_mass,
              "density": source, "bridged": graph.bridged}
    return _finish(x, f, raw, np.asarray(merges.diagram).reshape(-1, 2), params,
                   disconnected=graph.pieces > 1, min_size=min_size)


@dataclass
class _RawTree:
    """The tree as the merges left it: node ids in creation order, before stage 4."""

    root: int
    children: dict[int, list[int]]
    level: dict[int, float]
    leaf_peak: dict[int, int]
    labels: np.ndarray  # (n,) each point's leaf


def _fold_small_leaves(kids: dict[int, list[int]], labels: np.ndarray, counts: np.ndarray,
                       min_size: float) -> None:
    """Fold leaves with too few basin points into their largest sibling subtree (in place)."""

    def size(nid: int) -> int:
        return int(counts[nid]) if not kids[nid] else sum(size(c) for c in kids[nid])

    changed = True
    while changed:
        changed = False
        for nid in list(kids):
            for c in list(kids.get(nid, [])):
                if not kids[c] and counts[c] < min_size and len(kids[nid]) > 1:
                    sib = max((s for s in kids[nid] if s != c), key=size)
                    target = sib
                    while kids[target]:
                        target = max(kids[target], key=size)
                    labels[labels == c] = target
                    counts[target] += counts[c]
                    counts[c] = 0
                    kids[nid].remove(c)
                    changed = True


def _contract(kids: dict[int, list[int]], level: dict[int, float], root: int,
              min_persistence: float) -> int:
    """Splice single-child nodes and contract inner nodes close to their parent's level.

    ``kids`` is changed in place; returns the new root.
    """

    def simplify(nid: int) -> None:
        new: list[int] = []
        for c in kids[nid]:
            simplify(c)
            while len(kids[c]) == 1:
                c = kids[c][0]
            if kids[c] and level[c] - level[nid] < min_persistence:
                new.extend(kids[c])
            else:
                new.append(c)
        kids[nid] = new

    simplify(root)
    while len(kids[root]) == 1:
        root = kids[root][0]
    return root


def _finish(x: np.ndarray, f: np.ndarray, raw: _RawTree, diagram: np.ndarray, params: dict,
            *, disconnected: bool, min_size: float) -> DensityTree:
    """Stage 4: fold tiny leaves, contract near-simultaneous merges, then number the nodes."""
    kids = {nid: list(c) for nid, c in raw.children.items()}
    labels = raw.labels
    _fold_small_leaves(kids, labels, np.bincount(labels, minlength=len(raw.level)), min_size)
    root = _contract(kids, raw.level, raw.root, params["min_persistence"])
    nodes, relabel = _numbered_nodes(x, f, raw, kids, root)
    return DensityTree(nodes, relabel[labels], diagram, params, disconnected)


def _numbered_nodes(x: np.ndarray, f: np.ndarray, raw: _RawTree, kids: dict[int, list[int]],
                    root: int) -> tuple[dict[int, TreeNode], np.ndarray]:
    """The nodes numbered breadth-first from the root (0), with their statistics.

    Returns:
        (the nodes by new id, an array mapping raw node ids to new ones).

    """
    level, labels = raw.level, raw.labels
    order, ids = [root], {root: 0}
    for nid in order:
        for c in kids[nid]:
            ids[c] = len(ids)
            order.append(c)
    n = len(x)
    nodes: dict[int, TreeNode] = {}
    leaf_members = {nid: np.flatnonzero(labels == nid) for nid in order if not kids[nid]}

    def members(nid: int) -> np.ndarray:
        if not kids[nid]:
            return leaf_members[nid]
        return np.concatenate([members(c) for c in kids[nid]])

    parent_of: dict[int, int | None] = {root: None}
    depth = {root: 0}
    for nid in order:
        for c in kids[nid]:
            parent_of[c] = nid
            depth[c] = depth[nid] + 1
    lowest = min(float(f.min()), min(level.values()))
    for nid in order:
        m = np.sort(members(nid))
        pts = x[m]
        pk = float(f[m].max()) if len(m) else float(f[raw.leaf_peak.get(nid, 0)])
        own = pk if not kids[nid] else float(level[nid])
        p = parent_of[nid]
        merge = float(level[p]) if p is not None else lowest
        cov = np.cov(pts, rowvar=False) if len(m) > 1 else np.zeros((x.shape[1],) * 2)
        nodes[ids[nid]] = TreeNode(
            id=ids[nid], parent=None if p is None else ids[p],
            children=[ids[c] for c in kids[nid]], peak=pk, level=own, merge_level=merge,
            persistence=own - merge, mass=len(m) / n, members=m,
            centroid=pts.mean(0) if len(m) else np.zeros(x.shape[1]),
            covariance=np.atleast_2d(cov), depth=depth[nid])
    relabel = np.full(max(ids) + 1, -1)
    for old, new in ids.items():
        relabel[old] = new
    return nodes, relabel
