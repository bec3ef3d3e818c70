"""The flow auto-encoder: a volume-preserving flow whose output splits into latent and noise.

``f(x) = (z, n)``: z = first k dims (the latent, regularised toward the prior), n = the other D-k
dims (pushed toward ``N(0, σ² I)``). Because log|det J_f| = 0,

    log p(x) = log p_prior(z) + log N(n; 0, σ² I)        (exact).

With ``learn_noise`` σ is a trained parameter. Dividing the noise dims by σ is a map with a
CONSTANT Jacobian, so the density stays exact (its log-det, ``-(D-k) log σ``, is the term of
``log N``) and the super-level-set tree of the latent density is unchanged by it; a fixed σ far
from the data's residual scale costs hundreds of nats instead (measured on digits at σ = 0.1).
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
from flowtopo.train_config import NOISE_STD


class FlowAE(nn.Module):
    """Flow auto-encoder ``FlowAE(D, k, flow, prior, noise_std)``.

    Args:
        dim: data dimension D.
        k: latent dimension, 1 <= k <= D.
        flow: a volume-preserving flow on R^D.
        prior: a prior over R^k.
        noise_std: σ of the noise dims' target N(0, σ² I) (its initial value when learned).
        learn_noise: train σ with the flow (module docstring).

    """

    def __init__(self, dim: int, k: int, flow: VolumePreservingFlow, prior: Prior,
                 noise_std: float = NOISE_STD, learn_noise: bool = True) -> None:
        super().__init__()
        if not 1 <= k <= dim:
            raise InputError(f"FlowAE: need 1 <= k <= D, got k={k}, D={dim}")
        if flow.dim != dim or prior.k != k:
            raise InputError(f"FlowAE: flow dim {flow.dim} / prior k {prior.k} do not match "
                             f"D={dim}, k={k}")
        if not noise_std > 0:
            raise InputError(f"FlowAE: noise_std must be > 0, got {noise_std}")
        self.dim, self.k, self.learn_noise = dim, k, bool(learn_noise)
        self.flow, self.prior = flow, prior
        log_sigma = torch.tensor(math.log(float(noise_std)))
        if self.learn_noise:
            self.log_noise_std = nn.Parameter(log_sigma)
        else:  # not in the state_dict: checkpoints without it keep loading
            self.register_buffer("log_noise_std", log_sigma, persistent=False)

    @property
    def noise_std(self) -> float:
        """σ of the noise dims (its trained value when learned)."""
        return float(self.log_noise_std.detach().exp())

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> FlowAE:
        """Build from ``{dim, k, noise_std, flow: {name, params}, prior: {name, params}}``."""
        dim, k = int(cfg["dim"]), int(cfg["k"])
        flow = build_flow(cfg["flow"], dim)
        prior = build_prior({**cfg["prior"], "k": k})
        # a config without learn_noise was written before σ could be learned: a fixed σ
        return cls(dim, k, flow, prior, cfg.get("noise_std", NOISE_STD),
                   learn_noise=bool(cfg.get("learn_noise", False)))

    def config(self) -> dict[str, Any]:
        """The JSON-ready config that `from_config` rebuilds (weights are in state_dict)."""
        prior = self.prior.to_dict()
        return {"dim": self.dim, "k": self.k, "noise_std": self.noise_std,
                "learn_noise": self.learn_noise, "flow": self.flow.to_dict(),
                "prior": {"name": prior["name"], "params": prior["params"]}}

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
        sigma = self.log_noise_std.exp().to(device=like.device, dtype=like.dtype)
        return sigma * torch.randn(n, self.dim - self.k, dtype=like.dtype, device=like.device)

    def decode(self, z: torch.Tensor, noise: torch.Tensor | None = None, *,
               sample: bool = True) -> torch.Tensor:
        """``f⁻¹(z, n)``: z (n, k) -> x (n, D); n sampled (or 0 with ``sample=False``)."""
        if noise is None:
            noise = self.sample_noise(z.shape[0], z) if sample else z.new_zeros(
                z.shape[0], self.dim - self.k)
        return self.flow.inverse(torch.cat([z, noise], 1))

    def reconstruct(self, x: torch.Tensor, *, sample: bool = True,
                    noise: str | None = None) -> torch.Tensor:
        """Decode ``x`` (n, D) -> (n, D) from its latent.

        ``noise``: ``"sample"`` (fresh N(0, σ²I)), ``"zero"``, or ``"encoded"`` (x's own noise
        dims: the exact inverse, up to rounding). Default: ``"sample"`` if ``sample`` else
        ``"zero"``.
        """
        mode = noise or ("sample" if sample else "zero")
        z, n = self.encode(x)
        if mode == "encoded":
            return self.decode(z, n)
        if mode not in ("sample", "zero"):
            raise InputError(f"reconstruct: noise must be sample, zero or encoded, got {mode!r}")
        return self.decode(z, sample=mode == "sample")

    def sample(self, n: int) -> torch.Tensor:
        """Draw ``n`` new data points: z ~ prior, noise ~ N(0, σ² I), decode. (n, D)."""
        z = self.prior().sample((n,))
        return self.decode(z, sample=True)

    def noise_log_prob(self, noise: torch.Tensor) -> torch.Tensor:
        """``log N(n; 0, σ² I)``: (n, D-k) -> (n,)."""
        d = noise.shape[1]
        log_sigma = self.log_noise_std.to(device=noise.device, dtype=noise.dtype)
        return -0.5 * (noise * torch.exp(-log_sigma)).pow(2).sum(1) - d * (
            log_sigma + 0.5 * math.log(2 * math.pi))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact ``log p(x) = log p_prior(z) + log N(n; 0, σ² I)``: (n, D) -> (n,)."""
        z, noise = self.encode(x)
        return self.prior().log_prob(z) + self.noise_log_prob(noise)
