import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from flowtopo.sweep.space import sample_configs
from flowtopo.sweep.spec import SweepSpec
from flowtopo.yaml_io import load_spec

SWEEPS = sorted(Path("sweeps").glob("*.yaml"))


def test_the_shipped_sweeps_are_there():
    assert {p.name for p in SWEEPS} >= {"quickstart.yaml", "digits.yaml", "synthetic-tree.yaml",
                                        "mnist-gpu.yaml", "gpu-smoke.yaml"}


def test_a_gpu_sweep_asks_ray_for_gpus_and_trains_its_trials_on_cuda(tmp_path, monkeypatch):
    import optuna
    from ray import tune

    from flowtopo.sweep.runner import trainable_for
    from flowtopo.sweep.space import define_space, resolve

    gpu = load_spec(Path("sweeps/mnist-gpu.yaml"), SweepSpec)
    cpu = load_spec(Path("sweeps/quickstart.yaml"), SweepSpec)
    assert gpu.resources.for_tune() == {"cpu": 4, "gpu": 0.5} and gpu.resources.device == "cuda"
    assert cpu.resources.for_tune()["gpu"] == 0 and cpu.resources.device == "cpu"
    # what Ray is asked for, per trial
    asked, bound = [], []
    monkeypatch.setattr(tune, "with_resources", lambda fn, res: asked.append(res) or fn)
    monkeypatch.setattr(tune, "with_parameters", lambda fn, **kw: bound.append(kw) or fn)
    trainable_for(gpu, {"phase": "search"})
    assert asked == [{"cpu": 4, "gpu": 0.5}]
    # the spec and runtime are bound to the trainable, not put in each trial's config
    assert bound == [{"sweep": gpu.model_dump(mode="json"), "runtime": {"phase": "search"}}]
    # what each trial is told to train on (params as Optuna hands them to the trainable)
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    define_space(trial, gpu.model_dump(mode="json"))
    ts = resolve(trial.params, gpu, 0, str(tmp_path / "ckpt"), gpu.resources.device)
    assert ts.train.device == "cuda" and ts.model.prior.name in gpu.search.priors


@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_shipped_sweeps_validate_and_sample(path):
    spec = load_spec(path, SweepSpec)
    configs = sample_configs(spec, 5, seed=1)
    assert len(configs) == 5
    for cfg in configs:
        assert cfg["prior"]["name"] in spec.search.priors
        assert spec.search.lr[0] <= cfg["lr"] <= spec.search.lr[1]
        assert cfg["batch_size"] in spec.search.batch_size


def test_validate_prints_sampled_configurations(cli):
    res = cli("sweep", "validate", "sweeps/quickstart.yaml", "--samples", "2")
    assert res.returncode == 0
    assert "valid" in res.stdout and res.stdout.count("sample ") == 2


BASE = yaml.safe_load(Path("sweeps/quickstart.yaml").read_text())


def mutate(path, value):
    doc = yaml.safe_load(yaml.safe_dump(BASE))
    node = doc
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return yaml.safe_dump(doc)


MALFORMED = {
    "unknown-top-key": (mutate(("colour",), "red"), "colour: unknown key"),
    "missing-name": (mutate(("name",), KeyError), "name: Field required"),
    "bad-name": (mutate(("name",), "has space"), "name: String should match"),
    "wrong-type": (mutate(("num_samples",), "many"), "num_samples: Input should be a valid"),
    "negative": (mutate(("num_samples",), 0), "num_samples: Input should be greater"),
    "unknown-family": (mutate(("search", "priors"), {"wishart": {}}),
                       "unknown prior family 'wishart'"),
    "no-family": (mutate(("search", "priors"), {}), "at least one prior family"),
    "bad-lr": (mutate(("search", "lr"), [0.1, 0.01]), "lr must be"),
    "bad-sampler": (mutate(("sampler",), "cmaes"), "sampler: Input should be"),
    "bad-metric": (mutate(("metric",), "accuracy"), "metric: Input should be"),
    "raw-c2st": (mutate(("metric",), "val_c2st"), "rewards values below chance; use "
                 "val_c2st_gap"),
    "train-lr": (mutate(("train", "lr"), 0.1), "set by the sweep"),
    "train-device": (mutate(("train", "device"), "cuda"), "device are set by the sweep"),
    "train-unknown": (mutate(("train", "epochz"), 3), "epochz"),
    "bad-gpu": (mutate(("resources", "gpu"), -1), "resources.gpu"),
    "not-a-mapping": ("- a\n- b\n", "expected a mapping"),
    "bad-yaml": ("name: [unclosed\n", "invalid YAML"),
    "python-tag": ("name: !!python/object/apply:os.system ['echo hi']\n", "invalid YAML"),
    # specs that validated, then failed in every trial: now refused before Ray starts
    "unknown-dataset": (mutate(("dataset", "name"), "nosuch"), "unknown dataset 'nosuch'"),
    "dataset-option": (mutate(("dataset", "options"), {"n": 600, "colour": 1}),
                       "unknown option(s) colour"),
    "k-above-dim": (mutate(("model", "k"), 9), "need 1 <= k <= D, got k=9, D=6"),
    "flow-param": (mutate(("model", "flow"), {"name": "coupling", "params": {"colour": 1}}),
                   "bad parameters: unknown 'colour'"),
    "batch-size-0": (mutate(("search", "batch_size"), [0]),
                     "batch_size: Input should be greater than or equal to 2"),
    "narrowing-typo": (mutate(("search", "priors"), {"gmm": {"nosuch": [1, 2]}}),
                       "search.priors.gmm: unknown key 'nosuch'"),
    "one-bad-flow-choice": (mutate(("search", "flow"), {"activation": ["tanh", "bogus"]}),
                            "unknown activation 'bogus'"),
    "one-bad-batch-size": (mutate(("search", "batch_size"), [128, 1]),
                           "Input should be greater than or equal to 2"),
    "optuna-password": (mutate(("optuna",), {"storage": "postgresql://u:hunter2@db/optuna"}),
                        "holds a password"),
    "optuna-backend": (mutate(("optuna",), {"storage": "mongodb://db/optuna"}),
                       "'mongodb': Optuna storage is sqlite, postgresql or mysql"),
    "optuna-not-a-url": (mutate(("optuna",), {"storage": "optuna.db"}),
                         "is not a database URL"),
    "optuna-startup": (mutate(("optuna",), {"n_startup_trials": 0}),
                       "optuna.n_startup_trials"),
    "optuna-unknown": (mutate(("optuna",), {"study": "x"}), "optuna.study"),
}


