"""The flow interface: an invertible map of R^D with log|det J| = 0 everywhere."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

from flowtopo.errors import InputError


class _SigmoidTanh(torch.autograd.Function):
    """``tanh(x) = 2 sigmoid(2x) - 1``, differentiated as tanh is (``1 - y²`` from the output)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """(...) -> (...), same shape, dtype and device."""
        return torch.sigmoid(x * 2).mul_(2).sub_(1)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        """Keep the output: tanh's derivative is ``1 - y²``."""
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """``grad * (1 - y²)``, by the op torch.tanh's own backward uses.

        It is differentiable again: the continuous flows' potentials take gradients of
        gradients.
        """
        (y,) = ctx.saved_tensors
        return torch.ops.aten.tanh_backward(grad, y)


class SigmoidTanh(nn.Module):
    """tanh computed on the CPU as ``2 sigmoid(2x) - 1``: the activation ``"sigmoid_tanh"``.

    Written by hand, and opt-in (``activation: sigmoid_tanh`` in a flow's params) because its
    speed depends on the CPU, measured with torch 2.13 (`python -m benchmarks.flows`, section
    3): on an AMD EPYC (OpenBLAS Haswell kernel) torch's tanh took ~6x its sigmoid and this form
    made the coupling FlowAE's full step on one thread 0.85x its time; on an Intel Xeon with
    AVX-512 torch's sigmoid is the slow one (this form's forward 5.5x torch.tanh's on a
    (4096, 64) float32 tensor) and the same step takes 1.20-1.23x. The default ``"tanh"`` is
    ``nn.Tanh``. Values differ from torch.tanh by at most 2e-7 in float32 (3e-16 in float64);
    gradients are torch.tanh's formula. On other devices (CUDA: one kernel is cheaper than
    four) it is torch.tanh itself. No parameters: a flow's checkpoint loads with either.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(...) -> (...)."""
        if x.device.type == "cpu":
            return _SigmoidTanh.apply(x)
        return torch.tanh(x)


ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "sigmoid_tanh": SigmoidTanh,
    "softplus": nn.Softplus,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "relu": nn.ReLU,
}


def swap_tanh(module: nn.Module, make: Callable[[], nn.Module]) -> nn.Module:
    """A copy of ``module`` (same weights) whose ``nn.Tanh`` modules are each ``make()``.

    Activations hold no parameters, so the copy loads the original's state dict: with
    `SigmoidTanh` it is a trained model moved to the other tanh kernel (the same map to 2e-7),
    with another activation a same-shaped model (``python -m benchmarks.flows --activation``).
    """
    import copy

    twin = copy.deepcopy(module)
    for mod in list(twin.modules()):
        for name, child in list(mod.named_children()):
            if isinstance(child, nn.Tanh):
                setattr(mod, name, make())
    return twin


def activation(name: str) -> nn.Module:
    """An activation module by name; `InputError` listing the valid ones otherwise."""
    if name not in ACTIVATIONS:
        raise InputError(f"unknown activation {name!r}; valid: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def mlp(d_in: int, d_out: int, hidden: int, depth: int, act: str, *,
        last_bias: bool = True) -> nn.Sequential:
    """An MLP with ``depth`` hidden layers whose LAST layer is zero-initialised.

    A flow built from such blocks starts as the identity (or a pure rotation/permutation).
    ``last_bias=False`` drops the output bias (for potentials, where a constant is dead weight).
    """
    layers: list[nn.Module] = []
    d = d_in
    for _ in range(depth):
        layers += [nn.Linear(d, hidden), activation(act)]
        d = hidden
    last = nn.Linear(d, d_out, bias=last_bias)
    nn.init.zeros_(last.weight)
    if last.bias is not None:
        nn.init.zeros_(last.bias)
    return nn.Sequential(*layers, last)


class VolumePreservingFlow(nn.Module):
    """Base class: ``forward(x) -> y`` and ``inverse(y) -> x`` on (n, D), with |det J| = 1.

    Subclasses set ``name``, call ``super().__init__(dim, **params)`` with their
    hyper-parameters (so `to_dict` rebuilds them) and implement `forward` and `inverse`.
    """

    name: ClassVar[str] = ""

    def __init__(self, dim: int, **params: Any) -> None:
        super().__init__()
        if not isinstance(dim, int) or dim < 2:
            raise InputError(f"flow {self.name!r}: needs data dimension D >= 2 (a volume-"
                             f"preserving map of R^1 is only a shift), got {dim}")
        self.dim = dim
        self.params = dict(params)

    @property
    def nfe(self) -> int:
        """Function evaluations of the last call (0 for discrete flows)."""
        return 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map data ``x`` (n, D) to ``y`` (n, D)."""
        raise NotImplementedError

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """Exact (or solver-accurate, for ODEs) inverse of `forward`."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """``{name, params}`` rebuilding this flow for a given D (weights live in state_dict)."""
        return {"name": self.name, "params": dict(self.params)}

    def extra_repr(self) -> str:
        """Shown by ``repr``."""
        return f"{self.name}: dim={self.dim}, " + ", ".join(
            f"{a}={v!r}" for a, v in self.params.items())
