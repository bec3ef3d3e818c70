"""flowtopo: topology-based translation between latent spaces of flow auto-encoders.

``from flowtopo import align, LatentSpace`` is cheap: names are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flowtopo._version import __version__ as __version__  # re-exported

if TYPE_CHECKING:  # what the lazy names are, for type checkers and IDEs (no import at run time)
    from flowtopo.matching import AlignResult, LatentSpace, align
    from flowtopo.paired_scores import translation_scores
    from flowtopo.topology import DensityTree, density_tree

_LAZY = {
    "align": ("flowtopo.matching", "align"),
    "LatentSpace": ("flowtopo.matching", "LatentSpace"),
    "AlignResult": ("flowtopo.matching", "AlignResult"),
    "density_tree": ("flowtopo.topology", "density_tree"),
    "DensityTree": ("flowtopo.topology", "DensityTree"),
    "translation_scores": ("flowtopo.paired_scores", "translation_scores"),
}

__all__ = ["AlignResult", "DensityTree", "LatentSpace", "align", "density_tree",
           "translation_scores"]


def __dir__() -> list[str]:
    """The module's names, the lazy ones included (``dir(flowtopo)``, completion)."""
    return sorted({*globals(), *__all__})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'flowtopo' has no attribute {name!r}")
