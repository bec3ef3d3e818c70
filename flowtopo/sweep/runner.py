"""Running a sweep: Ray Tune + OptunaSearch on a local or remote Ray, recorded in MLflow.

Phase 1 searches (Optuna, define-by-run over prior families). Phase 2 retrains the best
configuration of every family with the remaining seeds, so matching has >= 2 models each.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowtopo.runtime import init_ray
from flowtopo.sweep.spec import OPTUNA_STORAGE_ENV, SweepSpec
from flowtopo.sweep.storage import Storage, open_storage
from flowtopo.sweep.trainable import RESERVED, USER_ERROR


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
    interrupted: bool = False
    already_finished: bool = False  # a resume of a sweep that had ended: nothing was done
    failures: list[str] = field(default_factory=list)  # one line per failed trial: id: reason
    user_errors: int = 0  # failures that were the user's input (InputError), never retried
    optuna_study: str = ""  # the Optuna study (named after the sweep) ...
    optuna_storage: str = ""  # ... and where it persists (password masked)

    @property
    def user_errors_only(self) -> bool:
        """Some trial failed, and every failure was the user's input."""
        return 0 < self.failed == self.user_errors

    @property
    def all_failed(self) -> bool:
        """No trial finished: the sweep produced nothing (its parent run is FAILED)."""
        return self.trials > 0 and self.failed >= self.trials


def failure_line(result: Any) -> str | None:
    """``TRIAL_ID: reason`` for a failed trial (a Ray error or a reported user error), or None."""
    metrics = result.metrics or {}
    name = metrics.get("trial_id") or Path(str(result.path)).name
    if USER_ERROR in metrics:
        return f"{name}: {metrics[USER_ERROR]}"
    if result.error is None:
        return None
    lines = [ln.strip() for ln in str(result.error).splitlines() if ln.strip()]
    return f"{name}: {lines[-1] if lines else type(result.error).__name__}"


def _check_resources(spec: SweepSpec, address: str | None) -> None:
    """Fail with one line when no node can ever hold a trial (`wait_for_resources`)."""
    import os

    from flowtopo.runtime import wait_for_resources

    cluster = bool(address or spec.ray_address or os.environ.get("RAY_ADDRESS"))
    wait_for_resources(spec.resources.for_tune(), wait_s=spec.resources.wait_s,
                       can_grow=cluster)


def _checkpoint_config() -> Any:
    """Ray keeps each trial's two latest checkpoints.

    A retry resumes from the latest; the one before covers a failure during its upload. The
    trained models live in MLflow, not here.
    """
    from ray import tune

    return tune.CheckpointConfig(num_to_keep=2)


def make_sampler(spec: SweepSpec) -> Any:
    """The Optuna sampler the YAML asks for (TPE multivariate + group by default)."""
    import optuna

    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=spec.seed)
    if spec.sampler == "grid":
        from flowtopo.sweep._grid import ExhaustiveGridSampler

        with warnings.catch_warnings():  # flagged experimental since optuna 3.1
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return ExhaustiveGridSampler(seed=spec.seed)
    return optuna.samplers.TPESampler(multivariate=True, group=True, seed=spec.seed,
                                      n_startup_trials=startup_trials(spec))


