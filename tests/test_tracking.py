"""MLflow glue: several processes opening one fresh sqlite store at once all succeed."""

import contextlib
import subprocess
import sys

import pytest


def test_processes_opening_a_fresh_sqlite_store_at_once_do_not_race(tmp_path):
    # Measured without the lock: 10 of 12 such processes failed on MLflow's schema migrations
    # (alembic "expected to match one row", "duplicate column"). The processes import MLflow
    # first, then open the store together on a signal: the window the lock closes is hit on
    # each try, not only when imports happen to finish together (with the lock removed, this
    # test failed 4 of 4 tries; 9 s, against 21 s for the earlier two rounds of 4).
    import time

    uri = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"
    go = tmp_path / "go"
    code = "\n".join([
        "import pathlib, sys, time",
        "from flowtopo.tracking import ensure_experiment",
        "import mlflow.store.tracking.sqlalchemy_store",
        "pathlib.Path(sys.argv[1]).touch()",
        f"while not pathlib.Path({str(go)!r}).exists():",
        "    time.sleep(0.005)",
        f"print(ensure_experiment({uri!r}, 'same'))"])
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / f"ready{i}")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(4)]
    deadline = time.time() + 120
    while (time.time() < deadline and any(p.poll() is None for p in procs)
           and len(list(tmp_path.glob("ready*"))) < len(procs)):
        time.sleep(0.05)
    go.touch()
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * len(procs), [err[-500:] for _, err in outs]
    assert len({out.strip() for out, _ in outs}) == 1  # one experiment, the same id


def _client(tmp_path):
    from flowtopo.tracking import ensure_experiment, mlflow_client

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return uri, mlflow_client(uri), ensure_experiment(uri, "life")


def _tiny_spec(tmp_path, uri, epochs):
    """A seconds-long `flowtopo train` spec recorded in the ``life`` experiment at ``uri``."""
    from flowtopo.train_spec import TrainSpec

    return TrainSpec.model_validate({
        "dataset": {"name": "hierarchical", "options": {"n": 300}},
        "model": {"k": 2, "flow": {"name": "coupling", "params": {"layers": 2}}},
        "train": {"epochs": epochs}, "out": str(tmp_path / "ckpt"),
        "mlflow": {"experiment": "life", "tracking_uri": uri}})


@pytest.mark.parametrize("raised,status", [(None, "FINISHED"), (RuntimeError("boom"), "FAILED"),
                                           (KeyboardInterrupt(), "KILLED")])
def test_a_run_ends_finished_failed_or_killed_never_running(tmp_path, raised, status):
    from flowtopo.tracking import run_lifecycle

    _, client, exp = _client(tmp_path)
    rid = client.create_run(exp).info.run_id
    with contextlib.suppress(RuntimeError, KeyboardInterrupt), run_lifecycle(client, rid):
        if raised is not None:
            raise raised
    run = client.get_run(rid)
    assert run.info.status == status
    assert ("error" in run.data.tags) == (status == "FAILED")
    rid = client.create_run(exp).info.run_id
    with run_lifecycle(client, rid, finish=False):
        pass
    assert client.get_run(rid).info.status == "RUNNING"  # the caller decides (a resumable sweep)


def test_a_training_run_whose_checkpoint_save_fails_is_failed(tmp_path, monkeypatch):
    import flowtopo.train_job as train_job

    uri, client, exp = _client(tmp_path)

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(train_job, "save_checkpoint", broken_save)
    spec = _tiny_spec(tmp_path, uri, epochs=1)
    with pytest.raises(OSError, match="disk full"):
        train_job.run_train_spec(spec)
    (run,) = client.search_runs([exp])
    assert run.info.status == "FAILED" and "disk full" in run.data.tags["error"]


def test_a_sweep_that_breaks_before_its_trials_leaves_its_parent_failed(tmp_path, monkeypatch):
    import yaml

    import flowtopo.sweep.runner as runner
    from flowtopo.sweep.spec import SweepSpec

    uri, client, exp = _client(tmp_path)

    def no_ray(*args, **kwargs):
        raise ConnectionError("no Ray at that address")

    monkeypatch.setattr(runner, "init_ray", no_ray)
    raw = yaml.safe_load(open("sweeps/quickstart.yaml"))
    spec = SweepSpec.model_validate({**raw, "mlflow": {"experiment": "life",
                                                       "tracking_uri": uri}})
    with pytest.raises(ConnectionError):
        runner.run_sweep(spec, storage_path=tmp_path / "ray")
    (parent,) = client.search_runs([exp])
    assert parent.info.status == "FAILED" and "no Ray" in parent.data.tags["error"]


