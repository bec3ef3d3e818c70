"""Matching many models through a hub: n - 1 alignments instead of n (n - 1).

``flowtopo match --strategy hub`` aligns every model to ONE reference model (the hub: the
first chosen run, i.e. the best by ``--metric``) and derives every other ordered pair by
composition through the hub's latent space::

    A -> B  =  (B -> hub)^-1  o  (A -> hub)        hub -> B  =  (B -> hub)^-1

This needs each leg to be invertible: the affine maps of ``--transform affine`` (a piecewise or
nonlinear map has no closed-form inverse), with a well-conditioned matrix. Written here: the
composition and its bookkeeping are new; the linear algebra is numpy's.

What it costs in accuracy is measured, not assumed (``python -m benchmarks.matching``): maps
composed through a hub are cycle-consistent BY CONSTRUCTION (every cycle is the identity), so
their cycle error says nothing; the composed pairs are scored against the paired held-out
split like direct ones, and compared there with the all-pairs maps of the same pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flowtopo.errors import InputError

STRATEGIES = ("all-pairs", "hub")
"""How ``flowtopo match`` covers the ordered pairs of its models."""

MAX_CONDITION = 1e8
"""A leg whose matrix is worse conditioned than this cannot be inverted reliably."""


@dataclass
class ComposedMap:
    """An affine map A -> B obtained through the hub: ``z @ matrix.T + offset``.

    Attributes:
        matrix: (k_b, k_a).
        offset: (k_b,).
        via: the hub's name.
        legs: the names of the direct alignments it was composed from.

    """

    matrix: np.ndarray
    offset: np.ndarray
    via: str
    legs: tuple[str, ...]

    def transform(self, z: np.ndarray) -> np.ndarray:
        """(n, k_a) latents of A -> (n, k_b) latents of B."""
        return np.asarray(z, np.float64) @ self.matrix.T + self.offset


def _inverse(matrix: np.ndarray, offset: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The inverse of ``z -> matrix z + offset``.

    Raises:
        InputError: a non-square or ill-conditioned matrix (the leg cannot be inverted).

    """
    m = np.asarray(matrix, np.float64)
    if m.shape[0] != m.shape[1]:
        raise InputError(f"{name}: a {m.shape[0]}x{m.shape[1]} map has no inverse; the hub "
                         "strategy needs models of one latent dim")
    cond = np.linalg.cond(m)
    if not np.isfinite(cond) or cond > MAX_CONDITION:
        raise InputError(f"{name}: the map is singular (condition number {cond:.3g}); it "
                         "cannot be inverted to compose through the hub")
    inv = np.linalg.inv(m)
    return inv, -inv @ np.asarray(offset, np.float64)


def compose_through_hub(legs: dict[str, tuple[np.ndarray, np.ndarray]], hub: str
                        ) -> dict[tuple[str, str], ComposedMap | InputError]:
    """Every ordered pair not aligned directly, composed from the maps to the hub.

    Args:
        legs: model name -> (matrix, offset) of its direct map TO the hub (every model but
            the hub, whose own leg is the identity).
        hub: the hub's name.

    Returns:
        (source, target) -> the composed map, or the `InputError` saying why that pair could
        not be composed (a leg of either model cannot be inverted: not square, or singular).
        The direct pairs (x, hub) are not in it.

    """
    names = [hub, *legs]
    inverses: dict[str, tuple[np.ndarray, np.ndarray] | InputError] = {}
    for b, (m, c) in legs.items():
        try:
            inverses[b] = _inverse(m, c, f"{b} -> {hub}")
        except InputError as err:
            inverses[b] = err
    out: dict[tuple[str, str], ComposedMap | InputError] = {}
    for a in names:
        for b in names:
            if a == b or b == hub:
                continue
            broken = [x for x in (a, b) if x != hub and isinstance(inverses[x], InputError)]
            if broken:  # a leg that cannot be inverted is no basis for any of its pairs
                out[(a, b)] = inverses[broken[0]]  # type: ignore[assignment]
                continue
            inv = inverses[b]
            assert not isinstance(inv, InputError)
            if a == hub:
                out[(a, b)] = ComposedMap(inv[0], inv[1], hub, (f"{b} -> {hub}",))
                continue
            ma, ca = (np.asarray(v, np.float64) for v in legs[a])
            out[(a, b)] = ComposedMap(inv[0] @ ma, inv[0] @ ca + inv[1], hub,
                                      (f"{a} -> {hub}", f"{b} -> {hub}"))
    return out


def check_strategy(strategy: str, transform: str, cross: bool) -> None:
    """Refuse a strategy the options cannot support, in one line.

    Raises:
        InputError: an unknown strategy; ``hub`` with a non-affine transform or a
            source/target match (one pair: nothing to compose).

    """
    if strategy not in STRATEGIES:
        raise InputError(f"unknown strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
    if strategy == "hub" and transform != "affine":
        raise InputError(f"--strategy hub composes maps through their inverses and needs "
                         f"--transform affine (a {transform} map has no closed-form inverse)")
    if strategy == "hub" and cross:
        raise InputError("--strategy hub matches a sweep's models; --source/--target is a "
                         "single pair")
