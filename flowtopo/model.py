"""The flow auto-encoder: a volume-preserving flow whose output splits into latent and noise.

``f(x) = (z, n)``: z = first k dims (the latent, regularised toward the prior), n = the other D-k
dims (pushed toward ``N(0, σ² I)``). Because log|det J_f| = 0,

    log p(x) = log p_prior(z) + log N(n; 0, σ² I)        (exact).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from flowtopo.errors import InputError
from flowtopo.flows import VolumePreservingFlow, build_flow
from flowtopo.priors import Prior, build_prior


class FlowAE(nn.Module):
    """Flow auto-encoder ``FlowAE(D, k, flow, prior, noise_std)``.

    Args:
        dim: data dimension D.
        k: latent dimension, 1 <= k <= D.
        flow: a volume-preserving flow on R^D.
        prior: a prior over R^k.
        noise_std: σ of the noise dims' target N(0, σ² I).

    """

    def __init__(self, dim: int, k: int, flow: VolumePreservingFlow, prior: Prior,
                 noise_std: float = 0.1) -> None:
        super().__init__()
        if not 1 <= k <= dim:
            raise InputError(f"FlowAE: need 1 <= k <= D, got k={k}, D={dim}")
        if flow.dim != dim or prior.k != k:
            raise InputError(f"FlowAE: flow dim {flow.dim} / prior k {prior.k} do not match "
                             f"D={dim}, k={k}")
        if not noise_std > 0:
            raise InputError(f"FlowAE: noise_std must be > 0, got {noise_std}")
        self.dim, self.k, self.noise_std = dim, k, float(noise_std)
        self.flow, self.prior = flow, prior

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> FlowAE:
        """Build from ``{dim, k, noise_std, flow: {name, params}, prior: {name, params}}``."""
        dim, k = int(cfg["dim"]), int(cfg["k"])
        flow = build_flow(cfg["flow"], dim)
        prior = build_prior({**cfg["prior"], "k": k})
        return cls(dim, k, flow, prior, cfg.get("noise_std", 0.1))

    def config(self) -> dict[str, Any]:
        """The JSON-ready config that `from_config` rebuilds (weights are in state_dict)."""
        prior = self.prior.to_dict()
        return {"dim": self.dim, "k": self.k, "noise_std": self.noise_std,
                "flow": self.flow.to_dict(), "prior": {"name": prior["name"],
                                                       "params": prior["params"]}}

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` (n, D) -> (z (n, k), noise (n, D-k))."""
        y = self.flow(x)
        return y[:, : self.k], y[:, self.k:]

    @torch.no_grad()
    def latents(self, x: np.ndarray | torch.Tensor, *, chunk: int = 65536) -> np.ndarray:
        """The latent codes of ``x`` (n, D) as a float64 numpy array (n, k), without gradients.

        ``x`` is cast to the model's dtype and device and encoded ``chunk`` rows at a time.
        """
        ref = next(self.parameters())
        x = torch.as_tensor(x)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise InputError(f"FlowAE.latents: expected inputs of shape (n, {self.dim}), got "
                             f"{tuple(x.shape)}")
        parts = [self.encode(x[i:i + chunk].to(device=ref.device, dtype=ref.dtype))[0]
                 for i in range(0, len(x), chunk)]
        if not parts:
            return np.zeros((0, self.k))
        return torch.cat(parts).double().cpu().numpy()

    def sample_noise(self, n: int, like: torch.Tensor) -> torch.Tensor:
        """(n, D-k) draws from N(0, σ² I)."""
        return self.noise_std * torch.randn(n, self.dim - self.k, dtype=like.dtype,
                                            device=like.device)

    def decode(self, z: torch.Tensor, noise: torch.Tensor | None = None, *,
               sample: bool = True) -> torch.Tensor:
        """``f⁻¹(z, n)``: z (n, k) -> x (n, D); n sampled (or 0 with ``sample=False``)."""
        if noise is None:
            noise = self.sample_noise(z.shape[0], z) if sample else z.new_zeros(
                z.shape[0], self.dim - self.k)
        return self.flow.inverse(torch.cat([z, noise], 1))

    def reconstruct(self, x: torch.Tensor, *, sample: bool = True) -> torch.Tensor:
        """Decode from z alone (noise resampled or zero): (n, D) -> (n, D)."""
        return self.decode(self.encode(x)[0], sample=sample)

    def sample(self, n: int) -> torch.Tensor:
        """Draw ``n`` new data points: z ~ prior, noise ~ N(0, σ² I), decode. (n, D)."""
        z = self.prior().sample((n,))
        return self.decode(z, sample=True)

    def noise_log_prob(self, noise: torch.Tensor) -> torch.Tensor:
        """``log N(n; 0, σ² I)``: (n, D-k) -> (n,)."""
        d = noise.shape[1]
        return -0.5 * (noise / self.noise_std).pow(2).sum(1) - d * (
            math.log(self.noise_std) + 0.5 * math.log(2 * math.pi))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact ``log p(x) = log p_prior(z) + log N(n; 0, σ² I)``: (n, D) -> (n,)."""
        z, noise = self.encode(x)
        return self.prior().log_prob(z) + self.noise_log_prob(noise)
