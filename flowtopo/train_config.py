"""Training configuration without torch: `TrainConfig`, the regularizer names, the noise default.

Specs (``flowtopo.train_spec``, ``flowtopo.sweep.spec``) validate YAML against these; importing them
must not load torch (a sweep is validated on a driver that may have none, in a fraction of a
second). The training loop (``flowtopo.train``), the regularizers and the model import them.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

Regularizer = Literal["adversarial", "mmd", "swd", "mle"]
"""The one list of regularizer names: the training config, the sweep YAML and the CLI use it."""
REGULARIZERS: tuple[str, ...] = get_args(Regularizer)

NOISE_STD = 0.5
"""The default σ of a FlowAE's noise dims (its start when learned), for every entry point."""


class TrainConfig(BaseModel):
    """Training hyper-parameters (the ``train:`` section of a YAML spec)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # lr: .inf is an error

    epochs: int = Field(100, ge=1, description="Maximum number of epochs.")
    batch_size: int = Field(256, ge=2)
    lr: float = Field(1e-3, gt=0, description="Adam learning rate of flow and prior.")
    weight_decay: float = Field(0.0, ge=0)
    regularizer: Regularizer = "adversarial"
    reg_weight: float = Field(1.0, ge=0, description="Weight of the latent matching term.")
    recon_weight: float = Field(1.0, ge=0)
    noise_weight: float = Field(1.0, ge=0)
    prior_weight: float = Field(1.0, ge=0, description="Fit of learnable priors to the codes.")
    disc_hidden: int = Field(64, ge=1)
    disc_lr: float = Field(1e-3, gt=0)
    disc_steps: int = Field(1, ge=1)
    patience: int = Field(20, ge=1, description="Early stopping: epochs without improvement.")
    monitor: Literal["val_nll", "val_adv_loss", "val_recon"] = "val_nll"
    val_fraction: float = Field(0.1, gt=0, lt=0.5)
    eval_size: int = Field(2000, ge=10, description="Points used for held-out metrics.")
    grad_clip: float = Field(10.0, gt=0)
    seed: int = 0
    device: str = Field("cpu", pattern=r"^(cpu|auto|cuda(:\d+)?|mps)$",
                        description="cpu, cuda, cuda:N, mps or auto.")


def c2st_gap(accuracy: float) -> float:
    """How far a two-sample accuracy is from chance: |accuracy - 0.5| (0 = indistinguishable).

    An accuracy below 0.5 is no better than one as far above it: both are chance plus noise
    or a classifier that tells the samples apart (inverted). Ranking by the raw accuracy would
    reward values below 0.5.
    """
    return abs(float(accuracy) - 0.5)
