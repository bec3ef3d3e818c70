"""Train one model from a `TrainSpec`: data, model, training, checkpoint, optional MLflow run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from flowtopo.checkpoint import save_checkpoint
from flowtopo.data import Dataset, load_dataset
from flowtopo.errors import InputError
from flowtopo.model import FlowAE
from flowtopo.train import TrainResult, train
from flowtopo.train_config import c2st_gap
from flowtopo.train_spec import ModelSpec, TrainSpec


@dataclass
class TrainJobResult:
    """What `run_train_spec` produced."""

    result: TrainResult
    checkpoint: Path
    dataset: Dataset
    run_id: str | None = None


def build_model(spec: ModelSpec, dim: int, seed: int) -> FlowAE:
    """A fresh `FlowAE` for data dimension ``dim``, initialised with ``seed``."""
    torch.manual_seed(seed)
    return FlowAE.from_config({
        "dim": dim, "k": spec.k, "noise_std": spec.noise_std, "learn_noise": spec.learn_noise,
        "flow": spec.flow.model_dump(), "prior": spec.prior.model_dump(),
    })


def check_out(out: str | Path, overwrite: bool = False) -> Path:
    """The checkpoint folder ``out``, refused when it holds anything and not ``overwrite``.

    Raises:
        InputError: ``out`` is a file, or a folder with files in it (a user's files would be
            overwritten) and ``overwrite`` is False.

    """
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise InputError(f"{p}: exists and is not a folder; choose another out")
    if p.is_dir() and any(p.iterdir()) and not overwrite:
        raise InputError(f"{p}: folder exists and is not empty; choose another out, or pass "
                         "--overwrite to replace the checkpoint files in it")
    try:  # before any work: an out that cannot be written fails now, not after training
        p.mkdir(parents=True, exist_ok=True)
        probe = p / ".flowtopo-write-check"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise InputError(f"{p}: cannot write the checkpoint there ({err.strerror})") from None
    return p


def run_train_spec(spec: TrainSpec,
                   on_epoch: Callable[[int, dict[str, float]], None] | None = None,
                   overwrite: bool = False) -> TrainJobResult:
    """Train the model ``spec`` describes and write its checkpoint directory ``spec.out``.

    With ``spec.mlflow`` set, the run is recorded in MLflow (params, per-epoch metrics with
    step = epoch, best/final summary metrics, the checkpoint as artifacts).

    Raises:
        InputError: ``spec.out`` is not empty and not ``overwrite`` (checked before training).

    """
    check_out(spec.out, overwrite)
    ds = load_dataset(spec.dataset.name, **spec.dataset.options)
    model = build_model(spec.model, ds.dim, spec.train.seed)
    callbacks = [on_epoch] if on_epoch else []
    run_id, client = None, None
    if spec.mlflow is not None:
        from flowtopo.tracking import (
            MetricBuffer,
            ensure_experiment,
            log_metrics,
            log_params,
            mlflow_client,
            provenance_tags,
            resolve_tracking_uri,
        )

        uri = resolve_tracking_uri(spec.mlflow.tracking_uri)
        exp_id = ensure_experiment(uri, spec.mlflow.experiment)
        client = mlflow_client(uri)
        run = client.create_run(exp_id, tags={"flowtopo.kind": "train",
                                              "dataset": spec.dataset.name,
                                              "family": spec.model.prior.name,
                                              **provenance_tags()})
        run_id = run.info.run_id
        # the configuration, in one request; not where it is written (out) nor recorded
        log_params(client, run_id, spec.model_dump(mode="json", exclude={"out", "mlflow"}))

        buffer = MetricBuffer(client, run_id)  # curves written at most once a second
        callbacks.append(lambda epoch, metrics: buffer.log(metrics, epoch))

    def fan_out(epoch: int, metrics: dict[str, float]) -> None:
        for cb in callbacks:
            cb(epoch, metrics)

    from flowtopo.tracking import maybe_lifecycle

    with maybe_lifecycle(client, run_id):  # FAILED, never left RUNNING
        try:
            result = train(model, ds.x_train, ds.x_test, spec.train, on_epoch=fan_out)
        finally:  # the epochs done are recorded, whatever ended the training
            if run_id is not None:
                buffer.flush()
        ckpt = save_checkpoint(spec.out, result.model, ds.standardizer, {
            "dataset": spec.dataset.model_dump(mode="json"),
            "train": spec.train.model_dump(mode="json"),
            "best_epoch": result.best_epoch, "test": result.test,
        })
        if run_id is not None:
            log_metrics(client, run_id, {**summary_metrics(result), **result.test})
            client.log_artifacts(run_id, str(ckpt), "checkpoint")
    return TrainJobResult(result, ckpt, ds, run_id)


SUMMARY_KEYS = ("val_adv_loss", "val_nll", "val_c2st", "val_recon", "val_noise_kl")
"""The per-epoch validation metrics that get a ``best_*`` summary."""


def best_over_epochs(history: list[dict[str, float]]) -> dict[str, float]:
    """``best_*``: each of `SUMMARY_KEYS` that ``history`` holds at its best epoch for it.

    The minimum over epochs, except ``val_c2st``: the accuracy of the epoch closest to chance
    (`c2st_gap`). One definition for finished runs (`summary_metrics`) and for trials a
    scheduler stopped (``flowtopo.sweep.trainable``); ``flowtopo priors best`` ranks by these.
    """
    out = {}
    for key in SUMMARY_KEYS:
        vals = [h[key] for h in history if key in h]
        if vals:
            best = min(vals, key=c2st_gap) if key == "val_c2st" else min(vals)
            out[f"best_{key.removeprefix('val_')}"] = float(best)
    return out


def summary_metrics(result: TrainResult) -> dict[str, float]:
    """Explicit summary metrics for ranking (MLflow's ``metrics.X`` is the LAST value logged).

    ``best_*`` are the minimum over epochs (`best_over_epochs`); ``final_*`` the best epoch's
    (restored) values.
    """
    out = best_over_epochs(result.history)
    out.update({f"final_{k.removeprefix('val_')}": float(result.best[k]) for k in SUMMARY_KEYS})
    out["best_epoch"] = float(result.best_epoch)
    return out
