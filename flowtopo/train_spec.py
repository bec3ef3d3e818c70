"""The `flowtopo train` YAML as pydantic models, and the parts the sweep YAML shares with it.

Read a file into one with `flowtopo.yaml_io.load_spec`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from flowtopo.train_config import NOISE_STD, TrainConfig


class Named(BaseModel):
    """A registry choice: ``{name, params}``."""

    model_config = ConfigDict(extra="forbid")
    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class DatasetSpec(BaseModel):
    """Which data: a registry name or a file path, and loader options."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="Registry name (flowtopo data list) or a .npy/.npz/.csv path.")
    options: dict[str, Any] = Field(default_factory=dict)


class ModelSpec(BaseModel):
    """One FlowAE: latent dim, noise std, flow and prior."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    k: int = Field(2, ge=1, description="Latent dimension.")
    noise_std: float = Field(NOISE_STD, gt=0, description="σ of the noise dims (its start when "
                             "learned).")
    learn_noise: bool = Field(True, description="Train σ: a constant-Jacobian scale, so the "
                              "density stays exact and the tree unchanged.")
    flow: Named = Field(default_factory=lambda: Named(name="coupling"))
    prior: Named = Field(default_factory=lambda: Named(name="gmm"))


class MlflowSpec(BaseModel):
    """Where runs are recorded."""

    model_config = ConfigDict(extra="forbid")
    experiment: str = "flowtopo"
    tracking_uri: str | None = Field(None, description="Default: MLFLOW_TRACKING_URI, else a "
                                     "sqlite file under ./flowtopo-runs.")


class TrainSpec(BaseModel):
    """``flowtopo train CONFIG.yaml``: one model, no Ray."""

    model_config = ConfigDict(extra="forbid")
    dataset: DatasetSpec
    model: ModelSpec = Field(default_factory=ModelSpec)
    train: TrainConfig = Field(default_factory=TrainConfig)
    out: str = Field("flowtopo-runs/model", min_length=1,
                     description="Checkpoint directory to write.")
    mlflow: MlflowSpec | None = None