def test_optuna_storage_and_startup_follow_the_yaml_the_environment_and_the_store(
        tmp_path, monkeypatch):
    from flowtopo.sweep.runner import make_sampler, optuna_storage_url, shown_url

    base = yaml.safe_load(Path("sweeps/quickstart.yaml").read_text())
    spec = SweepSpec.model_validate({**base, "num_samples": 8})
    monkeypatch.delenv("FLOWTOPO_OPTUNA_STORAGE", raising=False)
    # beside a sqlite MLflow store, else under ./flowtopo-runs
    db = tmp_path / "runs" / "mlflow.db"
    assert optuna_storage_url(spec, f"sqlite:///{db}") == f"sqlite:///{db.parent / 'optuna.db'}"
    monkeypatch.chdir(tmp_path)
    assert optuna_storage_url(spec, "http://127.0.0.1:5000") == (
        f"sqlite:///{tmp_path.resolve() / 'flowtopo-runs' / 'optuna.db'}")
    given = SweepSpec.model_validate({**base, "optuna": {"storage": "postgresql://u@db/o",
                                                         "n_startup_trials": 3}})
    assert optuna_storage_url(given, f"sqlite:///{db}") == "postgresql://u@db/o"
    secret = "postgresql://u:hunter2@db/o"
    monkeypatch.setenv("FLOWTOPO_OPTUNA_STORAGE", secret)  # wins, and is never shown
    assert optuna_storage_url(given, f"sqlite:///{db}") == secret
    assert "hunter2" not in shown_url(secret) and "db/o" in shown_url(secret)
    # TPE models after a quarter of an 8-trial sweep (Optuna's default 10 = all random)
    assert make_sampler(spec)._n_startup_trials == 2
    assert make_sampler(given)._n_startup_trials == 3
    big = SweepSpec.model_validate({**base, "num_samples": 400})
    assert make_sampler(big)._n_startup_trials == 10


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_sweeps_give_one_line_and_exit_2(tmp_path, case, cli):
    text, message = MALFORMED[case]
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    res = cli("sweep", "validate", str(path))
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr
    assert message in lines[0] and str(path) in lines[0]


def test_errors_name_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(mutate(("num_samples",), "many"))
    with pytest.raises(ValueError, match=r"line \d+: num_samples"):
        load_spec(path, SweepSpec)


TINY = {
    "name": "tiny",
    "dataset": {"name": "hierarchical", "options": {"n": 600}},
    "model": {"k": 2, "noise_std": 0.5,
              "flow": {"name": "coupling", "params": {"layers": 2, "hidden": 16}}},
    "search": {"priors": {"gmm": {"components": [2, 4]}, "gaussian": {}},
               "lr": [0.001, 0.003], "batch_size": [128]},
    "regularizer": "mle",
    "train": {"epochs": 3},
    "seeds": 2,
    "num_samples": 4,
    "max_concurrent_trials": 2,
    "max_failures": 0,
    "sampler": "random",
}


@pytest.fixture(scope="module")
def ray_local():
    import ray

    yield
    ray.shutdown()


def runs_of(uri, experiment):
    import mlflow

    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return client, client.search_runs([exp.experiment_id], max_results=1000)


