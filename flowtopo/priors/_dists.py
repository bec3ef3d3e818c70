"""Closed-form distributions that torch.distributions does not ship.

All have ``event_shape == (k,)`` and accept any batch of points ``(..., k)`` in `log_prob`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.distributions import Distribution, constraints

from flowtopo.priors._radial import log_shell_normaliser, sample_radius, uniform_directions

_LOG_2PI = math.log(2 * math.pi)


def _gaussian_rest_log_prob(rest: torch.Tensor, w: float) -> torch.Tensor | float:
    """``log N(rest; 0, w² I)`` summed over the last dim (0 when there are no such dims)."""
    if not rest.shape[-1]:
        return 0.0
    return -0.5 * (rest / w).pow(2).sum(-1) - rest.shape[-1] * (math.log(w) + 0.5 * _LOG_2PI)


def _n(sample_shape: torch.Size | tuple[int, ...]) -> int:
    return int(torch.Size(sample_shape).numel())


class _Base(Distribution):
    arg_constraints: dict = {}  # noqa: RUF012
    support = constraints.real_vector

    def __init__(self, k: int) -> None:
        super().__init__(torch.Size(), torch.Size([k]), validate_args=False)
        self.k = k


class SmoothedBox(_Base):
    """A uniform box ``[-a, a]^k`` convolved with logistic noise of scale ``s`` per dim.

    Per dim, ``p(x) = (σ((x+a)/s) - σ((x-a)/s)) / 2a``: exact, positive and smooth.
    Sampling: ``U(-a, a) + Logistic(0, s)``, reparameterised.
    """

    has_rsample = True

    def __init__(self, half_width: torch.Tensor, softness: torch.Tensor, k: int) -> None:
        super().__init__(k)
        self.a, self.s = half_width, softness

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Log density, (..., k) -> (...)."""
        u, v = (value + self.a) / self.s, (value - self.a) / self.s
        # log(σ(u) - σ(v)) = u + log(1 - e^{v-u}) - softplus(u) - softplus(v), with u - v = 2a/s
        gap = torch.log(-torch.expm1(-2 * self.a / self.s))
        per_dim = u + gap - F.softplus(u) - F.softplus(v) - torch.log(2 * self.a)
        return per_dim.sum(-1)

    def rsample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> torch.Tensor:
        """Reparameterised samples, (*sample_shape, k)."""
        shape = (*sample_shape, self.k)
        like = {"dtype": self.a.dtype, "device": self.a.device}
        u = (torch.rand(shape, **like) * 2 - 1) * self.a
        p = torch.rand(shape, **like).clamp(1e-7, 1 - 1e-7)
        return u + self.s * (torch.log(p) - torch.log1p(-p))


