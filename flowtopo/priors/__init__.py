"""Prior families with closed-form densities, their search spaces and ground truth."""

from flowtopo.priors._base import Prior, suggest_float
from flowtopo.priors._dists import Shell, SmoothedBox, Superposition, Torus
from flowtopo.priors.families import (
    PRIORS,
    FlowPrior,
    GaussianPrior,
    GMMPrior,
    HierarchicalGMMPrior,
    RingPrior,
    SpherePrior,
    SuperpositionPrior,
    TorusPrior,
    UniformBoxPrior,
    build_prior,
    suggest_prior,
)

__all__ = [
    "PRIORS",
    "FlowPrior",
    "GMMPrior",
    "GaussianPrior",
    "HierarchicalGMMPrior",
    "Prior",
    "RingPrior",
    "Shell",
    "SmoothedBox",
    "SpherePrior",
    "Superposition",
    "SuperpositionPrior",
    "Torus",
    "TorusPrior",
    "UniformBoxPrior",
    "build_prior",
    "suggest_float",
    "suggest_prior",
]