@pytest.mark.integration
def test_a_real_sweep_records_every_trial_in_mlflow(tmp_path, ray_local, cli):
    import json

    from flowtopo.checkpoint import load_checkpoint
    from flowtopo.sweep.runner import run_sweep

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = SweepSpec.model_validate({**TINY, "mlflow": {"experiment": "t1", "tracking_uri": uri}})
    res = run_sweep(spec, storage_path=tmp_path / "ray")
    client, runs = runs_of(uri, "t1")
    search = [r for r in runs if r.data.tags.get("phase") == "search"]
    seeds = [r for r in runs if r.data.tags.get("phase") == "seeds"]
    parent = [r for r in runs if r.data.tags.get("flowtopo.kind") == "sweep"]
    assert len(search) == 4 and all(r.info.status == "FINISHED" for r in search)
    families = {r.data.tags["family"] for r in search}
    assert families <= {"gmm", "gaussian"}
    assert len(seeds) == len(families) and all(r.data.tags["seed"] == "1" for r in seeds)
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    assert all(r.data.tags["sweep_id"] == res.sweep_id for r in runs)
    assert all(r.data.tags["mlflow.parentRunId"] == parent[0].info.run_id for r in search)
    for r in search:
        hist = client.get_metric_history(r.info.run_id, "adv_d_loss")
        assert [m.step for m in hist] == [1, 2, 3]
        assert {"best_adv_loss", "best_nll", "final_c2st"} <= set(r.data.metrics)
        local = client.download_artifacts(r.info.run_id, "checkpoint", str(tmp_path / "dl"))
        assert load_checkpoint(local).model.k == 2
        assert r.data.params["optuna.prior"] == r.data.tags["family"]
        # where the trial's time went: its own work, and what it waited on the engines for,
        # both inside its run's span (the rest: opening the run, recording the result)
        train_s, report_s = r.data.metrics["trial_train_s"], r.data.metrics["trial_report_s"]
        assert train_s > 0 and report_s > 0
        assert train_s + report_s < (r.info.end_time - r.info.start_time) / 1e3
    assert res.trials == 4 + len(seeds) and res.failed == 0
    # trial folders and runs are named by family and seed; configs hold only what was searched
    folders = [d for d in (tmp_path / "ray" / res.sweep_id).iterdir() if d.is_dir()]
    assert len(folders) == 4
    for d in folders:
        config = json.loads((d / "params.json").read_text())
        assert d.name.startswith(f"{config['prior']}-s0-")
        assert set(config) <= {"prior", "lr", "batch_size", "seed"} | {
            k for k in config if k.startswith(config["prior"] + ".")}
        assert (d / "result.json").stat().st_size < 40_000  # 3 epochs, no spec in each line
        # Tune's CSV and JSON logs, no TensorBoard event file (each cost every report 2.4 ms)
        assert (d / "progress.csv").is_file() and not list(d.glob("events.out.tfevents*"))
    seeds_folders = [d for d in (tmp_path / "ray" / f"{res.sweep_id}-seeds").iterdir()
                     if d.is_dir()]
    assert len(seeds_folders) == len(seeds)
    assert all((d / "result.json").is_file() and not list(d.glob("events.out.tfevents*"))
               for d in seeds_folders)
    for r in search:
        assert r.info.run_name.startswith(f"{r.data.tags['family']}-s0-")
        assert not {"out", "mlflow"} & set(r.data.params)
        assert {"flowtopo.version", "flowtopo.git_commit"} <= set(r.data.tags)
        # a trial runs on the threads of the CPUs it was given (1 by default), and says so
        assert r.data.tags["torch_threads"] == str(spec.resources.threads) == "1"
    # trial actors are reused: 4 trials, 2 at a time, in 2 worker processes (not one each: a
    # fresh worker re-imports torch and MLflow, ~4 s a trial; benchmarks/sweep.py)
    assert len({r.data.tags["worker_pid"] for r in search}) == 2
    for r in seeds:
        assert r.info.run_name.startswith(f"{r.data.tags['family']}-s1-")
    # the Optuna study persists beside the MLflow store, named after the sweep
    import optuna

    assert parent[0].data.tags["optuna_study"] == res.sweep_id == res.optuna_study
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    assert parent[0].data.tags["optuna_storage"] == res.optuna_storage == storage
    study = optuna.load_study(study_name=res.sweep_id, storage=storage)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 4 and len(study.trials) == 4
    told = []  # what each trial reported last: the metric at its kept (best) epoch
    for r in search:
        hist = client.get_metric_history(r.info.run_id, "val_adv_loss")
        told += [m.value for m in hist if m.step == int(r.data.metrics["best_epoch"])]
    assert sorted(t.value for t in complete) == pytest.approx(sorted(told), rel=1e-6)
    assert set(optuna.importance.get_param_importances(study)) >= {"lr"}
    token = Path.home() / ".ray" / "auth_token"  # Ray 2.60 writes it 0644: flowtopo tightens it
    assert token.stat().st_mode & 0o777 == 0o600

    # priors best: the table/JSON agree with the recorded runs
    from flowtopo.pipeline.best import best_priors

    rows = best_priors("t1", tracking_uri=uri, top=10)
    trials = [r for r in runs if r.data.tags.get("flowtopo.kind") == "trial"]
    for fam in families:
        mine = sorted(r.data.metrics["best_adv_loss"] for r in trials
                      if r.data.tags["family"] == fam)
        got = [row["best_adv_loss"] for row in rows if row["group"] == fam]
        assert got == mine
    out = cli("priors", "best", "--experiment", "t1", "--tracking-uri", uri, "--json", "--top",
              "10")
    assert out.returncode == 0
    assert [r["run_id"] for r in json.loads(out.stdout)] == [r["run_id"] for r in rows]


@pytest.mark.integration
def test_a_failing_trial_is_recorded_and_the_sweep_goes_on(tmp_path, ray_local):
    from flowtopo.sweep.runner import run_sweep

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    bad = {**TINY, "seeds": 1, "search": {**TINY["search"], "flow": {
        "activation": ["tanh", "bogus"]}}, "mlflow": {"experiment": "t2", "tracking_uri": uri}}
    res = run_sweep(SweepSpec.model_validate(bad), storage_path=tmp_path / "ray")
    _, runs = runs_of(uri, "t2")
    trials = [r for r in runs if r.data.tags.get("flowtopo.kind") == "trial"]
    failed = [r for r in trials if r.info.status == "FAILED"]
    finished = [r for r in trials if r.info.status == "FINISHED"]
    assert len(trials) == 4 and failed and finished
    assert res.failed == len(failed)
    for r in failed:
        assert "unknown activation 'bogus'" in r.data.tags["error"]
        assert r.data.params.get("optuna.flow.activation") == "bogus"


@pytest.mark.integration
def test_sweep_run_cli_end_to_end(tmp_path, ray_local, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, "num_samples": 2, "seeds": 1, "mlflow": {
        "experiment": "cli", "tracking_uri": f"sqlite:///{tmp_path / 'm.db'}"}}))
    res = cli("sweep", "run", str(path), "--storage", str(tmp_path / "ray"))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "trials (search + seeds)" in res.stdout and "best val_adv_loss" in res.stdout
    _, runs = runs_of(f"sqlite:///{tmp_path / 'm.db'}", "cli")
    assert sum(r.data.tags.get("flowtopo.kind") == "trial" for r in runs) == 2


@pytest.mark.integration
def test_a_sweep_where_every_trial_fails_says_so_and_retries_no_user_error(tmp_path, ray_local):
    # Through the library: `sweep run` would refuse this spec before Ray (check_trials); a
    # trial can still meet bad input that only exists where it runs (a path on a worker).
    from flowtopo.sweep.runner import run_sweep

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    bad = {**TINY, "num_samples": 2, "max_failures": 2,  # a user error is never retried
           "search": {**TINY["search"], "flow": {"activation": ["bogus"]}},
           "mlflow": {"experiment": "allbad", "tracking_uri": uri}}
    res = run_sweep(SweepSpec.model_validate(bad), storage_path=tmp_path / "ray")
    assert res.all_failed and res.user_errors_only and res.failed == res.trials == 2
    assert len(res.failures) == 2
    assert all("unknown activation 'bogus'" in line for line in res.failures)
    _, runs = runs_of(uri, "allbad")
    trials = [r for r in runs if r.data.tags.get("flowtopo.kind") == "trial"]
    (parent,) = [r for r in runs if r.data.tags.get("flowtopo.kind") == "sweep"]
    assert len(trials) == 2 and all(r.info.status == "FAILED" for r in trials)  # no retries
    assert parent.info.status == "FAILED" and "no trial finished" in parent.data.tags["error"]


