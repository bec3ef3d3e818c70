"""A real Ray head (`ray start --head`), the Jobs API and its token authentication."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A Ray head on loopback with its own temp dir; stopped by killing only its processes."""
    tmp = tmp_path_factory.mktemp("rayhead")
    temp_dir = Path("/tmp") / f"rayjobs-{os.getpid()}"  # short: Ray's socket paths are limited
    port, dash = free_port(), free_port()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    ray = str(Path(sys.executable).parent / "ray")
    ports = {name: free_port() for name in (
        "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "node-manager-port",
        "object-manager-port", "metrics-export-port", "runtime-env-agent-port",
        "ray-client-server-port")}
    subprocess.run([ray, "start", "--head", f"--port={port}", f"--dashboard-port={dash}",
                    "--dashboard-host=127.0.0.1", "--node-ip-address=127.0.0.1",
                    "--disable-usage-stats", "--num-cpus=2", f"--temp-dir={temp_dir}",
                    *(f"--{k}={v}" for k, v in ports.items())],
                   check=True, env=env, capture_output=True, timeout=180)
    yield {"address": f"http://127.0.0.1:{dash}", "tmp": tmp}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if str(temp_dir).encode() in (proc / "cmdline").read_bytes():
                os.kill(int(proc.name), signal.SIGKILL)
        except (OSError, ValueError):
            pass


def test_submit_status_logs_through_the_jobs_api(head):
    from flowtopo.sweep import jobs

    tmp = head["tmp"]
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    sweep = {"name": "jobs", "dataset": {"name": "hierarchical", "options": {"n": 400}},
             "model": {"k": 2, "flow": {"name": "coupling", "params": {"layers": 2}}},
             "search": {"priors": {"gaussian": {}}, "batch_size": [128]},
             "train": {"epochs": 2}, "seeds": 1, "num_samples": 1,
             "mlflow": {"experiment": "jobs"}}
    path = tmp / "jobs.yaml"
    path.write_text(yaml.safe_dump(sweep))
    job_id = jobs.submit(path, head["address"], tracking_uri=uri, storage=str(tmp / "ray"))
    assert job_id.startswith("flowtopo-jobs-")
    deadline = time.time() + 400
    state = jobs.status(job_id, head["address"])
    while state in ("PENDING", "RUNNING") and time.time() < deadline:
        time.sleep(2)
        state = jobs.status(job_id, head["address"])
    assert state == "SUCCEEDED", jobs.logs(job_id, head["address"])[-3000:]
    assert "trials (search + seeds)" in jobs.logs(job_id, head["address"])
    res = subprocess.run([sys.executable, "-m", "flowtopo.cli", "sweep", "status", job_id,
                          "--address", head["address"], "--json"], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0 and json.loads(res.stdout) == {"job_id": job_id,
                                                              "status": "SUCCEEDED"}
    followed = subprocess.run([sys.executable, "-m", "flowtopo.cli", "sweep", "logs", job_id,
                               "--address", head["address"], "--follow"], capture_output=True,
                              text=True, timeout=120)  # a finished job: all of it, then it ends
    assert followed.returncode == 0 and "trials (search + seeds)" in followed.stdout
    import mlflow

    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("jobs").experiment_id])
    assert any(r.data.tags.get("flowtopo.kind") == "trial" and r.info.status == "FINISHED"
               for r in runs)


