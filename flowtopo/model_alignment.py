"""Two trained FlowAEs' latent spaces, and their alignment, on the same inputs.

Above the numpy-only matching layer: this module handles models (anything with ``latents``
and a ``prior``, e.g. `flowtopo.model.FlowAE`) and hands `flowtopo.matching` plain arrays
and densities.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from flowtopo.errors import InputError
from flowtopo.matching import AlignResult, LatentSpace, align, disjoint_halves


def model_spaces(model_a: Any, model_b: Any, x: np.ndarray, *, seed: int = 0
                 ) -> tuple[LatentSpace, LatentSpace, np.ndarray, np.ndarray]:
    """Two trained `flowtopo.model.FlowAE` s' latent spaces on DISJOINT halves of ``x`` (n, D).

    No input is seen by both models; each space carries its model's exact prior density (and
    its gradient, for the likelihood polish).

    Returns:
        (space_a, space_b, rows_a, rows_b): the spaces, and which rows of ``x`` each model
        encoded (`disjoint_halves`).

    """
    x = np.asarray(x, dtype=np.float32)
    if len(x) < 40:
        raise InputError(f"aligning two models needs at least 40 inputs, got {len(x)}")
    rows_a, rows_b = disjoint_halves(len(x), seed)

    def space(model: Any, data: np.ndarray) -> LatentSpace:
        model.eval()
        return LatentSpace(model.latents(data), prior=model.prior)

    return space(model_a, x[rows_a]), space(model_b, x[rows_b]), rows_a, rows_b


def align_models(model_a: Any, model_b: Any, x: np.ndarray, *, seed: int = 0,
                 **align_options: Any) -> AlignResult:
    """Align two trained `flowtopo.model.FlowAE` s on the same data ``x`` (n, D).

    The models encode disjoint halves of ``x`` (`model_spaces`). Evaluate on a separate paired
    test set with `flowtopo.paired_scores.translation_scores`. The result's ``info["source_rows"]``
    and ``info["target_rows"]`` hold which rows of ``x`` each model encoded, so callers can
    label the source tree's members.
    """
    space_a, space_b, rows_a, rows_b = model_spaces(model_a, model_b, x, seed=seed)
    res = align(space_a, space_b, seed=seed, **align_options)
    res.info["source_rows"], res.info["target_rows"] = rows_a, rows_b
    return res