def test_a_run_carries_its_provenance_and_its_config_without_runtime_paths(tmp_path):
    import re

    import flowtopo
    from flowtopo.train_job import run_train_spec

    uri, client, exp = _client(tmp_path)
    spec = _tiny_spec(tmp_path, uri, epochs=1)
    run_train_spec(spec)
    (run,) = client.search_runs([exp])
    assert run.data.tags["flowtopo.version"] == flowtopo.__version__
    assert re.fullmatch(r"[0-9a-f]{40}", run.data.tags["flowtopo.git_commit"])  # a checkout
    assert run.data.params["train.epochs"] == "1" and run.data.params["model.k"] == "2"
    assert not {"out", "mlflow"} & set(run.data.params)


def test_git_is_asked_for_the_commit_once_per_process(monkeypatch):
    import subprocess

    from flowtopo import tracking

    calls = []
    real = subprocess.run

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(subprocess, "run", counting)
    tracking._git_commit.cache_clear()
    first = tracking.provenance_tags()
    assert tracking.provenance_tags() == first and len(calls) == 1
    tracking._git_commit.cache_clear()


@pytest.mark.parametrize("args,message", [
    ([], "no MLflow store at"),  # a read command creates nothing
    (["--tracking-uri", "foo://x"], "unknown scheme 'foo'"),
    (["--tracking-uri", "http://127.0.0.1:9"], "cannot reach the MLflow server at"),
])
def test_a_read_command_on_a_missing_or_unreachable_store_is_one_line(tmp_path, monkeypatch,
                                                                      args, message):
    import time

    from typer.testing import CliRunner

    from flowtopo.cli import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    start = time.monotonic()
    res = CliRunner().invoke(app, ["priors", "best", "--experiment", "x", *args])
    assert res.exit_code == 2 and message in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1
    assert time.monotonic() - start < 30  # not MLflow's minutes of retries
    assert list(tmp_path.iterdir()) == []  # nothing created


def test_metric_buffer_writes_several_epochs_a_request_and_everything_at_flush(tmp_path):
    from flowtopo.tracking import MAX_BATCH, MetricBuffer

    _, client, exp = _client(tmp_path)
    rid = client.create_run(exp).info.run_id
    calls = []
    real = client.log_batch
    client.log_batch = lambda *a, **k: calls.append(len(k["metrics"])) or real(*a, **k)
    held = MetricBuffer(client, rid, flush_s=3600)  # nothing written before the flush
    for epoch in range(1, 6):
        held.log({"loss": 1.0 / epoch, "acc": 0.1 * epoch}, epoch)
    assert calls == [] and client.get_metric_history(rid, "loss") == []
    held.flush()
    assert calls == [10]
    assert [(m.step, m.value) for m in client.get_metric_history(rid, "loss")] == [
        (e, 1.0 / e) for e in range(1, 6)]
    held.flush()  # nothing queued: no request
    assert calls == [10]
    eager = MetricBuffer(client, rid, flush_s=0.0)  # every epoch at once
    eager.log({"loss": 0.5}, 6)
    assert calls == [10, 1]
    big = MetricBuffer(client, rid, flush_s=3600)  # over MLflow's batch limit: split
    big.log({f"m{i}": float(i) for i in range(MAX_BATCH + 5)}, 1)
    big.flush()
    assert calls == [10, 1, MAX_BATCH, 5]


def test_a_training_run_that_fails_keeps_the_epochs_it_trained(tmp_path, monkeypatch):
    import flowtopo.train_job as train_job

    uri, client, exp = _client(tmp_path)
    real_train = train_job.train

    def breaks_after_two_epochs(*args, on_epoch, **kwargs):
        def count(epoch, metrics):
            on_epoch(epoch, metrics)
            if epoch == 2:
                raise RuntimeError("node lost")
        return real_train(*args, on_epoch=count, **kwargs)

    monkeypatch.setattr(train_job, "train", breaks_after_two_epochs)
    spec = _tiny_spec(tmp_path, uri, epochs=5)
    with pytest.raises(RuntimeError, match="node lost"):
        train_job.run_train_spec(spec)
    (run,) = client.search_runs([exp])
    assert run.info.status == "FAILED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "epoch")] == [1, 2]