def test_a_wrong_or_missing_token_is_refused(head):
    """A user without the token, or with a wrong one: a separate process, as in real life
    (Ray caches the token inside a process that has called ray.init)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["HOME"] = str(head["tmp"])  # no ~/.ray/auth_token there
    for extra in ([], ["--token", "wrong-token"]):
        res = subprocess.run([sys.executable, "-m", "flowtopo.cli", "sweep", "status", "x",
                              "--address", head["address"], *extra], capture_output=True,
                             text=True, timeout=120, env=env)
        assert res.returncode == 2, res.stdout + res.stderr
        assert "refused" in res.stderr and "RAY_AUTH_TOKEN" in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1


def test_cli_status_of_an_unknown_job_is_one_line(head):
    res = subprocess.run([sys.executable, "-m", "flowtopo.cli", "sweep", "status", "nope",
                          "--address", head["address"]], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    # the address from RAY_ADDRESS, as Ray's own job CLI reads it: the same answer
    env = {**os.environ, "RAY_ADDRESS": head["address"]}
    again = subprocess.run([sys.executable, "-m", "flowtopo.cli", "sweep", "status", "nope"],
                           capture_output=True, text=True, timeout=120, env=env)
    assert again.returncode == 2 and again.stderr == res.stderr


def test_stop_a_running_sweep_job(head):
    from flowtopo.sweep import jobs

    tmp = head["tmp"]
    sweep = {"name": "long", "dataset": {"name": "hierarchical", "options": {"n": 2000}},
             "model": {"k": 2}, "search": {"priors": {"gaussian": {}}},
             "train": {"epochs": 500, "patience": 500}, "seeds": 1, "num_samples": 4,
             "mlflow": {"experiment": "long"}}
    path = tmp / "long.yaml"
    path.write_text(yaml.safe_dump(sweep))
    uri = f"sqlite:///{tmp / 'long.db'}"
    job_id = jobs.submit(path, head["address"], tracking_uri=uri, storage=str(tmp / "ray2"))
    deadline = time.time() + 300
    while jobs.status(job_id, head["address"]) != "RUNNING" and time.time() < deadline:
        time.sleep(1)
    assert jobs.stop(job_id, head["address"]) is True
    while jobs.status(job_id, head["address"]) == "RUNNING" and time.time() < deadline:
        time.sleep(1)
    assert jobs.status(job_id, head["address"]) == "STOPPED"


def test_submit_sends_no_credentials_and_grants_the_job_user_the_experiment(monkeypatch):
    """Ray writes a job's environment to its logs and shows it through the Jobs API: no
    password goes there. The job user is granted EDIT on the sweep's experiment instead;
    an Optuna storage URL with a password is refused (it belongs in the nodes' environment)."""
    from flowtopo import mlflow_auth, tracking
    from flowtopo.errors import InputError
    from flowtopo.sweep import jobs

    seen, granted = {}, []

    class Fake:
        def submit_job(self, **kw):
            seen.update(kw)
            return kw["submission_id"]

    monkeypatch.setattr(jobs, "client", lambda address, token: Fake())
    monkeypatch.setattr(tracking, "ensure_experiment", lambda uri, name: f"id-of-{name}")
    monkeypatch.setattr(mlflow_auth, "grant_job_user",
                        lambda uri, exp, user: granted.append((uri, exp, user)))
    monkeypatch.setenv("FLOWTOPO_OPTUNA_STORAGE", "postgresql://u@db/optuna")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "secret")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "tok")
    monkeypatch.setenv("UNRELATED_SECRET", "x")
    monkeypatch.setenv("FLOWTOPO_MLFLOW_JOB_USER", "flowtopo-jobs")
    sid = jobs.submit(Path("sweeps/quickstart.yaml"), "http://127.0.0.1:1",
                      tracking_uri="http://127.0.0.1:5000")
    env = seen["runtime_env"]["env_vars"]
    assert sid.startswith("flowtopo-")
    assert env == {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000", "RAY_JOB_STOP_SIGNAL": "SIGINT",
                   "RAY_JOB_STOP_WAIT_TIME_S": "120",
                   "FLOWTOPO_OPTUNA_STORAGE": "postgresql://u@db/optuna"}
    assert "secret" not in repr(seen) and "tok" not in repr(seen.get("runtime_env"))
    assert granted == [("http://127.0.0.1:5000", "id-of-quickstart", "flowtopo-jobs")]
    # a password in a URL the job would carry: refused before anything is submitted
    seen.clear()
    monkeypatch.setenv("FLOWTOPO_OPTUNA_STORAGE", "postgresql://u:pw@db/optuna")
    with pytest.raises(InputError, match="FLOWTOPO_OPTUNA_STORAGE holds a password"):
        jobs.submit(Path("sweeps/quickstart.yaml"), "http://127.0.0.1:1",
                    tracking_uri="http://127.0.0.1:5000")
    monkeypatch.delenv("FLOWTOPO_OPTUNA_STORAGE")
    with pytest.raises(InputError, match="the tracking URI holds a password"):
        jobs.submit(Path("sweeps/quickstart.yaml"), "http://127.0.0.1:1",
                    tracking_uri="http://bob:pw@127.0.0.1:5000")
    assert seen == {}


def test_a_node_takes_its_mlflow_user_from_a_file_only_its_owner_reads(tmp_path, monkeypatch):
    from flowtopo.errors import InputError
    from flowtopo.mlflow_auth import load_credentials, write_credentials

    path = tmp_path / "cred"
    write_credentials(path, "flowtopo-jobs", "pw-123")
    assert path.stat().st_mode & 0o777 == 0o600
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.setenv("FLOWTOPO_MLFLOW_CREDENTIALS", str(path))
    assert load_credentials() == "flowtopo-jobs"
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "pw-123"
    # credentials already in the environment win (a user's shell is unchanged)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "mine")
    assert load_credentials() is None and os.environ["MLFLOW_TRACKING_PASSWORD"] == "mine"
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    path.chmod(0o644)
    with pytest.raises(InputError, match="readable or writable by others"):
        load_credentials()
    path.chmod(0o600)
    path.write_text("[other]\nx = 1\n")
    with pytest.raises(InputError, match="not an MLflow credentials file"):
        load_credentials()
    monkeypatch.setenv("FLOWTOPO_MLFLOW_CREDENTIALS", str(tmp_path / "missing"))
    with pytest.raises(InputError, match="cannot read it"):
        load_credentials()


@pytest.mark.parametrize("uri, message", [
    ("sqlite:///x.db", "a job user lives on an MLflow server"),
    ("http://127.0.0.1:1", "cannot reach the MLflow server at http://127.0.0.1:1"),
])
def test_job_user_without_a_server_is_one_line_and_exit_2(tmp_path, uri, message):
    res = subprocess.run([sys.executable, "-m", "flowtopo.cli", "sweep", "job-user", "--out",
                          str(tmp_path / "cred"), "--tracking-uri", uri], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 2 and message in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "cred").exists()