class Shell(_Base):
    """A thickened sphere in the first ``m`` dims times ``N(0, w²)`` in the remaining ``k - m``.

    ``p(x) ∝ exp(-(|x_{:m}| - r)² / 2w²) · N(x_{m:}; 0, w² I)``, normalised exactly (see
    `flowtopo.priors._radial`). ``m = 2`` is a ring, ``m = k`` a sphere shell.
    """

    has_rsample = False

    def __init__(self, radius: float, width: float, m: int, k: int,
                 dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None) -> None:
        super().__init__(k)
        self.r, self.w, self.m = radius, width, m
        self.like = {"dtype": dtype, "device": device}
        self.log_z = log_shell_normaliser(m, radius, width)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Log density, (..., k) -> (...)."""
        rho = value[..., : self.m].norm(dim=-1)
        out = -0.5 * ((rho - self.r) / self.w) ** 2 - self.log_z
        return out + _gaussian_rest_log_prob(value[..., self.m:], self.w)

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> torch.Tensor:
        """Exact samples (radius by inverse CDF on a fine grid), (*sample_shape, k)."""
        n = _n(sample_shape)
        rho = sample_radius(self.m, self.r, self.w, n, **self.like)
        x = uniform_directions(n, self.m, **self.like) * rho[:, None]
        rest = self.w * torch.randn(n, self.k - self.m, **self.like)
        return torch.cat([x, rest], 1).reshape(*sample_shape, self.k)


class Torus(_Base):
    """A thickened torus surface in the first 3 dims times ``N(0, w²)`` in the others.

    With ``d`` the distance of ``x_{:3}`` to the core circle of radius ``R`` in the (x1, x2)
    plane, ``p ∝ exp(-(d - r)² / 2w²)``. In tube coordinates the volume element is
    ``(R + ρ cos θ) ρ dρ dθ dφ``, so ``Z = 4π² R ∫_0^∞ ρ exp(-(ρ-r)²/2w²) dρ`` exactly whenever
    the tube does not reach the axis; we require ``R ≥ r + 8w`` (the neglected mass is below
    ``exp(-32)``). Sampling: ρ by inverse CDF, θ ∝ (R + ρ cos θ) by inverting its CDF
    ``(Rθ + ρ sin θ) / 2πR`` (bisection, a fixed number of steps), φ uniform.
    """

    has_rsample = False

    def __init__(self, major: float, minor: float, width: float, k: int,
                 dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None) -> None:
        super().__init__(k)
        self.big_r, self.r, self.w = major, minor, width
        self.dtype, self.device = dtype, device
        # log_shell_normaliser(2, ...) = log(2π) + log ∫ ρ e^{...}; Z = 4π² R ∫ ...
        self.log_z = log_shell_normaliser(2, minor, width) + math.log(2 * math.pi * major)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Log density, (..., k) -> (...)."""
        s = value[..., :2].norm(dim=-1)
        d = torch.sqrt((s - self.big_r) ** 2 + value[..., 2] ** 2)
        out = -0.5 * ((d - self.r) / self.w) ** 2 - self.log_z
        return out + _gaussian_rest_log_prob(value[..., 3:], self.w)

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> torch.Tensor:
        """Exact samples, (*sample_shape, k)."""
        n = _n(sample_shape)
        f64 = {"dtype": torch.float64, "device": self.device}
        rho = sample_radius(2, self.r, self.w, n, **f64)
        target = torch.rand(n, **f64) * (2 * math.pi * self.big_r)
        lo, hi = torch.zeros(n, **f64), torch.full((n,), 2 * math.pi, **f64)
        for _ in range(52):  # the CDF is increasing (R > ρ): bisection to float64 precision
            mid = 0.5 * (lo + hi)
            below = self.big_r * mid + rho * torch.sin(mid) < target
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        theta = 0.5 * (lo + hi)
        phi = torch.rand(n, **f64) * 2 * math.pi
        s = self.big_r + rho * torch.cos(theta)
        x = torch.stack([s * torch.cos(phi), s * torch.sin(phi), rho * torch.sin(theta)], 1)
        rest = self.w * torch.randn(n, self.k - 3, **f64)
        return torch.cat([x, rest], 1).to(self.dtype).reshape(*sample_shape, self.k)


class Superposition(_Base):
    """A weighted mixture of distributions of different families: ``log Σ_i w_i p_i(x)``."""

    def __init__(self, members: list[Distribution], logits: torch.Tensor, k: int) -> None:
        super().__init__(k)
        self.members, self.logits = members, logits
        self.has_rsample = False

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Log density, (..., k) -> (...)."""
        logw = torch.log_softmax(self.logits, 0)
        parts = torch.stack([m.log_prob(value) for m in self.members], -1)
        return torch.logsumexp(parts + logw, -1)

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> torch.Tensor:
        """Exact samples: a member by weight, then a sample of it. (*sample_shape, k)."""
        n = _n(sample_shape)
        with torch.no_grad():  # every member draws n, a categorical draw picks one per row
            # (no per-member counts read back to the host: the same code runs on any device)
            idx = torch.multinomial(torch.softmax(self.logits, 0), n, replacement=True)
            drawn = torch.stack([m.sample((n,)).to(self.logits.dtype) for m in self.members])
            out = drawn[idx, torch.arange(n, device=idx.device)]
        return out.reshape(*sample_shape, self.k)