def startup_trials(spec: SweepSpec) -> int:
    """TPE's random start: ``optuna.n_startup_trials``, else a quarter of the trials (2 to 10).

    Optuna's default of 10 would leave an 8-trial sweep a pure random search.
    """
    if spec.optuna.n_startup_trials is not None:
        return spec.optuna.n_startup_trials
    from flowtopo.sweep.space import trial_budget

    return min(10, max(2, trial_budget(spec) // 4))


def optuna_storage_url(spec: SweepSpec, tracking_uri: str) -> str:
    """Where the sweep's Optuna study persists (`OptunaSpec`).

    ``$FLOWTOPO_OPTUNA_STORAGE``, else the YAML's ``optuna.storage``, else ``optuna.db``
    beside a sqlite MLflow store, else ``./flowtopo-runs/optuna.db``.
    """
    import os

    if os.environ.get(OPTUNA_STORAGE_ENV):
        return os.environ[OPTUNA_STORAGE_ENV]
    if spec.optuna.storage:
        return spec.optuna.storage
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri.removeprefix("sqlite:///")).resolve()
        return f"sqlite:///{db.parent / 'optuna.db'}"
    return f"sqlite:///{(Path.cwd() / 'flowtopo-runs' / 'optuna.db').resolve()}"


def shown_url(url: str) -> str:
    """``url`` with any password masked (for tags, logs and JSON)."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def trainable_for(spec: SweepSpec, runtime: dict[str, Any]) -> Any:
    """``train_trial`` with the sweep and ``runtime`` bound, and the YAML's resources per trial.

    The fixed values travel by ``tune.with_parameters`` (Ray's object store), not in the
    trial's config: the config holds only what Optuna suggested, and the seed.
    """
    from ray import tune

    from flowtopo.sweep.trainable import train_trial

    bound = tune.with_parameters(train_trial, sweep=spec.model_dump(mode="json"),
                                 runtime=runtime)
    return tune.with_resources(bound, spec.resources.for_tune())


def trial_name(trial: Any) -> str:
    """A trial's folder and display name: its family, its seed and Ray's trial id."""
    config = trial.config.get("cfg", trial.config)  # the seeds phase nests the config
    return f"{config.get('prior', 'trial')}-s{config.get('seed', 0)}-{trial.trial_id}"


CONTEXT_FILE = "flowtopo-sweep.json"


def run_sweep(spec: SweepSpec, *, address: str | None = None, tracking_uri: str | None = None,
              storage_path: str | Path | None = None, callbacks: list[Any] | None = None,
              yaml_text: str | None = None) -> SweepResult:
    """Run ``spec`` to the end and return a summary (see module docstring).

    The sweep's context (spec, MLflow ids) is written beside its Ray Tune results as
    ``flowtopo-sweep.json``, so `resume_sweep` can continue an interrupted sweep.
    """
    from flowtopo.sweep.space import trial_budget
    from flowtopo.tracking import (
        ensure_experiment,
        mlflow_client,
        provenance_tags,
        resolve_tracking_uri,
        run_lifecycle,
    )

    num_samples = trial_budget(spec)
    uri = resolve_tracking_uri(tracking_uri or spec.mlflow.tracking_uri)
    exp_id = ensure_experiment(uri, spec.mlflow.experiment)  # on the driver, before trials
    storage = open_storage(storage_path or Path.cwd() / "flowtopo-runs" / "ray").uri
    sweep_id = f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    client = mlflow_client(uri)
    parent = client.create_run(exp_id, run_name=f"sweep {sweep_id}", tags={
        "flowtopo.kind": "sweep", "sweep_id": sweep_id, "dataset": spec.dataset.name,
        "search_trials": str(num_samples), **provenance_tags()})
    pid = parent.info.run_id
    with run_lifecycle(client, pid, finish=False):  # a failure is FAILED, never RUNNING
        return _search(spec, client, pid, uri, exp_id, storage, sweep_id, num_samples, address,
                       callbacks, yaml_text)


def _search(spec: SweepSpec, client: Any, pid: str, uri: str, exp_id: str, storage: str,
            sweep_id: str, num_samples: int, address: str | None, callbacks: list[Any] | None,
            yaml_text: str | None) -> SweepResult:
    """The search phase of `run_sweep` (then `_finish`), its parent run ``pid`` created."""
    import json

    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    from flowtopo.sweep.space import define_space

    if yaml_text:
        client.log_text(pid, yaml_text, "sweep.yaml")
    spec_json = spec.model_dump(mode="json")
    client.log_dict(pid, spec_json, "sweep.json")
    init_ray(address or spec.ray_address, uri)
    _check_resources(spec, address)
    runtime = {"tracking_uri": uri, "experiment_id": exp_id, "sweep_id": sweep_id,
               "parent_run_id": pid, "phase": "search", TUNE_LOGS: "csv+json"}
    url = optuna_storage_url(spec, uri)
    exp_dir = open_storage(storage).child(sweep_id)
    exp_dir.mkdir()
    exp_dir.write_text(CONTEXT_FILE, json.dumps({
        "spec": spec_json, "runtime": runtime, "storage": storage,
        "optuna_storage": shown_url(url)}, indent=2))
    client.set_tag(pid, "optuna_study", sweep_id)
    client.set_tag(pid, "optuna_storage", shown_url(url))
    searcher = OptunaSearch(space=functools.partial(define_space, spec=spec_json),
                            metric=spec.metric, mode=spec.mode, sampler=make_sampler(spec),
                            study_name=sweep_id, seed=spec.seed, storage=rdb_storage(url))
    scheduler = None
    if spec.scheduler == "asha":
        from ray.tune.schedulers import ASHAScheduler

        epochs = int(spec.train.get("epochs", 100))  # one report per epoch + a final one
        scheduler = ASHAScheduler(metric=spec.metric, mode=spec.mode,
                                  time_attr="training_iteration", max_t=epochs + 1,
                                  grace_period=max(1, epochs // 5))
    tuner = tune.Tuner(
        trainable_for(spec, runtime),
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler,
                                    num_samples=num_samples,
                                    max_concurrent_trials=spec.max_concurrent_trials,
                                    trial_name_creator=trial_name,
                                    trial_dirname_creator=trial_name,
                                    # a trial's worker process (torch, MLflow imported) serves
                                    # the next trial; not under a scheduler, whose stops the
                                    # trial sees only as SystemExit in a worker of its own
                                    reuse_actors=scheduler is None),
        run_config=tune.RunConfig(
            # a new list: Ray appends to it (holding this phase's trials)
            name=sweep_id, storage_path=storage, verbose=0, callbacks=tune_callbacks(callbacks),
            failure_config=tune.FailureConfig(max_failures=spec.max_failures,
                                              fail_fast=spec.fail_fast),
            checkpoint_config=_checkpoint_config()))
    out = _finish(_fit_and_sign(tuner, exp_dir, runtime), spec, runtime, storage, callbacks)
    out.optuna_study, out.optuna_storage = sweep_id, shown_url(url)
    return out


def rdb_storage(url: str) -> Any:
    """Optuna's RDB storage at ``url`` (a sqlite file's folder is created)."""
    import optuna

    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not a line per trial on stderr
    return optuna.storages.RDBStorage(url)


TUNE_LOGS = "tune_logs"  # in a sweep's runtime: its phases were given `tune_callbacks`' loggers


def tune_callbacks(callbacks: list[Any] | None) -> list[Any]:
    """A new phase's Tune callbacks: the caller's, then Tune's CSV and JSON result logs.

    Each trial folder keeps ``progress.csv`` and ``result.json`` (the results' metric
    histories are read from them), but no TensorBoard event file: MLflow records the curves,
    and Tune's TensorBoard logger cost the driver 2.4 ms of every result, which a trial waits
    for (function trainables report synchronously; `python -m benchmarks.sweep`). A new list:
    Tune appends to the one it is given.
    """
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    return [*(callbacks or []), CSVLoggerCallback(), JsonLoggerCallback()]


@contextlib.contextmanager
def _own_loggers(runtime: dict[str, Any]) -> Any:
    """While a sweep that was given `tune_callbacks` fits: Tune adds no logger of its own.

    ``TUNE_DISABLE_AUTO_CALLBACK_LOGGERS`` is how Ray is told, read when ``fit`` builds its
    callbacks (a restored phase's come from its pickled state), restored after. A sweep begun
    before `TUNE_LOGS` existed holds no loggers of its own: Tune's stay on for it.
    """
    key = "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"
    before = os.environ.get(key)
    if runtime.get(TUNE_LOGS):
        os.environ[key] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def _fit_and_sign(tuner: Any, exp_dir: Storage, runtime: dict[str, Any]) -> Any:
    """``tuner.fit()``, then sign the folder Ray left, however the fit ended.

    A resume checks that signature (`flowtopo.sweep.integrity`) before Ray unpickles anything.
    """
    from flowtopo.sweep.integrity import sign_folder

    try:
        with warnings.catch_warnings(), _own_loggers(runtime):
            # a trial retried from a mid-training checkpoint reports the epochs after it
            # again; Optuna keeps the first value of each step and warns for each repeat
            warnings.filterwarnings("ignore", message="The reported value is ignored because")
            return tuner.fit()
    finally:
        sign_folder(exp_dir)


def read_sweep(path: str | Path | Storage) -> tuple[SweepSpec, dict[str, Any]]:
    """The spec and context of the sweep in its Ray Tune folder, its signature checked.

    Raises:
        InputError: the folder is not a flowtopo sweep, or its state is not exactly as this
            user's flowtopo signed it (`flowtopo.sweep.integrity.verify_folder`).

    """
    import json

    from flowtopo.errors import InputError
    from flowtopo.sweep.integrity import verify_folder

    p = path if isinstance(path, Storage) else open_storage(path)
    if not p.is_file(CONTEXT_FILE):
        raise InputError(f"{p.uri}: not a flowtopo sweep folder (no {CONTEXT_FILE})")
    verify_folder(p)  # before Ray unpickles tuner.pkl, the searcher state and params.pkl
    ctx = json.loads(p.read_text(CONTEXT_FILE))
    return SweepSpec.model_validate(ctx["spec"]), ctx


def resume_sweep(path: str | Path, *, address: str | None = None,
                 callbacks: list[Any] | None = None) -> SweepResult:
    """Continue an interrupted sweep from its Ray Tune folder (``STORAGE/SWEEP_ID``).

    Finished trials are not rerun (``Tuner.restore``). A trial cut off mid-way goes on from
    its last mid-training checkpoint (``checkpoint_every``) in the same MLflow run, which is
    marked KILLED until then; one cut off before its first checkpoint restarts in a new run.

    ``callbacks`` serve a seeds phase started here. A restored phase runs the callbacks its
    sweep was started with: Tune pickles them with the experiment and restores them, and takes
    no new ones (`flowtopo.sweep.progress.RichProgress` reattaches to the caller's display).

    Raises:
        InputError: the folder is not a flowtopo sweep, or its state is not exactly as this
            user's flowtopo signed it (`flowtopo.sweep.integrity.verify_folder`): nothing in it
            is unpickled then.

    """
    from ray import tune

    from flowtopo.tracking import mlflow_client, run_lifecycle

    p = open_storage(path)
    spec, ctx = read_sweep(p)
    runtime = ctx["runtime"]
    if ctx.get("finished"):  # resuming a sweep that ended changes nothing
        done = ctx["finished"]
        return SweepResult(runtime["sweep_id"], spec.mlflow.experiment, runtime["tracking_uri"],
                           p.uri, runtime["parent_run_id"], done["trials"], done["failed"],
                           already_finished=True)
    client = mlflow_client(runtime["tracking_uri"])
    with run_lifecycle(client, runtime["parent_run_id"], finish=False):  # FAILED on a failure
        _close_orphans(client, runtime, "interrupted; the trial restarts on resume")
        init_ray(address or spec.ray_address, runtime["tracking_uri"])
        _check_resources(spec, address)
        if ctx.get("phase") == "seeds":  # the search had ended (its summary is in the context)
            out = _finish(None, spec, runtime, ctx["storage"], callbacks, search=ctx["search"])
        else:  # the searcher, restored with Ray's state, goes on with the same Optuna study
            tuner = tune.Tuner.restore(p.uri, trainable=trainable_for(spec, runtime),
                                       resume_unfinished=True, resume_errored=False)
            out = _finish(_fit_and_sign(tuner, p, runtime), spec, runtime, ctx["storage"],
                          callbacks)
    out.optuna_study, out.optuna_storage = runtime["sweep_id"], ctx.get("optuna_storage", "")
    return out


def _close_orphans(client: Any, runtime: dict[str, Any], why: str) -> None:
    """Close trial runs of this sweep left RUNNING (a stopped trial's thread was cut off).

    Each gets the ``best_*`` summaries of the epochs it logged, as a trial that closed its own
    run after a scheduler's stop does (`priors best` ranks by them).
    """
    from flowtopo.sweep.trainable import close_stopped
    from flowtopo.train_job import SUMMARY_KEYS

    stale = client.search_runs(
        [runtime["experiment_id"]],
        filter_string=f"tags.sweep_id = '{runtime['sweep_id']}' and attributes.status = "
                      "'RUNNING' and tags.`flowtopo.kind` = 'trial'")
    for r in stale:
        rid = r.info.run_id
        history: dict[int, dict[str, float]] = {}
        for key in SUMMARY_KEYS:
            for m in client.get_metric_history(rid, key):
                history.setdefault(int(m.step), {})[key] = float(m.value)
        close_stopped(client, rid, [history[e] for e in sorted(history)], why)


def interrupted(results: Any, expected: int, fail_fast: bool = False) -> bool:
    """True when the phase was stopped before its end (Ctrl-C, SIGINT, SIGUSR1).

    Stopped when some trial neither finished nor failed, or when fewer than ``expected``
    trials exist: a stop that lands after one trial ended and before the searcher created
    the next leaves only complete trials behind (with reused workers the gap is a fraction of
    a second), and the phase must still be resumed, not summed up as done. Under
    ``fail_fast`` a failed trial ends the phase early on purpose: then the missing trials
    are not a stop.

    A trial finished when its last result says ``done`` or is the trial's final report (it
    names the MLflow run, or the user's error). The final report is checked too because Ray,
    keeping only the latest checkpoints (`_checkpoint_config`), may restore a finished trial
    with the result of its last checkpoint, where ``done`` is not yet set.
    """
    results = list(results)
    if any(r.error is None and not _complete(r.metrics or {}) for r in results):
        return True
    failed = any(failure_line(r) is not None for r in results)
    return len(results) < expected and not (fail_fast and failed)


def _complete(metrics: dict[str, Any]) -> bool:
    return bool(metrics.get("done")) or "mlflow_run_id" in metrics or USER_ERROR in metrics


def _finish(results: Any, spec: SweepSpec, runtime: dict[str, Any], storage: str,
            callbacks: list[Any] | None, search: dict[str, Any] | None = None) -> SweepResult:
    """Seeds phase and the sweep summary, unless the search was interrupted.

    The seeds phase is interruptible like the search: when it begins, the search's summary is
    written in the sweep's context (so a resume never unpickles the search again); its own
    Ray Tune folder (``STORAGE/SWEEP_ID-seeds``) is signed when it stops; given ``search``
    (that summary, on a resume) it is restored instead of started again.
    """
    from flowtopo.tracking import mlflow_client

    sweep_id = runtime["sweep_id"]
    exp_dir = open_storage(storage).child(sweep_id)
    client = mlflow_client(runtime["tracking_uri"])
    out = SweepResult(sweep_id, spec.mlflow.experiment, runtime["tracking_uri"], exp_dir.uri,
                      runtime["parent_run_id"])
    resume_seeds = search is not None
    if search is None:  # the search phase has just stopped
        search = _search_summary(results, spec, runtime, client, out)
        if out.interrupted:
            return out
    else:
        out.trials, out.failed, out.user_errors = (search["trials"], search["failed"],
                                                   search["user_errors"])
        out.failures, out.best = list(search["failures"]), dict(search["best"])
    if spec.seeds > 1 and search["families"]:
        _update_context(exp_dir, phase="seeds", search=search)
        seed_results = _seeds_phase(spec, runtime, storage, callbacks, search["families"],
                                    resume=resume_seeds)
        out.trials += len(seed_results)
        _count_failures(out, seed_results)
        if interrupted(seed_results, len(search["families"]) * (spec.seeds - 1)):
            out.interrupted = True
            return out
    _close_parent(client, spec, runtime["parent_run_id"], exp_dir, out)
    return out


def _search_summary(results: Any, spec: SweepSpec, runtime: dict[str, Any], client: Any,
                    out: SweepResult) -> dict[str, Any]:
    """Count the search's trials into ``out`` and summarise it (JSON: kept in the context).

    Sets ``out.interrupted`` when the search was stopped (then nothing else is done);
    otherwise closes the runs a scheduler cut off and finds the best trial.
    """
    from flowtopo.sweep.space import trial_budget

    out.trials = len(results)
    _count_failures(out, results)
    if interrupted(results, trial_budget(spec), spec.fail_fast):
        out.interrupted = True
        return {}
    _close_orphans(client, runtime, "by the scheduler (its run was closed when the sweep "
                                    "finished)")
    if out.failed < out.trials:
        out.best = _best_result(results, spec, runtime, client)
    return {"trials": out.trials, "failed": out.failed, "failures": out.failures,
            "user_errors": out.user_errors, "best": out.best,
            "families": _best_per_family(results, spec)}


def _seeds_phase(spec: SweepSpec, runtime: dict[str, Any], storage: str,
                 callbacks: list[Any] | None, families: dict[str, dict[str, Any]],
                 resume: bool) -> Any:
    """Retrain each family's best configuration with seeds 1..seeds-1; return Tune's results.

    On a resume whose seeds phase had begun, its signed Ray Tune folder is restored.
    """
    from ray import tune

    sweep_id = runtime["sweep_id"]
    seeds_dir = open_storage(storage).child(f"{sweep_id}-seeds")
    seeds_runtime = {**runtime, "phase": "seeds"}
    if resume and seeds_dir.is_file("tuner.pkl"):
        from flowtopo.sweep.integrity import verify_folder

        verify_folder(seeds_dir)  # before Ray unpickles anything in it
        replica = tune.Tuner.restore(seeds_dir.uri,
                                     trainable=_unpack_trainable(spec, seeds_runtime),
                                     resume_unfinished=True, resume_errored=False)
    else:
        configs = [{**params, "seed": s} for params in families.values()
                   for s in range(1, spec.seeds)]
        replica = tune.Tuner(
            _unpack_trainable(spec, seeds_runtime),
            param_space={"cfg": tune.grid_search(configs)},
            tune_config=tune.TuneConfig(max_concurrent_trials=spec.max_concurrent_trials,
                                        trial_name_creator=trial_name,
                                        trial_dirname_creator=trial_name,
                                        reuse_actors=True),
            run_config=tune.RunConfig(
                name=f"{sweep_id}-seeds", storage_path=storage, verbose=0,
                callbacks=tune_callbacks(callbacks),
                failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                checkpoint_config=_checkpoint_config()))
    return _fit_and_sign(replica, seeds_dir, runtime)


def _close_parent(client: Any, spec: SweepSpec, pid: str, exp_dir: Storage,
                  out: SweepResult) -> None:
    """Close the parent run of a sweep that ended, and mark its context so.

    Its totals go on the parent run, FINISHED (FAILED with an ``error`` tag when no trial
    finished); a later resume then does nothing.
    """
    for key, v in (("trials", out.trials), ("failed_trials", out.failed)):
        client.log_metric(pid, key, v)
    if out.best.get("value") is not None:
        client.log_metric(pid, f"best_{spec.metric}", float(out.best["value"]))
    _mark_finished(exp_dir, out)
    if out.all_failed:
        client.set_tag(pid, "error", f"no trial finished; {out.failed} failed, e.g. "
                                     f"{out.failures[0] if out.failures else '?'}"[:4000])
        client.set_terminated(pid, "FAILED")
    else:
        client.set_terminated(pid, "FINISHED")


def _best_result(results: Any, spec: SweepSpec, runtime: dict[str, Any],
                 client: Any) -> dict[str, Any]:
    """The search's best trial on ``spec.metric`` at its best epoch, and its MLflow run.

    Ray Tune's ``scope="all"``: every epoch a trial reported counts, as in ``flowtopo priors
    best`` (whose ``best_*`` metrics are each run's best epoch); the default scope, the last
    report, named another family than ``priors best`` when a trial's final epoch was worse than
    its best.
    """
    import math

    try:
        b = results.get_best_result(metric=spec.metric, mode=spec.mode, scope="all",
                                    filter_nan_and_inf=True)
    except RuntimeError:  # no trial reported a finite metric
        return {}
    history = b.metrics_dataframe
    values = ([float(v) for v in history[spec.metric] if math.isfinite(float(v))]
              if history is not None and spec.metric in history else [])
    value = (min(values) if spec.mode == "min" else max(values)) if values else b.metrics.get(
        spec.metric)
    run_id = b.metrics.get("mlflow_run_id")
    if run_id is None:  # stopped early: no final report; find its run by trial id
        found = client.search_runs([runtime["experiment_id"]], filter_string=(
            f"tags.sweep_id = '{runtime['sweep_id']}' and tags.trial_id = "
            f"'{b.metrics.get('trial_id')}'"))
        run_id = found[0].info.run_id if found else None
    return {"metric": spec.metric, "value": value,
            "config": {k: v for k, v in b.config.items() if k not in ("runtime",)},
            "mlflow_run_id": run_id}


def _update_context(exp_dir: Storage, **fields: Any) -> None:
    """Set ``fields`` in the sweep's context file and sign the folder again."""
    import json

    from flowtopo.sweep.integrity import sign_folder

    ctx = json.loads(exp_dir.read_text(CONTEXT_FILE))
    ctx.update(fields)
    exp_dir.write_text(CONTEXT_FILE, json.dumps(ctx, indent=2, default=str))
    sign_folder(exp_dir)


def _mark_finished(exp_dir: Storage, out: SweepResult) -> None:
    """Record in the sweep's context that it ended: a later resume does nothing."""
    _update_context(exp_dir, finished={"trials": out.trials, "failed": out.failed})


def _count_failures(out: SweepResult, results: Any) -> None:
    """Add the failed trials of ``results`` to ``out`` (count, one line each, their kind)."""
    for r in results:
        line = failure_line(r)
        if line is not None:
            out.failed += 1
            out.failures.append(line)
            out.user_errors += USER_ERROR in (r.metrics or {})


def _best_per_family(results: Any, spec: SweepSpec) -> dict[str, dict[str, Any]]:
    """Family -> Optuna parameters of its best finished trial."""
    best: dict[str, tuple[float, dict[str, Any]]] = {}
    sign = 1.0 if spec.mode == "min" else -1.0
    for r in results:
        if r.error is not None or not r.metrics or spec.metric not in r.metrics \
                or USER_ERROR in r.metrics:
            continue
        params = {k: v for k, v in r.config.items() if k not in RESERVED}
        fam = params.get("prior")
        value = sign * float(r.metrics[spec.metric])
        if fam is not None and (fam not in best or value < best[fam][0]):
            best[fam] = (value, params)
    return {f: p for f, (_, p) in best.items()}


def _unpack_trainable(spec: SweepSpec, runtime: dict[str, Any]) -> Any:
    """Phase-2 trainable: the grid value ``cfg`` is a trial config (parameters and seed)."""
    from ray import tune

    bound = tune.with_parameters(unpack_and_train, sweep=spec.model_dump(mode="json"),
                                 runtime=runtime)
    return tune.with_resources(bound, spec.resources.for_tune())


def unpack_and_train(config: dict[str, Any], sweep: dict[str, Any],
                     runtime: dict[str, Any]) -> None:
    """Train the configuration held in ``config["cfg"]`` (module level: picklable)."""
    from flowtopo.sweep.trainable import train_trial

    train_trial(config["cfg"], sweep, runtime)
