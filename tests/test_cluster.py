"""cluster/local: a real Ray head + worker node + MLflow server (basic-auth) on loopback.

Sweeps go in through the Ray Jobs API, records are checked over MLflow's HTTP API, and the
cluster survives a worker node dying and the tracking server restarting mid-sweep.
"""

import base64
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def read_env(path):
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line.removeprefix("export ").partition("=")
            out[key] = value
    return out


def pids(state):
    return dict(line.split() for line in (state / "pids").read_text().splitlines() if line)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    state = tmp_path_factory.mktemp("cluster")
    password = secrets.token_urlsafe(16)
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "FLOWTOPO_CLUSTER_DIR":
           str(state), "MLFLOW_AUTH_ADMIN_PASSWORD": password, "PYTHON": sys.executable,
           # the fault test's waits, shortened (the faults and what must survive them are not):
           # the GCS asks each raylet every 1 s instead of 3 s (a killed node is declared dead
           # after 5 failed checks either way), and the MLflow clients of the job and its
           # trials back off 1, 2, 4 ... s instead of 2, 4, 8 ... s after the server went away
           "RAY_health_check_period_ms": "1000", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
    res = subprocess.run(["bash", str(ROOT / "cluster/local/start.sh")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    info = read_env(state / "env")
    user_env = {**env, **info, "MLFLOW_TRACKING_USERNAME": "admin",
                "MLFLOW_TRACKING_PASSWORD": password, "COLUMNS": "200"}
    user_env.pop("MLFLOW_AUTH_ADMIN_PASSWORD")
    yield {"state": state, "env": user_env, "start_env": env, "password": password,
           "jobs": info["FLOWTOPO_RAY_ADDRESS"], "mlflow": info["MLFLOW_TRACKING_URI"],
           "printed": res.stdout}
    stop = subprocess.run(["bash", str(ROOT / "cluster/local/stop.sh")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert stop.returncode == 0, stop.stderr
    time.sleep(1)
    temp_marker = str(state).encode()
    left = [p for p in Path("/proc").glob("[0-9]*") if _cmdline(p) and (
        temp_marker in _cmdline(p) and b"pytest" not in _cmdline(p))]
    assert left == [], "stop.sh left processes behind"


def _cmdline(proc):
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""


def flowtopo(cluster, *args, timeout=300):
    return subprocess.run([sys.executable, "-m", "flowtopo.cli", *args], env=cluster["env"],
                          capture_output=True, text=True, timeout=timeout)


def http(cluster, path, body=None, auth=True):
    req = urllib.request.Request(f"{cluster['mlflow']}{path}", method="POST" if body else "GET",
                                 data=json.dumps(body).encode() if body else None,
                                 headers={"Content-Type": "application/json"})
    if auth:
        cred = base64.b64encode(f"admin:{cluster['password']}".encode()).decode()
        req.add_header("Authorization", f"Basic {cred}")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"{}")


def sweep_yaml(tmp_path, name, **over):
    doc = {"name": name,
           "dataset": {"name": "hierarchical", "options": {
               "n": 1500, "dim": 6, "k": 2, "seed": 0, "shape": [[2, 1], [1, [1, 1]]]}},
           "model": {"k": 2, "noise_std": 0.5, "flow": {"name": "coupling", "params": {}}},
           "search": {"priors": {"gmm": {"components": 8, "spread": 3.0, "scale": 0.5}},
                      "lr": [0.003, 0.003], "batch_size": [256]},
           "regularizer": "mle", "train": {"epochs": 12}, "seeds": 2, "num_samples": 2,
           "max_concurrent_trials": 2, "sampler": "random", "max_failures": 0,
           "mlflow": {"experiment": name}, **over}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def submit(cluster, path):
    res = flowtopo(cluster, "sweep", "submit", str(path), "--address", cluster["jobs"],
                   "--tracking-uri", cluster["mlflow"], "--storage",
                   str(cluster["state"] / "tune"))
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def job_status(cluster, job):
    """The job's status straight from the Jobs API (what `flowtopo sweep status` prints)."""
    token = (cluster["state"] / "auth_token").read_text().strip()
    req = urllib.request.Request(f"{cluster['jobs']}/api/jobs/{job}",
                                 headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())["status"]


def wait(cluster, job, until=("SUCCEEDED", "FAILED", "STOPPED"), timeout=420):
    """Poll the Jobs API until the job is in ``until``; then `flowtopo sweep status` must say
    the same. (Polling through the CLI spawned a Python every 3 s: ~1 s of CPU each, taken
    from the trials on this 2-core machine.)"""
    deadline = time.time() + timeout
    state = ""
    while time.time() < deadline:
        state = job_status(cluster, job)
        if state in until:
            break
        time.sleep(2)
    if state in until:
        res = flowtopo(cluster, "sweep", "status", job, "--address", cluster["jobs"])
        assert res.stdout.strip() == state, res.stdout + res.stderr
    return state


def trial_runs(cluster, experiment):
    exp = http(cluster, f"/api/2.0/mlflow/experiments/get-by-name?experiment_name={experiment}")
    found = http(cluster, "/api/2.0/mlflow/runs/search", {
        "experiment_ids": [exp["experiment"]["experiment_id"]], "max_results": 1000,
        "filter": "tags.`flowtopo.kind` = 'trial'"})
    return found.get("runs", [])


def tags(run):
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def test_start_prints_how_to_submit(cluster):
    assert "flowtopo sweep submit" in cluster["printed"]
    assert cluster["jobs"].startswith("http://127.0.0.1:")
    assert (cluster["state"] / "auth_token").stat().st_mode & 0o077 == 0


def test_the_dashboard_and_the_tracking_server_listen_on_loopback_only(cluster):
    """Ray's Jobs API/dashboard and MLflow: 127.0.0.1 only. (Ray 2.60's GCS, raylets and
    agents listen on every interface whatever --node-ip-address says; token auth guards
    them: docs/cluster.md.)"""
    ports = {int(u.rsplit(":", 1)[1]) for u in (cluster["jobs"], cluster["mlflow"])}
    listening = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A":  # LISTEN
                addr, port = local.rsplit(":", 1)
                listening.setdefault(int(port, 16), set()).add(addr)
    for port in ports:
        assert port in listening, port
        assert listening[port] == {"0100007F"}, (port, listening[port])  # 127.0.0.1 only


def test_every_port_start_chose_is_one_the_kernel_never_hands_out(cluster):
    """Below the ephemeral range, distinct: a port the kernel gave out (bind to port 0) and
    start.sh let go was once taken by another Ray starting beside the cluster, and the worker
    node timed out starting (its dashboard agent: 'Address already in use')."""
    import re

    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    env = read_env(cluster["state"] / "env")
    chosen = {int(env[k].rsplit(":", 1)[1]) for k in ("FLOWTOPO_RAY_GCS", "FLOWTOPO_RAY_ADDRESS",
                                                      "MLFLOW_TRACKING_URI")}
    for name in ("ray-head", "ray-worker"):  # each node's own ports, from its `ray start`
        cmdline = (Path("/proc") / pids(cluster["state"])[name] / "cmdline").read_bytes()
        node = [int(p) for p in re.findall(rb"--[a-z-]+-port=(\d+)", cmdline)]
        assert len(node) == len(set(node)) >= 6, cmdline
        chosen |= set(node)
    # the GCS, the dashboard, MLflow, the Ray client server and each node's 6
    assert len(chosen) == 16 and all(1024 <= p < low for p in chosen), (low, sorted(chosen))


def test_mlflow_refuses_anonymous_writes(cluster):
    with pytest.raises(urllib.error.HTTPError) as err:
        http(cluster, "/api/2.0/mlflow/experiments/create", {"name": "anon"}, auth=False)
    assert err.value.code == 401
    assert "experiment_id" in http(cluster, "/api/2.0/mlflow/experiments/create",
                                   {"name": "authorised"})


def test_a_wrong_token_is_refused_by_the_jobs_api(cluster):
    env = {k: v for k, v in cluster["env"].items() if not k.startswith("RAY_AUTH")}
    env["HOME"] = str(cluster["state"])
    for extra in ([], ["--token", "not-the-token"]):
        res = subprocess.run([sys.executable, "-m", "flowtopo.cli", "sweep", "status", "x",
                              "--address", cluster["jobs"], *extra], env=env,
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 2 and "refused" in res.stderr


def test_only_an_admin_makes_a_job_user_whose_file_only_its_owner_reads(cluster, tmp_path):
    from flowtopo.mlflow_auth import read_credentials

    job_user, job_password = read_credentials(cluster["state"] / "mlflow-job-credentials")
    as_job = {**cluster["env"], "MLFLOW_TRACKING_USERNAME": job_user,
              "MLFLOW_TRACKING_PASSWORD": job_password}
    out = tmp_path / "cred"
    res = subprocess.run([sys.executable, "-m", "flowtopo.cli", "sweep", "job-user", "--out",
                          str(out), "--user", "intruder"], env=as_job, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 2 and "cannot create the MLflow job user 'intruder'" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not out.exists()
    assert list(tmp_path.iterdir()) == []  # nothing staged left behind
    res = flowtopo(cluster, "sweep", "job-user", "--out", str(out), "--user", "second-jobs")
    assert res.returncode == 0, res.stderr
    assert out.stat().st_mode & 0o777 == 0o600
    user, password = read_credentials(out)
    assert user == "second-jobs" and password not in res.stdout + res.stderr
    req = urllib.request.Request(f"{cluster['mlflow']}/api/2.0/mlflow/experiments/search"
                                 "?max_results=1", headers={"Authorization": "Basic " +
                                 base64.b64encode(f"{user}:{password}".encode()).decode()})
    with urllib.request.urlopen(req, timeout=30) as r:  # the new user's password works
        assert r.status == 200


def test_a_sweep_submitted_through_jobs_lands_in_the_server(cluster, tmp_path):
    job = submit(cluster, sweep_yaml(tmp_path, "clu"))
    assert wait(cluster, job) == "SUCCEEDED", flowtopo(
        cluster, "sweep", "logs", job, "--address", cluster["jobs"]).stdout[-3000:]
    runs = trial_runs(cluster, "clu")
    done = [r for r in runs if r["info"]["status"] == "FINISHED"]
    assert len(done) == 3  # 2 search trials + the best config's second seed
    for run in done:
        listed = http(cluster, f"/api/2.0/mlflow/artifacts/list?run_id={run['info']['run_id']}"
                               "&path=checkpoint")
        assert {"checkpoint/model.pt", "checkpoint/config.json"} <= {
            f["path"] for f in listed["files"]}
    # the trials ran on both Ray nodes (1 CPU each, 2 at a time)
    assert len({tags(r)["ray_node_id"] for r in done}) == 2
    out = tmp_path / "match.json"
    res = flowtopo(cluster, "match", "--experiment", "clu", "--address",
                   read_env(cluster["state"] / "env")["FLOWTOPO_RAY_GCS"], "--json-out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads(out.read_text())
    assert len(summary["pairs"]) == 2
    parent = http(cluster, f"/api/2.0/mlflow/runs/get?run_id={summary['parent_run_id']}")
    assert parent["run"]["info"]["status"] == "FINISHED"
    _no_password_reached_ray(cluster, job, done)


def _ray_temp_dirs(state):
    """The Ray temp dirs start.sh gave the head and the worker node (drivers that connect
    from outside, `match --address`, log into the cluster's session dir too)."""
    digest = subprocess.run(["cksum"], input=str(state.resolve()), capture_output=True,
                            text=True).stdout.split()[0]
    return [p for p in (Path(f"/tmp/ftc-{digest}"), Path(f"/tmp/ftc-{digest}w")) if p.is_dir()]


def _no_password_reached_ray(cluster, job, trial_runs_done):
    """Issue 19 item 2: neither the admin's password nor the job user's is in any file under
    Ray's temp dirs, in the Jobs API, or in the environment of any Ray process; the trials
    wrote as the non-admin job user, who may not write elsewhere."""
    from flowtopo.mlflow_auth import read_credentials

    state = cluster["state"]
    cred = state / "mlflow-job-credentials"
    assert cred.stat().st_mode & 0o777 == 0o600
    job_user, job_password = read_credentials(cred)
    secrets_ = [cluster["password"].encode(), job_password.encode()]
    temps = _ray_temp_dirs(state)
    assert temps and str(temps[0]).startswith("/tmp/ftc-")
    scanned = 0
    for root in temps:
        for path in root.rglob("*"):
            try:
                if not path.is_file() or path.is_symlink() or path.stat().st_size > 200 << 20:
                    continue
                data = path.read_bytes()
            except OSError:
                continue
            scanned += 1
            assert not any(s in data for s in secrets_), f"a password is in {path}"
    assert scanned > 50  # Ray's logs, the runtime-env agent's among them
    token = (state / "auth_token").read_text().strip()
    req = urllib.request.Request(f"{cluster['jobs']}/api/jobs/",
                                 headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        listed = r.read()
    assert job.encode() in listed and not any(s in listed for s in secrets_)
    prefix = str(temps[0]).encode()
    ray_procs = 0
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cwd = os.readlink(proc / "cwd").encode()
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if prefix in _cmdline(proc) or cwd.startswith(prefix):
            ray_procs += 1
            assert not any(s in environ for s in secrets_), _cmdline(proc)[:200]
    assert ray_procs >= 4  # both nodes' raylets, GCS, agents
    # the job wrote as the job user (the only credentials any Ray process could read), which
    # submit granted EDIT on this experiment, and nothing more
    exp_id = {r["info"]["experiment_id"] for r in trial_runs_done}.pop()
    grant = http(cluster, f"/api/3.0/mlflow/users/permissions/get?username={job_user}"
                          f"&resource_type=experiment&resource_id={exp_id}")
    assert grant == {"allowed": True, "permission": "EDIT"}, grant
    other = http(cluster, "/api/2.0/mlflow/experiments/create", {"name": "not-the-jobs"})
    req = urllib.request.Request(
        f"{cluster['mlflow']}/api/2.0/mlflow/runs/create", method="POST",
        data=json.dumps({"experiment_id": other["experiment_id"]}).encode(),
        headers={"Content-Type": "application/json", "Authorization": "Basic " + base64.b64encode(
            f"{job_user}:{job_password}".encode()).decode()})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=30)
    assert err.value.code == 403


def _worker_raylet(state):
    """The raylet of the extra worker node (found by the node-manager port start.sh gave it)."""
    cmd = _cmdline(Path(f"/proc/{pids(state)['ray-worker']}")).decode().split("\0")
    port = next(a.split("=", 1)[1] for a in cmd if a.startswith("--node-manager-port="))
    for proc in Path("/proc").glob("[0-9]*"):
        line = _cmdline(proc)
        if b"raylet" in line.split(b"\0")[0] and f"--node_manager_port={port}".encode() in line:
            return int(proc.name)
    raise AssertionError("worker raylet not found")


def test_the_sweep_survives_the_worker_node_dying_and_the_server_restarting(cluster,
                                                                             tmp_path):
    """Kill the worker node's raylet mid-sweep, then restart MLflow mid-sweep: the sweep still
    succeeds (lost trials retried per max_failures) and every finished trial is recorded."""
    state = cluster["state"]
    job = submit(cluster, sweep_yaml(tmp_path, "faults", num_samples=4, max_failures=2,
                                     train={"epochs": 25}))
    deadline = time.time() + 300
    while time.time() < deadline and not any(
            r["info"]["status"] == "RUNNING" and tags(r).get("ray_node_id")
            for r in trial_runs_or_empty(cluster, "faults")):
        time.sleep(2)
    time.sleep(4)
    os.kill(_worker_raylet(state), signal.SIGKILL)  # the extra node dies

    mlflow_pid = int(pids(state)["mlflow"])
    cmd = _cmdline(Path(f"/proc/{mlflow_pid}")).decode().rstrip("\0").split("\0")
    environ = Path(f"/proc/{mlflow_pid}/environ").read_bytes().rstrip(b"\0").split(b"\0")
    env = dict(item.decode().split("=", 1) for item in environ)  # the server's own settings
    os.kill(mlflow_pid, signal.SIGTERM)
    _wait_gone(mlflow_pid)
    time.sleep(3)  # clients see the server down and retry
    log = open(state / "logs" / "mlflow-restarted.log", "w")
    restarted = subprocess.Popen(cmd, cwd=state, env=env, stdout=log, stderr=log,
                                 start_new_session=True)  # its own group, as start.sh does
    text = (state / "pids").read_text().replace(f"mlflow {mlflow_pid}", f"mlflow {restarted.pid}")
    (state / "pids").write_text(text)

    assert wait(cluster, job, timeout=600) == "SUCCEEDED", flowtopo(
        cluster, "sweep", "logs", job, "--address", cluster["jobs"]).stdout[-4000:]
    runs = trial_runs(cluster, "faults")
    finished = [r for r in runs if r["info"]["status"] == "FINISHED"]
    searched = {tags(r)["trial_id"] for r in finished if tags(r)["phase"] == "search"}
    assert len(searched) == 4  # every search trial finished, some after a retry
    assert any(tags(r)["phase"] == "seeds" for r in finished)
    assert all(r["info"]["status"] in ("FINISHED", "KILLED", "FAILED") for r in runs)


def trial_runs_or_empty(cluster, experiment):
    try:
        return trial_runs(cluster, experiment)
    except (urllib.error.HTTPError, OSError):
        return []


def _wait_gone(pid, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            return
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.3)
    os.kill(pid, signal.SIGKILL)


def test_a_stopped_sweep_job_resumes_on_the_cluster_without_rerunning_finished_trials(
        cluster, tmp_path):
    """`sweep stop` (SIGINT: Tune saves its state), then `sweep resume --address`."""
    state = cluster["state"]
    job = submit(cluster, sweep_yaml(tmp_path, "resume", num_samples=4, seeds=1,
                                     max_concurrent_trials=1, train={"epochs": 15}))
    deadline = time.time() + 400
    while time.time() < deadline and not any(
            r["info"]["status"] == "FINISHED" for r in trial_runs_or_empty(cluster, "resume")):
        time.sleep(2)
    res = flowtopo(cluster, "sweep", "stop", job, "--address", cluster["jobs"])
    assert res.returncode == 0 and "stopping" in res.stdout
    assert wait(cluster, job, timeout=180) == "STOPPED"
    before = {tags(r)["trial_id"] for r in trial_runs(cluster, "resume")
              if r["info"]["status"] == "FINISHED"}
    assert 1 <= len(before) < 4
    (folder,) = [p for p in (state / "tune").iterdir() if p.name.startswith("resume-")
                 and (p / "flowtopo-sweep.json").is_file()]
    gcs = read_env(state / "env")["FLOWTOPO_RAY_GCS"]
    res = flowtopo(cluster, "sweep", "resume", str(folder), "--address", gcs, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    finished = [r for r in trial_runs(cluster, "resume") if r["info"]["status"] == "FINISHED"]
    ids = [tags(r)["trial_id"] for r in finished]
    assert len(set(ids)) == 4 and len(ids) == 4  # each trial finished exactly once
    assert before <= set(ids)
