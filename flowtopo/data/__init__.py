"""Datasets: registry, standardisation, ground truth (exact densities and density trees)."""

from flowtopo.data._base import Dataset, Standardizer, check_array
from flowtopo.data._files import read_array_file, read_idx, read_idx_dir
from flowtopo.data._hierarchy import (
    AdditiveWarp,
    HierarchicalGenerator,
    HierarchicalMixture,
    balanced_shape,
)
from flowtopo.data._pairs import WarpedPair, warped_pair
from flowtopo.data._registry import DATASETS, load_dataset

__all__ = [
    "DATASETS",
    "AdditiveWarp",
    "Dataset",
    "HierarchicalGenerator",
    "HierarchicalMixture",
    "Standardizer",
    "WarpedPair",
    "balanced_shape",
    "check_array",
    "load_dataset",
    "read_array_file",
    "read_idx",
    "read_idx_dir",
    "warped_pair",
]
