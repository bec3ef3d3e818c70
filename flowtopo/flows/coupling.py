"""Discrete volume-preserving flow: additive couplings, fixed permutations, learned rotations.

Additive coupling (NICE, Dinh et al. 2015, without its final diagonal scaling): split x into
(x_a, x_b), ``y_b = x_b + t(x_a)``; the Jacobian is unit triangular, so det = 1.
Rotation: ``R = matrix_exp(A - Aᵀ)`` is in SO(D), det = +1.
"""

from __future__ import annotations

import torch
from torch import nn

from flowtopo.errors import InputError
from flowtopo.flows._base import VolumePreservingFlow, mlp


class AdditiveCoupling(nn.Module):
    """``y_b = x_b + t(x_a)`` with ``a`` the first ``split`` dims, ``b`` the rest."""

    def __init__(self, dim: int, split: int, hidden: int, depth: int, act: str) -> None:
        super().__init__()
        self.split = split
        self.shift = mlp(split, dim - split, hidden, depth, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, D) -> (n, D)."""
        xa, xb = x[:, : self.split], x[:, self.split:]
        return torch.cat([xa, xb + self.shift(xa)], 1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """(n, D) -> (n, D)."""
        ya, yb = y[:, : self.split], y[:, self.split:]
        return torch.cat([ya, yb - self.shift(ya)], 1)


def _permutation_matrix(dim: int, seed: int) -> torch.Tensor:
    """(D, D) matrix P with ``x @ P == x[:, perm]`` for a seeded permutation."""
    perm = torch.randperm(dim, generator=torch.Generator().manual_seed(seed))
    p = torch.zeros(dim, dim)
    p[perm, torch.arange(dim)] = 1.0
    return p


class CouplingFlow(VolumePreservingFlow):
    """``layers`` blocks of [additive coupling, fixed permutation, learned rotation].

    The permutation P_l and rotation R_l = matrix_exp(A_l - A_lᵀ) of block l act as one matrix
    ``M_l = P_l R_lᵀ`` (|det| = 1), and all R_l come from ONE batched ``matrix_exp`` per call:
    the small-matrix overhead stays low on CPUs.

    Args:
        dim: data dimension D >= 2.
        layers: number of coupling blocks.
        hidden: width of each coupling's MLP.
        depth: hidden layers per coupling MLP.
        activation: a name from `flowtopo.flows._base.ACTIVATIONS`.
        rotations: learn a rotation after each coupling (else permutations only).
        seed: seeds the permutations.

    """

    name = "coupling"

    def __init__(self, dim: int, *, layers: int = 4, hidden: int = 64, depth: int = 2,
                 activation: str = "tanh", rotations: bool = True, seed: int = 0) -> None:
        super().__init__(dim, layers=layers, hidden=hidden, depth=depth, activation=activation,
                         rotations=rotations, seed=seed)
        for what, v in (("layers", layers), ("hidden", hidden), ("depth", depth)):
            if not isinstance(v, int) or v < (0 if what == "depth" else 1):
                raise InputError(f"flow 'coupling': {what} must be a positive integer, got {v!r}")
        self.couplings = nn.ModuleList([
            AdditiveCoupling(dim, dim // 2 if i % 2 == 0 else dim - dim // 2, hidden, depth,
                             activation) for i in range(layers)])
        self.register_buffer("perms", torch.stack([_permutation_matrix(dim, seed + i)
                                                   for i in range(layers)]))
        self.rot = nn.Parameter(torch.zeros(layers, dim, dim)) if rotations else None

    def mixing(self) -> torch.Tensor:
        """(L, D, D) matrices M_l = P_l R_lᵀ applied after each coupling (``x @ M_l``)."""
        if self.rot is None:
            return self.perms
        rot = torch.linalg.matrix_exp(self.rot - self.rot.transpose(1, 2))
        return self.perms @ rot.transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, D) -> (n, D)."""
        mats = self.mixing()
        for coupling, m in zip(self.couplings, mats, strict=True):
            x = coupling(x) @ m
        return x

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """(n, D) -> (n, D)."""
        mats = self.mixing()
        for coupling, m in zip(reversed(self.couplings), mats.flip(0), strict=True):
            y = coupling.inverse(y @ m.T)
        return y
