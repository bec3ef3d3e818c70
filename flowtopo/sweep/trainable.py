"""One Ray Tune trial: train one FlowAE, report per epoch to Tune, record everything in MLflow.

Module-level and importable, so Ray workers and ``Tuner.restore`` can find it.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from typing import Any

RESERVED = ("seed",)  # in a trial's config beside what Optuna suggested
USER_ERROR = "user_error"  # the key of the one result a trial reports when its input was bad
STATE_FILE = "train_state.pt"  # a mid-training checkpoint: `flowtopo.train.TrainState`
RUN_FILE = "mlflow_run.json"  # beside it: the MLflow run the retried trial goes on logging to
TRAIN_S = "trial_train_s"
"""Metric: seconds of the trial's own work, as a bare loop does it (data, model, epochs)."""
REPORT_S = "trial_report_s"
"""Metric: seconds the training waited on the engines (per-epoch reports to Tune, curves to
MLflow, mid-training checkpoints)."""


def train_trial(config: dict[str, Any], sweep: dict[str, Any], runtime: dict[str, Any]) -> None:
    """The trainable (``sweep`` and ``runtime`` bound by ``tune.with_parameters``).

    Args:
        config: Optuna's parameters and ``seed``.
        sweep: the `SweepSpec` as JSON.
        runtime: where to record: tracking URI, experiment id, sweep id, parent run, phase.

    """
    import torch
    from ray import tune

    from flowtopo.data import load_dataset
    from flowtopo.errors import InputError
    from flowtopo.sweep.space import resolve
    from flowtopo.sweep.spec import SweepSpec
    from flowtopo.tracking import log_params, mlflow_client
    from flowtopo.train import train
    from flowtopo.train_job import build_model

    spec = SweepSpec.model_validate(sweep)
    torch.set_num_threads(spec.resources.threads)  # the CPUs Ray gave the trial, no more
    seed = int(config.get("seed", 0))
    params = {k: v for k, v in config.items() if k not in RESERVED}
    trial_dir = tune.get_context().get_trial_dir() or os.getcwd()
    client = mlflow_client(runtime["tracking_uri"], probe=False)  # the client retries instead
    resume, run_id = _resume_point(tune.get_checkpoint())
    run_id, logged = _open_run(client, runtime, spec, config, tune.get_context().get_trial_id(),
                               seed, run_id, resume)
    reporter = _Reporter(client, run_id, logged, list(resume.history) if resume else [])
    try:
        ts = resolve(params, spec, seed, os.path.join(trial_dir, "checkpoint"),
                     spec.resources.device)
        if resume is None:
            client.set_tag(run_id, "family", ts.model.prior.name)
            # the configuration in one request, without the trial folder (out) and mlflow
            log_params(client, run_id, {**ts.model_dump(mode="json", exclude={"out", "mlflow"}),
                                        "optuna": params})
        start = time.perf_counter()
        ds = load_dataset(ts.dataset.name, **ts.dataset.options)
        try:
            result = train(build_model(ts.model, ds.dim, seed), ds.x_train, ds.x_test, ts.train,
                           on_epoch=reporter.on_epoch, state_every=spec.checkpoint_every,
                           on_state=reporter.pending.append, resume=resume)
        finally:  # the epochs done are recorded, whatever ended the training
            trained = time.perf_counter()
            own = trained - start - reporter.seconds  # the epochs' waits taken out
            reporter.curves.flush()
            reporter.seconds += time.perf_counter() - trained  # the last curves' write
        timing = {TRAIN_S: own, REPORT_S: reporter.seconds}
        ckpt = _record_result(client, run_id, result, ds, ts, runtime["sweep_id"], trial_dir,
                              timing)
    except SystemExit:  # Ray stops a trial (scheduler, e.g. ASHA) by raising SystemExit in it
        _stopped_early(client, run_id, reporter.history)
        raise
    except InputError as err:  # the user's error is deterministic: reported, never retried
        client.set_tag(run_id, "error", f"InputError: {err}"[:4000])
        client.set_terminated(run_id, "FAILED")
        # the searcher needs its metric in every result: NaN, which Optuna records as failed
        tune.report({USER_ERROR: str(err)[:1000], spec.metric: float("nan")})
        return
    except BaseException as err:
        client.set_tag(run_id, "error", f"{type(err).__name__}: {err}"[:4000])
        client.set_terminated(run_id, "FAILED")
        raise
    try:  # the final report carries the checkpoint; the run is complete and recorded
        tune.report({**result.best, "epoch": result.best_epoch, "mlflow_run_id": run_id},
                    checkpoint=tune.Checkpoint.from_directory(str(ckpt)))
    except SystemExit:  # a scheduler stopping the trial at its budget: nothing left to do
        return


