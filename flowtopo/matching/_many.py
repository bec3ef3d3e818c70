"""Aligning more than two spaces, and aligning trained models (encode, then align)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flowtopo.errors import InputError
from flowtopo.matching._result import AlignResult, LatentSpace


@dataclass
class ManyResult:
    """Every ordered pair's `AlignResult`, and cycle errors over triples.

    Attributes:
        pairs: (a, b) -> result mapping a's latents into b's.
        cycles: (a, b, c) -> ‖T_ca ∘ T_bc ∘ T_ab(z) − z‖² / ‖z − z̄‖² on a's test latents.
        failures: (a, b) -> message, for pairs that could not be aligned.

    """

    pairs: dict[tuple[str, str], AlignResult] = field(default_factory=dict)
    cycles: dict[tuple[str, str, str], float] = field(default_factory=dict)
    failures: dict[tuple[str, str], str] = field(default_factory=dict)


def align_many(spaces: dict[str, LatentSpace | np.ndarray],
               test: dict[str, np.ndarray] | None = None, **align_options: Any) -> ManyResult:
    """Align every ordered pair of ``spaces``; with ``test`` latents, cycle errors of triples.

    Args:
        spaces: name -> latents (unpaired across names).
        test: name -> test latents, used to measure cycle consistency (rows need not be paired
            across names: a cycle maps a space back into itself).
        **align_options: passed to `flowtopo.matching.align`.

    """
    from flowtopo.matching import align
    from flowtopo.paired_scores import cycle_error

    if len(spaces) < 2:
        raise InputError("align_many needs at least two latent spaces")
    out = ManyResult()
    for a, b in itertools.permutations(spaces, 2):
        try:
            out.pairs[(a, b)] = align(spaces[a], spaces[b], **align_options)
        except InputError as err:
            out.failures[(a, b)] = str(err)
    if test is not None:
        for a, b, c in itertools.permutations(spaces, 3):
            if all(p in out.pairs for p in ((a, b), (b, c), (c, a))):
                maps = [out.pairs[(a, b)].transform, out.pairs[(b, c)].transform,
                        out.pairs[(c, a)].transform]
                out.cycles[(a, b, c)] = cycle_error(test[a], maps)
    return out


def disjoint_halves(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The seeded random split of ``n`` rows that `model_spaces` uses: (rows_a, rows_b)."""
    perm = np.random.default_rng(seed).permutation(n)
    return perm[: n // 2], perm[n // 2:]


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
    from flowtopo.matching import align

    space_a, space_b, rows_a, rows_b = model_spaces(model_a, model_b, x, seed=seed)
    res = align(space_a, space_b, seed=seed, **align_options)
    res.info["source_rows"], res.info["target_rows"] = rows_a, rows_b
    return res
