"""1-dim homology of tree nodes (rings, loops) with gudhi, an optional extra (``[topology]``)."""

from __future__ import annotations

import numpy as np

from flowtopo.errors import InputError
from flowtopo.topology._tree import DensityTree


def loops(points: np.ndarray, *, max_points: int = 300, min_length: float = 4.0,
          max_birth: float = 3.0, seed: int = 0) -> int:
    """Number of significant 1-dim holes of a point cloud (n, k).

    An alpha complex (k <= 3) or a Rips complex (k > 3) is built on at most ``max_points``
    points; an H1 interval counts when it lives longer than ``min_length`` times the median
    nearest-neighbour distance (so sampling noise does not count).
    """
    try:
        import gudhi
    except ImportError:  # pragma: no cover - gudhi is in the dev extra
        raise InputError("homology needs gudhi: pip install 'flowtopo[topology]'") from None
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    if len(points) > max_points:
        points = points[rng.choice(len(points), max_points, replace=False)]
    if len(points) < 4:
        return 0
    k = points.shape[1]
    nn_all = cKDTree(points).query(points, 2)[0][:, 1]
    nn, nn_sparse = float(np.median(nn_all)), float(np.quantile(nn_all, 0.9))
    if k <= 3:
        st = gudhi.AlphaComplex(points=points).create_simplex_tree()
        pers = st.persistence()
        bars = [(np.sqrt(b), np.sqrt(d) - np.sqrt(b)) for dim, (b, d) in pers if dim == 1]
    else:
        diam = float(np.max(np.linalg.norm(points - points.mean(0), axis=1))) * 2
        st = gudhi.RipsComplex(points=points, max_edge_length=diam, sparse=0.3
                               ).create_simplex_tree(max_dimension=2)
        pers = st.persistence()
        bars = [(b, (d if np.isfinite(d) else diam) - b) for dim, (b, d) in pers if dim == 1]
    return int(sum(length > min_length * nn and birth <= max_birth * nn_sparse
                   for birth, length in bars))


def annotate_homology(tree: DensityTree, points: np.ndarray, **kwargs: float) -> DensityTree:
    """Set ``betti1`` (the number of significant loops) on every node, in place; return tree."""
    for node in tree.nodes.values():
        node.betti1 = loops(points[node.members], **kwargs)  # type: ignore[arg-type]
    return tree
