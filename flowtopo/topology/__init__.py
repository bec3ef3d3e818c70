"""Density trees: the merge tree of a latent density's super-level sets, on numpy arrays alone."""

from flowtopo.topology._build import density_tree, knn_log_density
from flowtopo.topology._homology import annotate_homology, loops
from flowtopo.topology._tree import DensityTree, TreeNode
from flowtopo.topology._truth import TreeAgreement, compare_with_truth

__all__ = [
    "DensityTree",
    "TreeAgreement",
    "TreeNode",
    "annotate_homology",
    "compare_with_truth",
    "density_tree",
    "knn_log_density",
    "loops",
]