@pytest.mark.parametrize("user_errors,code", [(2, 2), (1, 1)])
def test_sweep_run_exits_non_zero_with_a_line_per_failed_trial(tmp_path, monkeypatch,
                                                                user_errors, code):
    import flowtopo.sweep.runner as runner
    from flowtopo.cli import app

    def all_failed(spec, **kwargs):
        return runner.SweepResult("s-1", "e", "sqlite:///x", str(tmp_path), "p", trials=2,
                                  failed=2, user_errors=user_errors,
                                  failures=["t1: bad input here", "t2: CUDA out of memory"])

    monkeypatch.setattr(runner, "run_sweep", all_failed)
    res = CliRunner().invoke(app, ["sweep", "run", "sweeps/quickstart.yaml"])
    assert res.exit_code == code
    assert "failed trial t1: bad input here" in res.output
    assert "failed trial t2: CUDA out of memory" in res.output
    assert "error: no trial of sweep s-1 finished (2 failed)" in res.output


@pytest.mark.parametrize("failed,code", [(0, 0), (2, 2)])
def test_sweep_run_json_is_one_object_on_stdout(tmp_path, monkeypatch, failed, code):
    import json

    import flowtopo.sweep.runner as runner
    from flowtopo.cli import app

    def done(spec, **kwargs):
        return runner.SweepResult(
            "s-1", "e", "sqlite:///x", str(tmp_path), "p", trials=2, failed=failed,
            user_errors=failed, failures=["t1: bad", "t2: bad"][:failed],
            best={"metric": "val_adv_loss", "value": 0.69, "config": {"prior": "gmm"},
                  "mlflow_run_id": "r1"} if not failed else {})

    monkeypatch.setattr(runner, "run_sweep", done)
    res = CliRunner().invoke(app, ["sweep", "run", "sweeps/quickstart.yaml", "--json"])
    assert res.exit_code == code
    out = json.loads(res.stdout)  # stdout holds the JSON and nothing else
    assert out["sweep_id"] == "s-1" and out["trials"] == 2 and out["failed"] == failed
    if failed:
        assert out["best"] is None and out["failures"] == ["t1: bad", "t2: bad"]
        assert "failed trial t1: bad" in res.stderr
    else:
        assert out["best"] == {"metric": "val_adv_loss", "value": 0.69, "family": "gmm",
                               "run_id": "r1"}


