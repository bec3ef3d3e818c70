"""The sweep YAML, as pydantic models (see docs/sweep-yaml.md for every key)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from flowtopo.train_config import Regularizer
from flowtopo.train_spec import DatasetSpec, MlflowSpec

# What else a sweep can search besides priors, lr, batch size and flow choices (name -> whether
# its range is searched log-uniformly when the narrowing does not say).
SEARCHABLE_TRAIN = {"reg_weight": False, "recon_weight": False, "noise_weight": False,
                    "prior_weight": False, "disc_lr": True, "weight_decay": False}
SEARCHABLE_MODEL = {"noise_std": True}


class SearchSpec(BaseModel):
    """What Optuna searches: prior families (with narrowed ranges), lr, batch size, flow."""

    model_config = ConfigDict(extra="forbid")
    priors: dict[str, dict[str, Any]] = Field(
        description="Family -> its parameters narrowed ([low, high], [choices] or a value); "
                    "{} keeps the family's declared space.")
    lr: list[float] = Field(default_factory=lambda: [3e-4, 3e-3],
                            description="[low, high], searched log-uniformly.")
    batch_size: list[int] = Field(default_factory=lambda: [256], description="Choices.")
    flow: dict[str, list[Any]] = Field(default_factory=dict,
                                       description="Flow parameter -> choices.")
    train: dict[str, Any] = Field(default_factory=dict, description=(
        "Training weight -> narrowing (a value, {low, high[, log]}, [low, high] or "
        "{values: [...]}); keys: " + ", ".join(SEARCHABLE_TRAIN) + "."))
    model: dict[str, Any] = Field(default_factory=dict, description=(
        "Model parameter -> narrowing; keys: " + ", ".join(SEARCHABLE_MODEL) + "."))

    @field_validator("train", "model")
    @classmethod
    def _searchable(cls, v: dict[str, Any], info: Any) -> dict[str, Any]:
        valid = SEARCHABLE_TRAIN if info.field_name == "train" else SEARCHABLE_MODEL
        unknown = sorted(set(v) - set(valid))
        if unknown:
            raise ValueError(f"{unknown[0]!r} cannot be searched; valid: {', '.join(valid)}")
        empty = [key for key, narrowing in v.items() if narrowing is None]
        if empty:
            raise ValueError(f"{empty[0]}: give a value, {{low, high}} or {{values: [...]}}")
        return v

    @field_validator("priors")
    @classmethod
    def _known_families(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        from flowtopo.priors import PRIORS

        if not v:
            raise ValueError("list at least one prior family")
        for name in v:
            if name not in PRIORS:
                raise ValueError(f"unknown prior family {name!r}; valid: {', '.join(PRIORS)}")
        return {k: dict(p or {}) for k, p in v.items()}

    @field_validator("lr")
    @classmethod
    def _range(cls, v: list[float]) -> list[float]:
        import math

        if len(v) != 2 or not all(math.isfinite(x) for x in v) or not 0 < v[0] <= v[1]:
            raise ValueError(f"lr must be [low, high], finite, with 0 < low <= high; got {v}")
        return v

    @field_validator("batch_size")
    @classmethod
    def _choices(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("batch_size: list at least one choice")
        return v

    @field_validator("flow")
    @classmethod
    def _flow_choices(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        empty = [p for p, choices in v.items() if not choices]
        if empty:
            raise ValueError(f"flow.{empty[0]}: list at least one choice")
        return v


class Resources(BaseModel):
    """Resources per trial (fractions allowed)."""

    model_config = ConfigDict(extra="forbid")
    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0)
    wait_s: float = Field(300.0, ge=0, description=(
        "On a cluster, how long the sweep waits for a node that can hold one trial (an "
        "autoscaler adding GPU workers) before it fails; a local Ray is refused at once."))

    def for_tune(self) -> dict[str, float]:
        """The per-trial request for ``tune.with_resources``."""
        return {"cpu": self.cpu, "gpu": self.gpu}

    @property
    def threads(self) -> int:
        """The torch threads a trial trains on: its whole CPUs, at least one.

        Ray does not cap a worker's threads (torch would use every core of the node), so two
        concurrent trials on a 2-core node would each run 2 threads and contend.
        """
        return max(1, int(self.cpu))

    @property
    def device(self) -> str:
        """Where a trial trains: ``cuda`` when it is given a (share of a) GPU, else ``cpu``."""
        return "cuda" if self.gpu > 0 else "cpu"


OPTUNA_STORAGE_ENV = "FLOWTOPO_OPTUNA_STORAGE"
"""An environment variable holding the Optuna storage URL; it wins over the YAML's and keeps a
database password out of the YAML (which is logged to MLflow)."""


class OptunaSpec(BaseModel):
    """Where Optuna's study lives, and how long TPE samples at random before it models."""

    model_config = ConfigDict(extra="forbid")
    storage: str | None = Field(
        None, description="Optuna RDB storage URL (sqlite:///PATH, postgresql://USER@HOST/DB, "
        "mysql://...); a password goes in $" + OPTUNA_STORAGE_ENV + ", never here. Default: "
        "optuna.db beside a sqlite MLflow store, else ./flowtopo-runs/optuna.db.")
    n_startup_trials: int | None = Field(
        None, ge=1, description="TPE's random trials before it models the space; default "
        "min(10, max(2, num_samples // 4)).")

    @field_validator("storage")
    @classmethod
    def _rdb_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(v)
        except ArgumentError:
            raise ValueError(f"{v!r} is not a database URL (e.g. sqlite:///optuna.db)") from None
        if url.get_backend_name() not in ("sqlite", "postgresql", "mysql"):
            raise ValueError(f"{url.get_backend_name()!r}: Optuna storage is sqlite, postgresql "
                             "or mysql")
        if url.password:
            raise ValueError(f"the storage URL holds a password: the sweep YAML is logged to "
                             f"MLflow; put the URL in ${OPTUNA_STORAGE_ENV} instead")
        return v


