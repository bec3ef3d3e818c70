"""Volume-preserving flows (log|det J| = 0) and their registry."""

from typing import Any

from flowtopo.errors import InputError, check_keywords
from flowtopo.flows._base import ACTIVATIONS, VolumePreservingFlow
from flowtopo.flows.continuous import ContinuousFlow, GradientField, MaskedField
from flowtopo.flows.coupling import AdditiveCoupling, CouplingFlow

FLOWS: dict[str, type[VolumePreservingFlow]] = {
    CouplingFlow.name: CouplingFlow,
    ContinuousFlow.name: ContinuousFlow,
}


def build_flow(spec: dict[str, Any], dim: int) -> VolumePreservingFlow:
    """Build a flow from ``{name, params}`` for data dimension ``dim``.

    Raises:
        InputError: unknown name (listing valid ones) or bad parameters.

    """
    name = spec.get("name")
    if name not in FLOWS:
        raise InputError(f"unknown flow {name!r}; valid: {', '.join(FLOWS)}")
    params = dict(spec.get("params") or {})
    check_keywords(f"flow {name!r}", FLOWS[name], params, fixed=("dim",))
    return FLOWS[name](dim, **params)


__all__ = [
    "ACTIVATIONS",
    "FLOWS",
    "AdditiveCoupling",
    "ContinuousFlow",
    "CouplingFlow",
    "GradientField",
    "MaskedField",
    "VolumePreservingFlow",
    "build_flow",
]