class _Reporter:
    """Per epoch: the metrics to MLflow (buffered) and to Tune.

    With a checkpoint when the training handed over its state (every ``checkpoint_every``
    epochs).
    """

    def __init__(self, client: Any, run_id: str, logged: int,
                 history: list[dict[str, float]]) -> None:
        from flowtopo.tracking import MetricBuffer

        self.run_id, self.logged, self.history = run_id, logged, history
        self.curves = MetricBuffer(client, run_id)  # written at most once a second
        self.pending: list[Any] = []  # the `TrainState` of this epoch, reported with it
        self.seconds = 0.0  # spent in `on_epoch` (the training waits on it)

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """Record the epoch; the seconds it takes are added to ``seconds``."""
        start = time.perf_counter()
        try:
            self._on_epoch(epoch, metrics)
        finally:
            self.seconds += time.perf_counter() - start

    def _on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        from ray import tune

        self.history.append(metrics)
        if epoch > self.logged:  # steps an interrupted attempt logged are not logged twice
            self.curves.log(metrics, epoch)
        if not self.pending:
            tune.report({**metrics, "epoch": epoch})
            return
        self.curves.flush()  # a retry from this checkpoint finds every epoch up to it logged
        with tempfile.TemporaryDirectory() as d:
            self.pending.pop().save(os.path.join(d, STATE_FILE))
            with open(os.path.join(d, RUN_FILE), "w") as f:
                json.dump({"mlflow_run_id": self.run_id, "epoch": epoch}, f)
            tune.report({**metrics, "epoch": epoch}, checkpoint=tune.Checkpoint.from_directory(d))


def _record_result(client: Any, run_id: str, result: Any, ds: Any, ts: Any, sweep_id: str,
                   trial_dir: str, timing: dict[str, float]) -> Any:
    """Record the trained model (checkpoint, summary metrics, latent picture); end the run.

    ``timing`` (`TRAIN_S`, `REPORT_S`) goes with the summary metrics: with the run's start
    and end it says where the trial's time went (this attempt's, for a resumed trial).

    Returns:
        The checkpoint folder.

    """
    from flowtopo.checkpoint import save_checkpoint
    from flowtopo.tracking import log_metrics
    from flowtopo.train_job import summary_metrics

    ckpt = save_checkpoint(ts.out, result.model, ds.standardizer, {
        "dataset": ts.dataset.model_dump(mode="json"),
        "train": ts.train.model_dump(mode="json"), "best_epoch": result.best_epoch,
        "test": result.test, "sweep_id": sweep_id, "run_id": run_id})
    log_metrics(client, run_id, {**summary_metrics(result), **result.test, **timing})
    client.log_artifacts(run_id, str(ckpt), "checkpoint")
    picture = os.path.join(trial_dir, "latent.png")
    _latent_picture(result.model, ds, picture)
    client.log_artifact(run_id, picture)
    client.set_terminated(run_id, "FINISHED")
    return ckpt


