"""Comparing a `DensityTree` with a ground-truth tree (nested clusters with centres and masses)."""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np
from scipy.optimize import linear_sum_assignment

from flowtopo.topology._tree import DensityTree


@dataclass(frozen=True)
class TreeAgreement:
    """How a recovered tree compares with the truth.

    Attributes:
        n_leaves: recovered leaves.
        n_true_leaves: true leaves.
        nesting: the recovered nested clusters equal the true ones (leaves matched by centre).
        max_mass_error: largest |recovered - true| mass over matched leaves.
        leaf_map: recovered leaf id -> true leaf node.

    """

    n_leaves: int
    n_true_leaves: int
    nesting: bool
    max_mass_error: float
    leaf_map: dict[int, int]

    @property
    def ok(self) -> bool:
        """Same number of leaves and the same nesting."""
        return self.n_leaves == self.n_true_leaves and self.nesting


def _true_leaf_sets(truth: nx.DiGraph, root: int) -> set[frozenset[int]]:
    out = set()
    for n in truth:
        if n != root and truth.out_degree(n) > 0:
            out.add(frozenset(d for d in nx.descendants(truth, n) if truth.out_degree(d) == 0))
    return out


def compare_with_truth(tree: DensityTree, truth: nx.DiGraph) -> TreeAgreement:
    """Compare a recovered tree with the truth: leaves, nesting, masses.

    Recovered leaves are matched to true leaves by centre (Hungarian on centroid distances).
    ``truth`` nodes carry ``center`` and ``mass``; the root has no parent. The tree must be
    built on points in the same coordinates as the true centres.
    """
    root = next(n for n in truth if truth.in_degree(n) == 0)
    true_leaves = [n for n in truth if truth.out_degree(n) == 0]
    est_leaves = tree.leaves()
    cost = np.array([[np.linalg.norm(leaf.centroid - truth.nodes[t]["center"])
                      for t in true_leaves] for leaf in est_leaves])
    ri, ci = linear_sum_assignment(cost)
    leaf_map = {est_leaves[i].id: true_leaves[j] for i, j in zip(ri, ci, strict=True)}
    errors = [abs(tree.nodes[e].mass - truth.nodes[t]["mass"]) for e, t in leaf_map.items()]
    est_sets = {frozenset(leaf_map.get(x, -1 - x) for x in s) for s in tree.leaf_sets()}
    return TreeAgreement(len(est_leaves), len(true_leaves),
                         est_sets == _true_leaf_sets(truth, root), max(errors, default=1.0),
                         leaf_map)
