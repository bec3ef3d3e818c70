"""Alignment of latent spaces: tree matching (ours) and the baselines, on numpy arrays."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from flowtopo.errors import InputError
from flowtopo.matching._baselines import (
    align_cluster_qap,
    align_gw,
    align_identity,
    align_oracle,
    align_relative,
)
from flowtopo.matching._fit_check import POOR_FIT_C2ST, FitCheck, c2st_fit_check
from flowtopo.matching._many import (
    ManyResult,
    align_many,
    disjoint_halves,
)
from flowtopo.matching._ml_polish import symmetric_kl
from flowtopo.matching._result import (
    POOR_CONFIRMATION,
    POOR_FIT_KL,
    POOR_ROUND_TRIP,
    AlignResult,
    Candidate,
    LatentSpace,
)
from flowtopo.matching._transforms import TRANSFORMS, fit_map
from flowtopo.matching._translation_fit import sliced_wasserstein
from flowtopo.matching._tree_match import TreeMatcher, TreeMatching
from flowtopo.matching._tree_method import NotIdentifiable, align_tree, leaf_agreement


@dataclass(frozen=True)
class Method:
    """A registered alignment method: its function and whether it needs paired data.

    A supervised method (``oracle``: true pairs, ``relative``: anchor pairs) is a reference,
    never a translation: the pipeline scores it beside the unsupervised ones and refuses it as
    ``--method``.
    """

    fn: Callable[..., AlignResult]
    supervised: bool = False

    def __call__(self, source: LatentSpace, target: LatentSpace, **options: Any) -> AlignResult:
        """``fn(source, target, **options)``."""
        return self.fn(source, target, **options)

    @property
    def options(self) -> tuple[str, ...]:
        """The keyword options it takes besides ``transform`` and ``seed``."""
        params = inspect.signature(self.fn).parameters.values()
        return tuple(p.name for p in params if p.kind is p.KEYWORD_ONLY
                     and p.name not in ("transform", "seed"))


METHODS: dict[str, Method] = {
    "tree": Method(align_tree),
    "identity": Method(align_identity),
    "gw": Method(align_gw),
    "cluster_qap": Method(align_cluster_qap),
    "relative": Method(align_relative, supervised=True),
    "oracle": Method(align_oracle, supervised=True),
}


def align(source: LatentSpace | np.ndarray, target: LatentSpace | np.ndarray, *,
          method: str = "tree", transform: str = "affine", seed: int = 0,
          **options: Any) -> AlignResult:
    """Fit a map from the source latent space to the target's without paired data.

    Args:
        source: (n, k_s) latents or a `LatentSpace` (with an exact density when known).
        target: (m, k_t) latents or a `LatentSpace`; rows need not correspond.
        method: a key of `METHODS` (``oracle`` needs ``pairs=``, ``relative`` ``anchors=``).
        transform: affine, linear, orthogonal or nonlinear.
        seed: seeds every random choice.
        **options: method options (see each ``align_*``; ``METHODS[method].options``).

    Raises:
        InputError: unknown method/transform/option, NaN, too few points; `NotIdentifiable`
            when the densities cannot determine the map.

    """
    if method not in METHODS:
        raise InputError(f"unknown alignment method {method!r}; valid: {', '.join(METHODS)}")
    if transform not in TRANSFORMS:
        raise InputError(f"unknown transform {transform!r}; valid: {', '.join(TRANSFORMS)}")
    valid = METHODS[method].options
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise InputError(f"method {method!r} has no option {', '.join(map(repr, unknown))}; "
                         f"valid: {', '.join(valid) or 'none'}")
    s, t = LatentSpace.of(source), LatentSpace.of(target)
    for name, space in (("source", s), ("target", t)):
        if len(space.points) < max(20, 2 * space.k + 2):
            raise InputError(f"{name}: too few points ({len(space.points)}) to align "
                             f"{space.k}-dim latents")
    res = METHODS[method](s, t, transform=transform, seed=seed, **options)
    res.fit_kl = symmetric_kl(s, t, res.matrix, res.offset, seed=seed)
    res.fit_check = c2st_fit_check(res.transform(s.points), t.points, seed=seed)
    return res


__all__ = [
    "METHODS",
    "POOR_CONFIRMATION",
    "POOR_FIT_C2ST",
    "POOR_FIT_KL",
    "POOR_ROUND_TRIP",
    "TRANSFORMS",
    "AlignResult",
    "Candidate",
    "FitCheck",
    "LatentSpace",
    "ManyResult",
    "Method",
    "NotIdentifiable",
    "TreeMatcher",
    "TreeMatching",
    "align",
    "align_many",
    "c2st_fit_check",
    "disjoint_halves",
    "fit_map",
    "leaf_agreement",
    "sliced_wasserstein",
    "symmetric_kl",
]
