"""Inputs and results of alignment: `LatentSpace`, `Candidate`, `AlignResult`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from flowtopo.errors import InputError
from flowtopo.matching._fit_check import FitCheck
from flowtopo.matching._transforms import PiecewiseAffine
from flowtopo.topology import DensityTree


class HasNumpyLogProb(Protocol):
    """Anything with an exact log density on numpy arrays (a `flowtopo.priors.Prior`)."""

    def numpy_log_prob(self, z: np.ndarray) -> np.ndarray:
        """(n, k) -> (n,)."""


@dataclass
class LatentSpace:
    """Latent points of one model and, when known, their exact density.

    Args:
        points: (n, k) latents (rows do NOT correspond across spaces).
        log_density: (n,) exact log density at the points, or a callable ``(m, k) -> (m,)``.
        prior: an object with ``numpy_log_prob`` (e.g. the model's prior); used as the
            callable when ``log_density`` is None.
        score: optional callable ``(m, k) -> ((m,), (m, k))``: the log density and its exact
            gradient in space. Taken from the prior's ``numpy_log_prob_and_grad`` when the
            prior supplies the density; without it the maximum-likelihood polish uses
            central differences of ``log_density``.

    """

    points: np.ndarray
    log_density: np.ndarray | Callable[[np.ndarray], np.ndarray] | None = None
    prior: HasNumpyLogProb | None = None
    score: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None

    def __post_init__(self) -> None:
        x = np.asarray(self.points, dtype=np.float64)
        if x.ndim != 2:
            raise InputError(f"latent points must be (n, k), got shape {x.shape}")
        if not np.isfinite(x).all():
            raise InputError(f"latent points contain {int((~np.isfinite(x)).sum())} NaN/inf")
        self.points = x
        if self.log_density is None and self.prior is not None:
            self.log_density = self.prior.numpy_log_prob
            if self.score is None:
                self.score = getattr(self.prior, "numpy_log_prob_and_grad", None)

    @property
    def k(self) -> int:
        """Latent dimension."""
        return int(self.points.shape[1])

    @classmethod
    def of(cls, x: LatentSpace | np.ndarray) -> LatentSpace:
        """Wrap a plain array."""
        return x if isinstance(x, LatentSpace) else cls(np.asarray(x))


@dataclass
class Candidate:
    """One scored alternative matching (for symmetric trees)."""

    node_pairs: list[tuple[int, int]]
    tree_cost: float
    fit: float
    matrix: np.ndarray
    offset: np.ndarray


POOR_ROUND_TRIP = 0.7
"""Leaf round-trip agreement (mass share) below which a tree map is flagged: maps with the right
correspondence measured 0.78-1.0 on network pairs of digits, wrong ones 0.31-0.51
(docs/method.md)."""

POOR_CONFIRMATION = 0.75
"""Agreement (mass share) with the leaf correspondence found at another latent dim below which a
translation is flagged (`flowtopo.translate`): right correspondences were reproduced at another
dim on 0.76-1.0 of the mass, wrong ones that passed the other checks on 0.08-0.59
(docs/method.md "Cross-dimension confirmation")."""

POOR_FIT_KL = 0.25
"""Symmetric KL (nats) above which a map is flagged: right maps measure ~0.01 on the synthetic
problems, the runner-up matchings 0.75 and more (docs/method.md)."""


@dataclass
class AlignResult:
    """A fitted map from the source latent space to the target's.

    Attributes:
        matrix: (k_target, k_source) linear part.
        offset: (k_target,) translation.
        method: the method name; ``supervised`` is True for ``oracle`` and ``relative``.
        transform_kind: affine, linear, orthogonal, piecewise or nonlinear.
        node_pairs: matched (source node, target node) ids of the two DensityTrees (tree only).
        cost: the matching cost (tree: the tree-matching cost; others: their objective).
        ambiguous: several matchings were (nearly) equally good by structure; the one chosen
            fitted the target distribution best (see ``candidates``).
        candidates: scored alternatives, best first.
        info: method details (sizes, timings, the selection's criteria).
        fit_kl: oracle-free fit check when both densities are exact: the symmetric KL between
            the mapped source and the target (nats; ~0 for a right map, of the affine part for
            ``nonlinear`` and ``piecewise``); None otherwise. See `poor_fit`.
        piecewise: the blended per-leaf affine maps when ``transform_kind`` is ``piecewise``
            (``matrix``/``offset`` are then its global part).
        round_trip: tree method only: the mass share of matched source leaves that an
            independent target-to-source matching sends back home (1.0 = the two directions
            agree). A flexible map can carry a WRONG cluster correspondence onto a good
            distribution fit; disagreement between the two directions is what shows it.
        fit_check: oracle-free fit check of the whole map on the points alone, for every
            method (`flowtopo.matching.c2st_fit_check`: classifier two-sample test of the
            mapped source against the target, calibrated on a target-vs-target null).
        confirmation: set by `flowtopo.translate` when it searches the latent dim: the largest
            mass share on which the leaf correspondence agrees with that of a map at another
            latent dim that passes its own checks (`flowtopo.matching.leaf_agreement`); 0.0
            when no other dim's map passes; None when not searched.
        source_tree, target_tree: the two density trees ``node_pairs`` refers to (tree
            method only; None for the other methods).

    """

    matrix: np.ndarray
    offset: np.ndarray
    method: str
    transform_kind: str = "affine"
    node_pairs: list[tuple[int, int]] = field(default_factory=list)
    cost: float = 0.0
    ambiguous: bool = False
    candidates: list[Candidate] = field(default_factory=list)
    supervised: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    residual: Callable[[np.ndarray], np.ndarray] | None = None
    fit_kl: float | None = None
    fit_check: FitCheck | None = None
    piecewise: PiecewiseAffine | None = None
    round_trip: float | None = None
    confirmation: float | None = None
    source_tree: DensityTree | None = None
    target_tree: DensityTree | None = None

    @property
    def poor_fit(self) -> bool:
        """True when ``fit_kl`` exceeds `POOR_FIT_KL` or the two-sample check fails.

        The map does not carry one distribution onto the other, whatever the matching said
        (e.g. models with different prior families, clusters that collapsed in one model, or
        a wrong cluster correspondence between two networks' point clouds).
        """
        return self.fit_reason is not None

    @property
    def fit_reason(self) -> str | None:
        """Why the map is flagged (one line), or None when it passes every check it had."""
        if self.fit_kl is not None and self.fit_kl > POOR_FIT_KL:
            return f"fit KL {self.fit_kl:.3g} nats > {POOR_FIT_KL}"
        if self.round_trip is not None and self.round_trip < POOR_ROUND_TRIP:
            return (f"the leaf correspondence is not its own inverse: an independent backward "
                    f"matching sends back only {self.round_trip:.0%} of the matched mass "
                    f"(< {POOR_ROUND_TRIP:.0%})")
        if self.fit_check is not None and self.fit_check.poor:
            c = self.fit_check
            return (f"two-sample accuracy {c.accuracy:.3f} exceeds the target-vs-target null "
                    f"{c.null_mean:.3f} by {c.excess:.3f}")
        if self.confirmation is not None and self.confirmation < POOR_CONFIRMATION:
            if self.confirmation == 0.0:
                return ("no map at another latent dim passes its checks to confirm the leaf "
                        "correspondence")
            return (f"the leaf correspondence is not reproduced at another latent dim: the "
                    f"best agreement is {self.confirmation:.0%} of the mass "
                    f"(< {POOR_CONFIRMATION:.0%})")
        return None

    def transform(self, z: np.ndarray) -> np.ndarray:
        """Map source latents (m, k_source) to target coordinates (m, k_target)."""
        z = np.asarray(z, dtype=np.float64)
        if z.ndim != 2 or z.shape[1] != self.matrix.shape[1]:
            raise InputError(f"transform expects (m, {self.matrix.shape[1]}) latents, got "
                             f"{z.shape}")
        if self.piecewise is not None:
            return self.piecewise(z)
        out = z @ self.matrix.T + self.offset
        return out + self.residual(z) if self.residual is not None else out
