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