def _open_run(client: Any, rt: dict[str, Any], spec: Any, config: dict[str, Any],
              trial_id: str, seed: int, run_id: str | None, resume: Any) -> tuple[str, int]:
    """The trial's MLflow run: a new one, or (a retry) the run its checkpoint names, reopened.

    Returns:
        (run id, the last epoch already logged to it: 0 for a new run).

    """
    import torch

    from flowtopo.tracking import provenance_tags

    # where the trial runs, and on how many threads (Ray sets OMP_NUM_THREADS to its CPUs)
    where = {"ray_node_id": _node_id(), "worker_pid": str(os.getpid()),
             "torch_threads": str(torch.get_num_threads())}
    if run_id is None:
        _close_lost_runs(client, rt, trial_id, seed)
        run = client.create_run(
            rt["experiment_id"], run_name=f"{config.get('prior', 'trial')}-s{seed}-{trial_id}",
            tags={"mlflow.parentRunId": rt["parent_run_id"], "flowtopo.kind": "trial",
                  "sweep_id": rt["sweep_id"], "trial_id": trial_id, "seed": str(seed),
                  "dataset": spec.dataset.name, "phase": rt.get("phase", "search"), **where,
                  **provenance_tags()})
        return run.info.run_id, 0
    client.update_run(run_id, status="RUNNING")
    for stale in ("stopped_early", "error"):  # what closing the lost attempt wrote
        if stale in client.get_run(run_id).data.tags:
            client.delete_tag(run_id, stale)
    for key, value in {**where, "resumed_from_epoch": str(resume.epoch)}.items():
        client.set_tag(run_id, key, value)
    return run_id, _last_logged_epoch(client, run_id)


def _resume_point(checkpoint: Any) -> tuple[Any, str | None]:
    """The `TrainState` and MLflow run id of a retried trial's last checkpoint, or (None, None).

    A trial's final checkpoint (the trained model) holds no state: (None, None).
    """
    from flowtopo.train import TrainState

    if checkpoint is None:
        return None, None
    with checkpoint.as_directory() as d:
        state, run = os.path.join(d, STATE_FILE), os.path.join(d, RUN_FILE)
        if not (os.path.isfile(state) and os.path.isfile(run)):
            return None, None
        with open(run) as f:
            run_id = str(json.load(f)["mlflow_run_id"])
        return TrainState.load(state), run_id


def _last_logged_epoch(client: Any, run_id: str) -> int:
    """The last epoch an earlier attempt of this run logged (0 when none)."""
    return max((int(m.step) for m in client.get_metric_history(run_id, "epoch")), default=0)


def _close_lost_runs(client: Any, rt: dict[str, Any], trial_id: str, seed: int) -> None:
    """Mark FAILED the runs of earlier attempts of this trial lost before any checkpoint.

    A worker killed (a reclaimed spot node) before its first checkpoint leaves its run
    RUNNING; the retry starts afresh in a new run and says so on the old one.
    """
    lost = client.search_runs(
        [rt["experiment_id"]],
        filter_string=(f"tags.trial_id = '{trial_id}' AND tags.seed = '{seed}' AND "
                       f"tags.sweep_id = '{rt['sweep_id']}' AND attributes.status = 'RUNNING'"))
    for r in lost:
        client.set_tag(r.info.run_id, "error", "the worker was lost before the trial's first "
                       "checkpoint; the retry trains in a new run")
        client.set_terminated(r.info.run_id, "FAILED")


def _node_id() -> str:
    """The Ray node this trial runs on (which machine of the cluster)."""
    import ray

    try:
        return str(ray.get_runtime_context().get_node_id())
    except Exception:  # not inside Ray (a direct call in tests)
        return "none"


def _stopped_early(client: Any, run_id: str, history: list[dict[str, float]]) -> None:
    """Close the run of a trial the scheduler stopped (`close_stopped`)."""
    close_stopped(client, run_id, history, f"by the scheduler after {len(history)} epochs")


def close_stopped(client: Any, run_id: str, history: list[dict[str, float]], why: str) -> None:
    """Close a stopped trial's run: KILLED, tagged ``stopped_early``, with its summaries.

    The ``best_*`` of ``history`` (per-epoch metrics) are what `priors best` ranks by. Called
    by the trial itself, or by the sweep for a run whose trial was cut off first.
    """
    from flowtopo.tracking import log_metrics
    from flowtopo.train_job import best_over_epochs

    summary = best_over_epochs(history)
    if summary:
        log_metrics(client, run_id, summary)
    client.set_tag(run_id, "stopped_early", why)
    client.set_terminated(run_id, "KILLED")


def _latent_picture(model: Any, ds: Any, path: str) -> None:
    from flowtopo.plotting import new_figure, save, scatter

    z = model.latents(ds.x_test)
    fig, (ax,) = new_figure(1)
    scatter(ax, z, ds.y_test, title="test latents")
    save(fig, path)