def trial_runs(uri, experiment, status=None):
    """The trial runs of ``experiment`` (with ``status`` only, when given); [] before any."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return [r for r in client.search_runs([exp.experiment_id], max_results=1000)
            if r.data.tags.get("flowtopo.kind") == "trial"
            and (status is None or r.info.status == status)]


def finished_trials(uri, experiment):
    return trial_runs(uri, experiment, "FINISHED")


@pytest.mark.integration
def test_a_sweep_stopped_in_its_seeds_phase_resumes_it(tmp_path, ray_local, cli, monkeypatch):
    import signal
    import time

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    path = tmp_path / "tiny.yaml"
    # 5 seed trials: with reused workers one follows another at once, so a SIGINT sent when
    # the first finishes must still find some to stop
    path.write_text(yaml.safe_dump({**TINY, "num_samples": 1, "seeds": 6,
                                    "max_concurrent_trials": 1, "train": {"epochs": 12},
                                    "mlflow": {"experiment": "seedstop", "tracking_uri": uri}}))
    # the storage as a file:// URI (the form a cluster's shared storage takes)
    proc = subprocess.Popen([sys.executable, "-m", "flowtopo.cli", "sweep", "run", str(path),
                             "--storage", f"file://{tmp_path / 'ray'}"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def seed_runs(status=None):
        return [r for r in trial_runs(uri, "seedstop") if r.data.tags.get("phase") == "seeds"
                and (status is None or r.info.status == status)]

    deadline = time.time() + 300
    while time.time() < deadline and not seed_runs("FINISHED"):
        time.sleep(0.5)
    assert seed_runs("FINISHED"), "no seed trial finished before the deadline"
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 130, out[-2000:]
    assert "flowtopo sweep resume" in out
    before = {r.data.tags["seed"] for r in seed_runs("FINISHED")}
    assert 1 <= len(before) < 5, "the seeds phase ended before it could be stopped"
    _, runs = runs_of(uri, "seedstop")
    (parent,) = [r for r in runs if r.data.tags.get("flowtopo.kind") == "sweep"]
    assert parent.info.status == "RUNNING"  # not a finished sweep
    (sweep_dir,) = [p.parent for p in (tmp_path / "ray").glob("*/flowtopo-sweep.json")]
    monkeypatch.chdir(tmp_path)
    res = cli("sweep", "resume", sweep_dir)  # in this process: its local Ray (ray_local)
    assert res.returncode == 0, res.stdout[-1500:] + res.stderr[-1500:]
    seeds = [r.data.tags["seed"] for r in seed_runs("FINISHED")]
    assert sorted(seeds) == ["1", "2", "3", "4", "5"]  # every seed finished exactly once
    assert not seed_runs("RUNNING")
    search = [r for r in trial_runs(uri, "seedstop") if r.data.tags.get("phase") == "search"]
    assert len(search) == 1  # the search was not rerun
    _, runs = runs_of(uri, "seedstop")
    (parent,) = [r for r in runs if r.data.tags.get("flowtopo.kind") == "sweep"]
    assert parent.info.status == "FINISHED"



@pytest.mark.parametrize("before", [None, "0"])
def test_tune_adds_no_logger_of_its_own_to_a_sweep_that_brought_its_own(monkeypatch, before):
    """Only while a sweep begun with `tune_callbacks` fits; the environment is restored after.

    A sweep begun before (no flag in its runtime) keeps Tune's loggers: it has none of its own.
    """
    import os

    from flowtopo.sweep.runner import TUNE_LOGS, _own_loggers, tune_callbacks

    key = "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"
    if before is None:
        monkeypatch.delenv(key, raising=False)
    else:
        monkeypatch.setenv(key, before)
    with _own_loggers({TUNE_LOGS: "csv+json"}):
        assert os.environ[key] == "1"
    assert os.environ.get(key) == before
    with _own_loggers({"phase": "search"}):
        assert os.environ.get(key) == before
    given = [object()]
    loggers = tune_callbacks(given)
    assert loggers[0] is given[0] and len(given) == 1
    assert [type(c).__name__ for c in loggers[1:]] == ["CSVLoggerCallback", "JsonLoggerCallback"]


def test_a_stop_between_two_trials_is_a_stop_not_the_end_of_the_search():
    """All returned trials complete, fewer than the budget: the search was cut off."""
    from types import SimpleNamespace as R

    from flowtopo.sweep.runner import interrupted

    done = R(error=None, metrics={"done": True}, path="t1")
    running = R(error=None, metrics={"nll": 1.0}, path="t2")
    failed = R(error=RuntimeError("boom"), metrics={}, path="t3")
    assert interrupted([done, done], 4)  # the 3rd was never created: stopped
    assert interrupted([done, running], 2)  # one cut off mid-way
    assert not interrupted([done, done], 2)
    assert not interrupted([done, failed], 2)
    # fail_fast ends the search at its first failure on purpose
    assert not interrupted([done, failed], 4, fail_fast=True)
    assert interrupted([done, done], 4, fail_fast=True)


def stop_at_first_trial(marker, times):
    """A Tune callback that sends this process a SIGINT (Ctrl-C) when a trial ends: the stop
    lands in the gap between two trials, deterministically. ``times`` times in all, once per
    process: Tune pickles its callbacks with the experiment and a resume (here, in another
    process) brings this one back, so ``marker`` (a file) counts the stops sent."""
    import os
    import signal

    from ray.tune import Callback

    class Stop(Callback):
        def on_trial_complete(self, iteration, trials, trial, **info):
            sent = marker.read_text().split() if marker.exists() else []
            if len(sent) < times and str(os.getpid()) not in sent:
                marker.write_text(" ".join([*sent, str(os.getpid())]))
                os.kill(os.getpid(), signal.SIGINT)

    return Stop()


@pytest.mark.integration
def test_a_sweep_stopped_between_two_trials_is_resumed_not_summed_up(tmp_path, ray_local, cli,
                                                                     monkeypatch):
    import json

    import mlflow

    from flowtopo.sweep.progress import RichProgress
    from flowtopo.sweep.runner import run_sweep

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    spec = SweepSpec.model_validate({**TINY, "seeds": 1, "max_concurrent_trials": 1,
                                     "mlflow": {"experiment": "gap", "tracking_uri": uri}})
    # stopped as the 1st trial ends, then as the 1st trial of the resume ends; the progress
    # callback (no display here) is restored by the resume onto the CLI's bar
    res = run_sweep(spec, storage_path=tmp_path / "ray",
                    callbacks=[stop_at_first_trial(tmp_path / "stops", 2), RichProgress(None)])
    first = {r.data.tags["trial_id"] for r in finished_trials(uri, "gap")}
    assert res.interrupted and len(first) == 1, (res, first)
    client = mlflow.MlflowClient(uri)
    assert client.get_run(res.parent_run_id).info.status == "RUNNING"  # not FINISHED on 1 of 4

    def resume(*extra):
        return subprocess.run([sys.executable, "-m", "flowtopo.cli", "sweep", "resume",
                               res.storage_path, *extra], cwd=tmp_path, capture_output=True,
                              text=True, timeout=600)

    # stopped again, as `sweep run` would end: in a process of its own, as the restored
    # callback sends its SIGINT to the process it runs in
    stopped = resume("--json")
    assert stopped.returncode == 130, stopped.stdout[-1500:] + stopped.stderr[-1500:]
    assert json.loads(stopped.stdout)["interrupted"] is True
    assert f"flowtopo sweep resume {res.storage_path}" in stopped.stderr
    second = {r.data.tags["trial_id"] for r in finished_trials(uri, "gap")}
    assert len(second) == 2 and first < second
    monkeypatch.chdir(tmp_path)
    done = cli("sweep", "resume", res.storage_path)  # the callback has sent its 2 stops
    assert done.returncode == 0, done.stdout[-1500:] + done.stderr[-1500:]
    assert "trials (search + seeds)" in done.stdout  # the summary table
    # the bar counted the 2 trials this resume ran, through the restored callback
    bar = [ln for ln in done.stdout.splitlines() if ln.startswith("resume tiny")]
    assert bar and "best val_adv_loss 0." in bar[-1] and "failed 0" in bar[-1], done.stdout
    ids = [r.data.tags["trial_id"] for r in finished_trials(uri, "gap")]
    assert len(ids) == len(set(ids)) == 4 and second <= set(ids)
    # the restored search kept its own CSV and JSON logs (pickled with it), and Tune added
    # no TensorBoard logger to it
    folders = [d for d in (tmp_path / "ray" / res.sweep_id).iterdir() if d.is_dir()]
    assert len(folders) == 4
    assert all((d / "progress.csv").is_file() and (d / "result.json").stat().st_size > 0
               and not list(d.glob("events.out.tfevents*")) for d in folders)
    assert client.get_run(res.parent_run_id).info.status == "FINISHED"
    # resuming the finished sweep again changes nothing, and says so
    again = cli("sweep", "resume", res.storage_path)
    assert again.returncode == 0 and "already finished" in again.stdout
    assert "nothing to resume" in again.stdout
    assert len(finished_trials(uri, "gap")) == 4
    # the resumed search went on with the same Optuna study: 4 trials, each told once
    import optuna

    study = optuna.load_study(study_name=res.optuna_study, storage=res.optuna_storage)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 4


@pytest.mark.integration
def test_a_trial_whose_worker_is_killed_resumes_from_its_checkpoint_in_the_same_run(tmp_path):
    """A spot node reclaimed mid-training: the retry goes on from the last checkpoint epoch,
    logging to the same MLflow run, without a gap or a repeated step."""
    import json
    import os
    import signal
    import time

    import mlflow

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    path = tmp_path / "spot.yaml"
    epochs = 60
    path.write_text(yaml.safe_dump({
        **TINY, "dataset": {"name": "hierarchical", "options": {"n": 3000}}, "num_samples": 1,
        "seeds": 1, "max_concurrent_trials": 1, "max_failures": 2, "checkpoint_every": 5,
        "train": {"epochs": epochs, "patience": 1000},
        "mlflow": {"experiment": "spot", "tracking_uri": uri}}))
    proc = subprocess.Popen([sys.executable, "-m", "flowtopo.cli", "sweep", "run", str(path),
                             "--storage", str(tmp_path / "ray"), "--json"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed_at, deadline = None, time.time() + 300
    while killed_at is None and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        runs = trial_runs(uri, "spot", "RUNNING")
        if not runs:
            continue
        client = mlflow.MlflowClient(uri)
        steps = [m.step for m in client.get_metric_history(runs[0].info.run_id, "epoch")]
        if steps and max(steps) >= 7:  # past the first checkpoint (epoch 5)
            os.kill(int(runs[0].data.tags["worker_pid"]), signal.SIGKILL)
            killed_at = max(steps)
    assert killed_at is not None, "the trial finished before its worker could be killed"
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    summary = json.loads(out)  # Ray's own tables after the trial error went to stderr
    assert summary["failed"] == 0
    runs = trial_runs(uri, "spot", None)
    assert len(runs) == 1, [r.info.status for r in runs]  # one run, not one per attempt
    (run,) = runs
    assert run.info.status == "FINISHED" and "error" not in run.data.tags
    resumed = int(run.data.tags["resumed_from_epoch"])
    assert resumed % 5 == 0 and 5 <= resumed <= killed_at
    client = mlflow.MlflowClient(uri)
    for key in ("epoch", "val_nll", "adv_d_loss"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert steps == list(range(1, epochs + 1)), key  # contiguous, each step once
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"checkpoint"}


@pytest.mark.integration
@pytest.mark.parametrize(("resources", "need"), [({"gpu": 1}, "cpu=1, gpu=1"),
                                                  ({"cpu": 512}, "cpu=512, gpu=0")])
def test_a_trial_no_node_can_hold_fails_the_sweep_at_once_in_one_line(tmp_path, resources,
                                                                       need, ray_local, cli,
                                                                       monkeypatch):
    """Main hung forever (parent RUNNING) when no node could ever place a trial."""
    import time

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump({**TINY, "resources": resources, "seeds": 1,
                                    "mlflow": {"experiment": "big", "tracking_uri": uri}}))
    monkeypatch.chdir(tmp_path)
    t0 = time.monotonic()
    res = cli("sweep", "run", str(path), "--storage", str(tmp_path / "ray"), "--json")
    assert res.returncode == 2, res.stderr[-2000:]
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error")]
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert f"a trial needs {need} on one node" in lines[0]
    assert "the local Ray has no such node" in lines[0]
    assert time.monotonic() - t0 < 120  # refused, not waited on
    import mlflow

    client = mlflow.MlflowClient(uri)
    (parent,) = client.search_runs([client.get_experiment_by_name("big").experiment_id])
    assert parent.info.status == "FAILED" and "a trial needs" in parent.data.tags["error"]
    assert res.stdout == ""  # no summary: nothing ran


@pytest.fixture()
def s3_server(monkeypatch):
    """A real S3 API on loopback (moto's server mode), a bucket, and the AWS environment that
    points pyarrow, Ray and boto3 at it."""
    import logging
    import socket

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_REGION": "us-east-1"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="sweeps")
    yield s3
    server.stop()


@pytest.mark.integration
def test_a_sweep_keeps_an_s3_storage_uri_end_to_end(tmp_path, s3_server, cli):
    """--storage s3://... stays a URI: Ray's state, checkpoints, the context and the signature
    land in the bucket (a real S3 API), and resume reads and verifies them there."""
    import json

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({**TINY, "num_samples": 2, "seeds": 1,
                                    "mlflow": {"experiment": "s3", "tracking_uri": uri}}))
    run = subprocess.run([sys.executable, "-m", "flowtopo.cli", "sweep", "run", str(path),
                          "--storage", "s3://sweeps/flowtopo", "--json"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads(run.stdout)
    assert summary["storage_path"] == f"s3://sweeps/flowtopo/{summary['sweep_id']}"
    assert summary["failed"] == 0 and summary["trials"] == 2
    assert not (tmp_path / "s3:").exists()  # main made it a local folder named "s3:"
    assert not (tmp_path / "flowtopo-runs" / "ray").exists()
    keys = [o["Key"] for o in s3_server.list_objects_v2(
        Bucket="sweeps", Prefix=f"flowtopo/{summary['sweep_id']}/")["Contents"]]
    names = {k.rsplit("/", 1)[-1] for k in keys}
    assert {"flowtopo-sweep.json", "flowtopo-sweep.sig", "tuner.pkl"} <= names
    assert sum(k.endswith("/result.json") for k in keys) == 2  # each trial's results
    assert not [k for k in keys if "events.out.tfevents" in k]  # no TensorBoard uploads
    context = json.loads(s3_server.get_object(
        Bucket="sweeps", Key=f"flowtopo/{summary['sweep_id']}/flowtopo-sweep.json")["Body"].read())
    assert context["storage"] == "s3://sweeps/flowtopo" and context["finished"]["trials"] == 2
    # resume reads the context and checks the signature through the same layer
    again = cli("sweep", "resume", summary["storage_path"])
    assert again.returncode == 0 and "already finished" in again.stdout, again.stderr[-2000:]
    # a file changed in the bucket is refused before anything is unpickled
    tuner = next(k for k in keys if k.endswith("/tuner.pkl"))
    s3_server.put_object(Bucket="sweeps", Key=tuner, Body=b"tampered")
    bad = cli("sweep", "resume", summary["storage_path"])
    assert bad.returncode == 2 and "changed since flowtopo signed it: tuner.pkl" in bad.stderr


@pytest.mark.integration
def test_asha_stops_trials_early_and_the_record_says_so(tmp_path, ray_local):
    from flowtopo.sweep.runner import run_sweep

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = SweepSpec.model_validate({
        **TINY, "seeds": 1, "num_samples": 6, "scheduler": "asha", "train": {"epochs": 10},
        "search": {**TINY["search"], "lr": [0.0001, 0.01]},
        "mlflow": {"experiment": "asha", "tracking_uri": uri}})
    res = run_sweep(spec, storage_path=tmp_path / "ray")
    client, runs = runs_of(uri, "asha")
    trials = [r for r in runs if r.data.tags.get("flowtopo.kind") == "trial"]
    assert len(trials) == 6 and res.failed == 0
    stopped = [r for r in trials if r.info.status == "KILLED"]
    done = [r for r in trials if r.info.status == "FINISHED"]
    assert stopped and done and len(stopped) + len(done) == 6
    for r in stopped:
        assert r.data.tags["stopped_early"].startswith("by the scheduler")
        assert len(client.get_metric_history(r.info.run_id, "val_nll")) < 10
        assert "best_adv_loss" in r.data.metrics
    for r in done:
        assert {a.path for a in client.list_artifacts(r.info.run_id)} >= {"checkpoint",
                                                                            "latent.png"}
    assert res.best["mlflow_run_id"] in {r.info.run_id for r in trials}
    # the sweep's best is the best EPOCH over all trials, as `priors best` ranks (best_*)
    assert res.best["value"] == pytest.approx(min(r.data.metrics["best_adv_loss"]
                                                  for r in trials), rel=1e-6)
    best_run = next(r for r in trials if r.info.run_id == res.best["mlflow_run_id"])
    assert best_run.data.metrics["best_adv_loss"] == pytest.approx(res.best["value"], rel=1e-6)


def test_the_grid_sampler_runs_to_the_end_of_its_grid_under_ask_and_tell():
    import warnings

    import optuna

    from flowtopo.sweep._grid import ExhaustiveGridSampler
    from flowtopo.sweep.runner import make_sampler
    from flowtopo.sweep.space import trial_budget

    spec = SweepSpec.model_validate({**TINY, "sampler": "grid", "search": {
        "priors": {"gmm": {"components": [2, 3], "spread": 3.0, "scale": 0.5}},
        "lr": [1e-3, 1e-3], "batch_size": [64]}})
    assert isinstance(make_sampler(spec), ExhaustiveGridSampler)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def ask_tell_all(sampler):  # as Ray's OptunaSearch drives a study: ask, tell, no optimize
        study = optuna.create_study(sampler=sampler)
        for _ in range(2):
            trial = study.ask()
            trial.suggest_categorical("components", [2, 3])
            study.tell(trial, 1.0)
        return study

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = ask_tell_all(ExhaustiveGridSampler(seed=0))
    assert sorted(t.params["components"] for t in study.trials) == [2, 3]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    # nothing stops the study at the grid's end under ask and tell: the budget does
    assert trial_budget(spec) == 2  # num_samples in TINY is larger than the grid
    assert trial_budget(spec.model_copy(update={"num_samples": 1})) == 1
    assert trial_budget(spec.model_copy(update={"sampler": "tpe"})) == spec.num_samples


def test_grid_sampler_needs_a_finite_space(tmp_path, cli):
    from flowtopo.errors import InputError
    from flowtopo.sweep.space import check_grid

    finite = SweepSpec.model_validate({**TINY, "sampler": "grid", "search": {
        "priors": {"gmm": {"components": [2, 3], "spread": 3.0, "scale": 0.5},
                   "gaussian": {"diagonal": False}},
        "lr": [0.003, 0.003], "batch_size": [128, 256]}})
    assert check_grid(finite) == (2 + 1) * 2  # gmm: 2 component counts; x 2 batch sizes
    infinite = SweepSpec.model_validate({**TINY, "sampler": "grid"})  # lr is a range
    with pytest.raises(InputError, match="grid needs a finite space"):
        check_grid(infinite)
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({**TINY, "sampler": "grid"}))
    res = cli("sweep", "validate", str(path))
    assert res.returncode == 2 and "grid needs a finite space" in res.stderr


@pytest.mark.parametrize("narrowing,sampled", [
    ({"components": [4, 8]}, lambda v: 4 <= v <= 8),  # a bare pair: a range, as documented
    ({"components": {"low": 4, "high": 8}}, lambda v: 4 <= v <= 8),
    ({"components": {"values": [4, 8, 16]}}, lambda v: v in (4, 8, 16)),
    ({"components": 12}, lambda v: v == 12),
])
def test_prior_narrowing_has_one_reading(narrowing, sampled):
    spec = SweepSpec.model_validate({**BASE, "search": {**BASE["search"],
                                                        "priors": {"gmm": narrowing}}})
    values = [c["prior"]["params"]["components"] for c in sample_configs(spec, 12)]
    assert all(sampled(v) for v in values), values
    if "values" in str(narrowing):
        assert 16 in values  # a choice beyond the first two is reachable


@pytest.mark.parametrize("narrowing,message", [
    ({"components": [4, 8, 16]}, "a list of 3 numbers is ambiguous: write {low: A, high: B} "
                                 "for a range or {values: [4, 8, 16]} for choices"),
    ({"components": {"low": 4}}, "write {low: A, high: B}"),
    ({"components": {"values": []}}, "values must be a non-empty list"),
    ({"spread": [1.0, float("inf")]}, "a range needs finite bounds with low <= high"),
    ({"spread": [3.0, 1.0]}, "a range needs finite bounds with low <= high"),
    ({"spread": {"low": "a", "high": 2}}, "range bounds must be numbers"),
])
def test_ambiguous_or_bad_narrowing_is_one_line(tmp_path, narrowing, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**BASE, "search": {**BASE["search"],
                                                       "priors": {"gmm": narrowing}}}))
    res = CliRunner().invoke(app_for_tests(), ["sweep", "validate", str(path)])
    assert res.exit_code == 2, res.output
    assert message in res.output and len(res.output.strip().splitlines()) == 1


@pytest.mark.parametrize("search,message", [
    ({"lr": [1e-3, float("inf")]}, "lr must be [low, high], finite"),
    ({"lr": [float("nan"), 1e-3]}, "lr must be [low, high], finite"),
    ({"batch_size": []}, "list at least one choice"),
    ({"flow": {"activation": []}}, "flow.activation: list at least one choice"),
])
def test_empty_choices_and_infinite_bounds_are_one_line(tmp_path, search, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**BASE, "search": {**BASE["search"], **search}}))
    res = CliRunner().invoke(app_for_tests(), ["sweep", "validate", str(path)])
    assert res.exit_code == 2, res.output
    assert message in res.output and len(res.output.strip().splitlines()) == 1


def app_for_tests():
    from flowtopo.cli import app

    return app


def test_training_weights_and_the_noise_scale_can_be_searched(tmp_path):
    import optuna

    from flowtopo.sweep.space import define_space, resolve

    model = {k: v for k, v in BASE["model"].items() if k != "noise_std"}  # searched below
    spec = SweepSpec.model_validate({**BASE, "model": model, "regularizer": "adversarial",
                                     "search": {
        **BASE["search"], "train": {"reg_weight": {"low": 0.1, "high": 2.0},
                                    "disc_lr": [1e-4, 1e-3],
                                    "recon_weight": {"values": [0.5, 2.0]}},
        "model": {"noise_std": [0.1, 1.0]}}})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        define_space(trial, spec.model_dump(mode="json"))
        ts = resolve(trial.params, spec, 0, str(tmp_path), "cpu")
        assert ts.train.reg_weight == trial.params["train.reg_weight"]
        assert 0.1 <= ts.train.reg_weight <= 2.0 and 1e-4 <= ts.train.disc_lr <= 1e-3
        assert ts.model.noise_std == trial.params["model.noise_std"]
        seen.add(ts.train.recon_weight)
        study.tell(trial, 0.0)
    assert seen == {0.5, 2.0}


@pytest.mark.parametrize("search,message", [
    ({"train": {"epochs": [1, 2]}}, "'epochs' cannot be searched; valid: reg_weight"),
    ({"train": {"reg_weight": None}}, "reg_weight: give a value"),
    ({"model": {"k": [2, 3]}}, "'k' cannot be searched; valid: noise_std"),
])
def test_what_cannot_be_searched_is_refused(search, message):
    with pytest.raises(ValueError, match=message):
        SweepSpec.model_validate({**BASE, "search": {**BASE["search"], **search}})


def test_a_weight_both_fixed_and_searched_is_refused():
    with pytest.raises(ValueError, match=r"train\.reg_weight is both fixed"):
        SweepSpec.model_validate({**BASE, "train": {**BASE["train"], "reg_weight": 1.0},
                                  "search": {**BASE["search"],
                                             "train": {"reg_weight": [0.5, 1.0]}}})


def test_a_cluster_is_given_time_to_add_a_node_that_fits(monkeypatch):
    """An autoscaling cluster may add GPU workers from zero: the sweep waits resources.wait_s
    for a node that can hold a trial, then fails in one line."""
    import ray

    from flowtopo.errors import InputError
    from flowtopo.runtime import wait_for_resources

    cpu_only = {"Alive": True, "Resources": {"CPU": 8.0}}
    gpu_node = {"Alive": True, "Resources": {"CPU": 8.0, "GPU": 1.0}}
    dead_gpu = {"Alive": False, "Resources": {"CPU": 8.0, "GPU": 4.0}}
    answers = iter([[cpu_only, dead_gpu], [cpu_only, dead_gpu], [cpu_only, gpu_node]])
    monkeypatch.setattr(ray, "nodes", lambda: next(answers))
    wait_for_resources({"cpu": 4, "gpu": 0.5}, wait_s=10, can_grow=True, poll_s=0.01)
    with pytest.raises(StopIteration):  # it asked until the third answer held a GPU node
        next(answers)
    monkeypatch.setattr(ray, "nodes", lambda: [cpu_only, dead_gpu])
    with pytest.raises(InputError, match=r"no node of the cluster appeared with them in 0.05 s "
                                         r"\(resources.wait_s\); the largest node offers "
                                         r"cpu=8, gpu=0"):
        wait_for_resources({"cpu": 4, "gpu": 0.5}, wait_s=0.05, can_grow=True, poll_s=0.01)


def test_a_trial_run_cut_off_by_a_stop_is_closed_with_its_summaries(tmp_path):
    """A trial a scheduler stopped whose thread was cut off before it closed its run: the
    sweep closes it KILLED with the best_* of the epochs it logged (CI saw one without them,
    so `priors best` could not rank it)."""
    from flowtopo.sweep.runner import _close_orphans
    from flowtopo.tracking import ensure_experiment, log_metrics, mlflow_client

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    client = mlflow_client(uri)
    exp = ensure_experiment(uri, "orph")
    rid = client.create_run(exp, tags={"sweep_id": "s1", "flowtopo.kind": "trial"}).info.run_id
    for epoch, (adv, nll) in enumerate([(0.9, 3.0), (0.7, 2.5), (0.8, 2.7)], 1):
        log_metrics(client, rid, {"val_adv_loss": adv, "val_nll": nll}, step=epoch)
    other = client.create_run(exp, tags={"sweep_id": "s2", "flowtopo.kind": "trial"})
    _close_orphans(client, {"experiment_id": exp, "sweep_id": "s1"}, "by the scheduler")
    run = client.get_run(rid)
    assert run.info.status == "KILLED" and run.data.tags["stopped_early"] == "by the scheduler"
    assert run.data.metrics["best_adv_loss"] == pytest.approx(0.7)
    assert run.data.metrics["best_nll"] == pytest.approx(2.5)
    assert client.get_run(other.info.run_id).info.status == "RUNNING"  # another sweep's


def test_a_trials_reporter_counts_the_seconds_the_training_waited_on_it(monkeypatch):
    """`trial_report_s` is the time spent in the per-epoch callback, however it ended; the
    training's own seconds are what is left (benchmarks/sweep.py reads both)."""
    import time

    from ray import tune

    from flowtopo.sweep.trainable import _Reporter

    class Client:  # a store whose every write takes 20 ms
        def log_batch(self, run_id, metrics=(), params=(), tags=()):
            time.sleep(0.02)

    def report(metrics, checkpoint=None):
        time.sleep(0.03)
        if metrics["epoch"] == 3:
            raise SystemExit  # a scheduler stopping the trial inside its report

    monkeypatch.setattr(tune, "report", report)
    rep = _Reporter(Client(), "r", 0, [])
    rep.curves.flush_s = 0.0  # every epoch's curves written at once
    stopped = []
    for epoch in (1, 2, 3):
        before, start = rep.seconds, time.perf_counter()
        try:
            rep.on_epoch(epoch, {"val_adv_loss": 0.5 / epoch})
        except SystemExit:
            stopped.append(epoch)
        # counted: at least what the write and the report slept, at most what the call took
        assert 0.05 <= rep.seconds - before <= time.perf_counter() - start
    assert stopped == [3] and len(rep.history) == 3