class SweepSpec(BaseModel):
    """A sweep: FlowAEs over prior families, searched by Optuna on Ray Tune, logged in MLflow."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    dataset: DatasetSpec
    model: dict[str, Any] = Field(default_factory=dict,
                                  description="k, noise_std, flow: {name, params}.")
    search: SearchSpec
    regularizer: Regularizer = "mle"
    train: dict[str, Any] = Field(default_factory=dict,
                                  description="Fixed TrainConfig fields (epochs, patience...).")
    seeds: int = Field(2, ge=1, description="Independent models of each family's best config.")
    metric: Literal["val_adv_loss", "val_nll", "val_c2st_gap", "val_recon"] = "val_adv_loss"
    mode: Literal["min", "max"] = "min"
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    scheduler: Literal["asha", "none"] = "none"
    num_samples: int = Field(8, ge=1)
    max_concurrent_trials: int = Field(2, ge=1)
    resources: Resources = Field(default_factory=Resources)
    max_failures: int = Field(1, ge=0, description="Retries per trial (Ray FailureConfig).")
    checkpoint_every: int = Field(
        10, ge=0, description="Epochs between mid-training checkpoints (0: none): a retried "
        "trial (e.g. its spot node reclaimed) resumes from the last one, in the same MLflow run.")
    fail_fast: bool = False
    mlflow: MlflowSpec = Field(default_factory=MlflowSpec)
    optuna: OptunaSpec = Field(default_factory=OptunaSpec)

    @field_validator("metric", mode="before")
    @classmethod
    def _not_the_raw_accuracy(cls, v: Any) -> Any:
        if v == "val_c2st":
            raise ValueError("val_c2st is a two-sample accuracy (0.5 = indistinguishable from "
                             "the prior): minimising it rewards values below chance; use "
                             "val_c2st_gap (|accuracy - 0.5|)")
        return v
    ray_address: str | None = None
    seed: int = 0

    @model_validator(mode="after")
    def _check_model_and_train(self) -> SweepSpec:
        from flowtopo.train import TrainConfig
        from flowtopo.train_spec import ModelSpec

        ModelSpec.model_validate({**self.model, "prior": {"name": "gaussian"}})
        forbidden = {"lr", "batch_size", "regularizer", "seed", "device"} & set(self.train)
        if forbidden:
            raise ValueError(f"train: {', '.join(sorted(forbidden))} are set by the sweep "
                             "(search/regularizer/seeds/resources), not under train")
        for section, fixed in (("train", self.train), ("model", self.model)):
            both = sorted(set(fixed) & set(getattr(self.search, section)))
            if both:
                raise ValueError(f"{section}.{both[0]} is both fixed (under {section}) and "
                                 f"searched (under search.{section}): keep one")
        TrainConfig.model_validate(self.train)
        return self
