"""Running a sweep: Ray Tune + OptunaSearch on a local or remote Ray, recorded in MLflow.

Phase 1 searches (Optuna, define-by-run over prior families). Phase 2 retrains the best
configuration of every family with the remaining seeds, so matching has >= 2 models each.
"""

from __future__ import annotations

import functools
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowtopo.sweep.spec import SweepSpec


@dataclass
class SweepResult:
    """What a sweep did."""

    sweep_id: str
    experiment: str
    tracking_uri: str
    storage_path: str
    parent_run_id: str
    trials: int = 0
    failed: int = 0
    best: dict[str, Any] = field(default_factory=dict)


def make_sampler(spec: SweepSpec) -> Any:
    """The Optuna sampler the YAML asks for (TPE multivariate + group by default)."""
    import optuna

    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=spec.seed)
    if spec.sampler == "grid":
        return optuna.samplers.BruteForceSampler(seed=spec.seed)
    return optuna.samplers.TPESampler(multivariate=True, group=True, seed=spec.seed)


def trainable_for(spec: SweepSpec) -> Any:
    """``train_trial`` with the YAML's resources per trial."""
    from ray import tune

    from flowtopo.sweep.trainable import train_trial

    return tune.with_resources(train_trial, {"cpu": spec.resources.cpu,
                                             "gpu": spec.resources.gpu})


def run_sweep(spec: SweepSpec, *, address: str | None = None, tracking_uri: str | None = None,
              storage_path: str | Path | None = None, callbacks: list[Any] | None = None,
              yaml_text: str | None = None) -> SweepResult:
    """Run ``spec`` to the end and return a summary (see module docstring)."""
    import mlflow
    import ray
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    from flowtopo.sweep.space import define_space
    from flowtopo.tracking import ensure_experiment, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri or spec.mlflow.tracking_uri)
    exp_id = ensure_experiment(uri, spec.mlflow.experiment)  # on the driver, before trials
    storage = str(Path(storage_path or Path.cwd() / "flowtopo-runs" / "ray").resolve())
    sweep_id = f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    client = mlflow.MlflowClient(uri)
    parent = client.create_run(exp_id, run_name=f"sweep {sweep_id}", tags={
        "flowtopo.kind": "sweep", "sweep_id": sweep_id, "dataset": spec.dataset.name})
    pid = parent.info.run_id
    if yaml_text:
        client.log_text(pid, yaml_text, "sweep.yaml")
    client.log_dict(pid, spec.model_dump(mode="json"), "sweep.json")
    address = address or spec.ray_address
    if not ray.is_initialized():
        env = {"env_vars": {"MLFLOW_TRACKING_URI": uri}}
        ray.init(address=address, runtime_env=env if address else None,
                 include_dashboard=False, log_to_driver=False,
                 configure_logging=False) if address else ray.init(
                     include_dashboard=False, log_to_driver=False, configure_logging=False)
    runtime = {"tracking_uri": uri, "experiment_id": exp_id, "sweep_id": sweep_id,
               "parent_run_id": pid, "phase": "search"}
    spec_json = spec.model_dump(mode="json")
    searcher = OptunaSearch(space=functools.partial(define_space, spec=spec_json,
                                                    runtime=runtime),
                            metric=spec.metric, mode=spec.mode, sampler=make_sampler(spec),
                            study_name=sweep_id, seed=spec.seed)
    scheduler = None
    if spec.scheduler == "asha":
        from ray.tune.schedulers import ASHAScheduler

        epochs = int(spec.train.get("epochs", 100))
        scheduler = ASHAScheduler(metric=spec.metric, mode=spec.mode, time_attr="epoch",
                                  max_t=epochs, grace_period=max(1, epochs // 5))
    trainable = trainable_for(spec)
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler,
                                    num_samples=spec.num_samples,
                                    max_concurrent_trials=spec.max_concurrent_trials),
        run_config=tune.RunConfig(
            name=sweep_id, storage_path=storage, verbose=0, callbacks=callbacks or [],
            failure_config=tune.FailureConfig(max_failures=spec.max_failures,
                                              fail_fast=spec.fail_fast)))
    results = tuner.fit()
    n_trials = len(results)
    n_failed = sum(1 for r in results if r.error is not None)
    best_per_family = _best_per_family(results, spec)
    if spec.seeds > 1 and best_per_family:
        seeds_runtime = {**runtime, "phase": "seeds"}
        configs = [{**params, "sweep": spec_json, "runtime": seeds_runtime, "seed": s}
                   for params in best_per_family.values() for s in range(1, spec.seeds)]
        replica = tune.Tuner(
            _unpack_trainable(spec),
            param_space={"cfg": tune.grid_search(configs)},
            tune_config=tune.TuneConfig(max_concurrent_trials=spec.max_concurrent_trials),
            run_config=tune.RunConfig(
                name=f"{sweep_id}-seeds", storage_path=storage, verbose=0,
                callbacks=callbacks or [],
                failure_config=tune.FailureConfig(max_failures=spec.max_failures)))
        seed_results = replica.fit()
        n_trials += len(seed_results)
        n_failed += sum(1 for r in seed_results if r.error is not None)
    best = {}
    try:
        b = results.get_best_result(metric=spec.metric, mode=spec.mode, filter_nan_and_inf=True)
        best = {"metric": spec.metric, "value": b.metrics.get(spec.metric),
                "config": {k: v for k, v in b.config.items() if k not in ("runtime",)},
                "mlflow_run_id": b.metrics.get("mlflow_run_id")}
    except RuntimeError:
        pass
    for key, v in (("trials", n_trials), ("failed_trials", n_failed)):
        client.log_metric(pid, key, v)
    if best.get("value") is not None:
        client.log_metric(pid, f"best_{spec.metric}", float(best["value"]))
    client.set_terminated(pid, "FINISHED")
    return SweepResult(sweep_id, spec.mlflow.experiment, uri, str(Path(storage) / sweep_id),
                       pid, n_trials, n_failed, best)


def _best_per_family(results: Any, spec: SweepSpec) -> dict[str, dict[str, Any]]:
    """Family -> Optuna parameters of its best finished trial."""
    best: dict[str, tuple[float, dict[str, Any]]] = {}
    sign = 1.0 if spec.mode == "min" else -1.0
    for r in results:
        if r.error is not None or not r.metrics or spec.metric not in r.metrics:
            continue
        params = {k: v for k, v in r.config.items() if k not in ("sweep", "runtime", "seed")}
        fam = params.get("prior")
        value = sign * float(r.metrics[spec.metric])
        if fam is not None and (fam not in best or value < best[fam][0]):
            best[fam] = (value, params)
    return {f: p for f, (_, p) in best.items()}


def _unpack_trainable(spec: SweepSpec) -> Any:
    """Phase-2 trainable: the grid value ``cfg`` is a full trial config."""
    from ray import tune

    return tune.with_resources(unpack_and_train, {"cpu": spec.resources.cpu,
                                                  "gpu": spec.resources.gpu})


def unpack_and_train(config: dict[str, Any]) -> None:
    """Train the full configuration held in ``config["cfg"]`` (module level: picklable)."""
    from flowtopo.sweep.trainable import train_trial

    train_trial(config["cfg"])
