"""flowtopo: topology-based translation between latent spaces of flow auto-encoders.

``from flowtopo import align, LatentSpace`` is cheap: names are imported on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "align": ("flowtopo.matching", "align"),
    "LatentSpace": ("flowtopo.matching", "LatentSpace"),
    "AlignResult": ("flowtopo.matching", "AlignResult"),
    "density_tree": ("flowtopo.topology", "density_tree"),
    "DensityTree": ("flowtopo.topology", "DensityTree"),
    "translation_scores": ("flowtopo.metrics", "translation_scores"),
}

__all__ = ["AlignResult", "DensityTree", "LatentSpace", "align", "density_tree",
           "translation_scores"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'flowtopo' has no attribute {name!r}")
