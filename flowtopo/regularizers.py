"""Distribution-matching terms between encoded latents and prior samples, and the discriminator.

- adversarial (adversarial auto-encoder, Makhzani et al. 2016): a discriminator separates prior
  samples from codes; the encoder minimises the non-saturating loss ``-log D(z)``.
- mmd: squared maximum mean discrepancy with a sum of RBF kernels (Gretton et al. 2012).
- swd: sliced Wasserstein-2 over random 1-D projections (Kolouri et al. 2019).
- mle: none here; the latent is fitted by ``-log p_prior(z)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


class Discriminator(nn.Module):
    """An MLP scoring latents: logit > 0 means "prior sample"."""

    def __init__(self, k: int, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(k, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden),
                                 nn.LeakyReLU(0.2), nn.Linear(hidden, 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """(n, k) -> (n,) logits."""
        return self.net(z).squeeze(-1)

    def loss(self, z_prior: torch.Tensor, z_code: torch.Tensor) -> torch.Tensor:
        """Binary cross-entropy: prior samples labelled 1, codes 0 (mean over both)."""
        lp, lc = self(z_prior), self(z_code)
        return 0.5 * (F.binary_cross_entropy_with_logits(lp, torch.ones_like(lp))
                      + F.binary_cross_entropy_with_logits(lc, torch.zeros_like(lc)))

    def generator_loss(self, z_code: torch.Tensor) -> torch.Tensor:
        """Non-saturating generator loss ``-log D(z)``."""
        lc = self(z_code)
        return F.binary_cross_entropy_with_logits(lc, torch.ones_like(lc))


def mmd(z: torch.Tensor, s: torch.Tensor, scales: tuple[float, ...] = (0.2, 0.5, 1.0, 2.0, 5.0)
        ) -> torch.Tensor:
    """Biased MMD² between z (n, k) and s (m, k) with a sum of RBF kernels."""
    def k(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        d2 = torch.cdist(a, b).pow(2)
        return sum(torch.exp(-0.5 * d2 / h**2) for h in scales)  # type: ignore[return-value]

    return k(z, z).mean() + k(s, s).mean() - 2 * k(z, s).mean()


def sliced_wasserstein(z: torch.Tensor, s: torch.Tensor, n_proj: int = 64) -> torch.Tensor:
    """Sliced W2² between equal-size z (n, k) and s (n, k) over ``n_proj`` random directions."""
    dirs = torch.randn(z.shape[1], n_proj, dtype=z.dtype, device=z.device)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    pz, _ = torch.sort(z @ dirs, 0)
    ps, _ = torch.sort(s @ dirs, 0)
    return (pz - ps).pow(2).mean()


SAMPLE_REGULARIZERS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "mmd": mmd,
    "swd": sliced_wasserstein,
}
