"""cluster/: the cloud and Kubernetes definitions parse and carry the right kinds and fields.

The Ray cluster-launcher files are checked by Ray's own schema validator; the KubeRay and MLflow
manifests field by field; the sweep YAML inside the RayJob by flowtopo's own SweepSpec.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flowtopo.sweep.spec import SweepSpec

CLUSTER = Path(__file__).resolve().parents[1] / "cluster"


def docs(name):
    return [d for d in yaml.safe_load_all((CLUSTER / name).read_text()) if d]


@pytest.mark.parametrize("name, provider", [("aws.yaml", "aws"), ("gcp.yaml", "gcp")])
def test_launcher_configs_pass_rays_schema(name, provider):
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((CLUSTER / name).read_text())
    validate_config(prepare_config(yaml.safe_load((CLUSTER / name).read_text())))
    assert raw["provider"]["type"] == provider
    types = raw["available_node_types"]
    head = types[raw["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0  # a CPU head
    gpu = [t for n, t in types.items() if n != raw["head_node_type"]]
    assert gpu and all(t["resources"]["GPU"] >= 1 for t in gpu)
    assert all(t["min_workers"] == 0 < t["max_workers"] for t in gpu)  # autoscaling from 0
    setup = " ".join(raw["setup_commands"])
    assert "pip install" in setup and "constraints.txt" in setup and "flowtopo" in setup
    starts = " ".join(raw["head_start_ray_commands"] + raw["worker_start_ray_commands"])
    assert starts.count("RAY_AUTH_MODE=token") == 2
    assert "--dashboard-host=127.0.0.1" in starts
    assert "flowtopo.env" in starts  # the MLflow URI from the user's env file
    assert "~/.flowtopo/cluster.env" in raw["file_mounts"].values()
    # MLflow credentials: the job user's file (chmod 600), never a password in the nodes'
    # environment (which every job inherits)
    assert raw["file_mounts"]["/home/ubuntu/mlflow-job-credentials"] == \
        "~/.flowtopo/mlflow-job-credentials"
    assert "chmod 600 ~/mlflow-job-credentials" in setup
    text = (CLUSTER / name).read_text()
    assert "FLOWTOPO_MLFLOW_CREDENTIALS=/home/ubuntu/mlflow-job-credentials" in text
    assert "MLFLOW_TRACKING_PASSWORD" not in text


def test_raycluster_has_token_auth_a_cpu_head_and_autoscaling_gpu_workers():
    (rc,) = docs("kuberay/raycluster.yaml")
    assert rc["apiVersion"] == "ray.io/v1" and rc["kind"] == "RayCluster"
    spec = rc["spec"]
    assert spec["authOptions"]["mode"] == "token"
    assert spec["rayVersion"] == "2.60.0" and spec["enableInTreeAutoscaling"] is True
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in head["resources"]["limits"]
    (group,) = spec["workerGroupSpecs"]
    assert group["minReplicas"] == 0 < group["maxReplicas"]
    worker = group["template"]["spec"]["containers"][0]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
    for pod in (spec["headGroupSpec"]["template"]["spec"], group["template"]["spec"]):
        assert_jobs_read_mlflow_credentials_from_a_secret_file(pod)


def assert_jobs_read_mlflow_credentials_from_a_secret_file(pod):
    """Issue 19 item 2: no password in a Ray container's environment (Ray logs a job's
    environment and shows it through its Jobs API); the job user's credentials file is a
    mounted secret, not readable by others, named by FLOWTOPO_MLFLOW_CREDENTIALS."""
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["MLFLOW_TRACKING_URI"]["value"].startswith("http://mlflow:")
    assert not {"MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_USERNAME",
                "MLFLOW_AUTH_ADMIN_PASSWORD"} & set(env)
    assert "mlflow-auth" not in json.dumps(pod)  # the admin's secret stays with the server
    path = Path(env["FLOWTOPO_MLFLOW_CREDENTIALS"]["value"])
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == str(path.parent)]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == "mlflow-job-credentials"
    assert volume["secret"]["defaultMode"] & 0o027 == 0  # no write for the group, nothing else


def test_rayjob_runs_a_valid_sweep_yaml_from_its_configmap():
    cm, job = docs("kuberay/rayjob.yaml")
    assert cm["kind"] == "ConfigMap" and job["kind"] == "RayJob"
    assert job["apiVersion"] == "ray.io/v1"
    spec = SweepSpec.model_validate(yaml.safe_load(cm["data"]["sweep.yaml"]))
    assert spec.resources.gpu > 0
    assert job["spec"]["entrypoint"].startswith("flowtopo sweep run /config/sweep.yaml")
    cluster = job["spec"]["rayClusterSpec"]
    assert cluster["authOptions"]["mode"] == "token"
    head = cluster["headGroupSpec"]["template"]["spec"]
    assert head["volumes"][0]["configMap"]["name"] == cm["metadata"]["name"]
    assert head["containers"][0]["volumeMounts"][0]["mountPath"] == "/config"
    assert job["spec"]["shutdownAfterJobFinishes"] is True
    for pod in (head, cluster["workerGroupSpecs"][0]["template"]["spec"]):
        assert_jobs_read_mlflow_credentials_from_a_secret_file(pod)


def test_mlflow_manifest_has_postgres_basic_auth_and_no_literal_secret():
    kinds = {(d["kind"], d["metadata"]["name"]): d for d in docs("kuberay/mlflow.yaml")}
    assert {("Deployment", "mlflow"), ("Service", "mlflow"), ("Deployment", "mlflow-postgres"),
            ("Service", "mlflow-postgres")} <= set(kinds)
    server = kinds[("Deployment", "mlflow")]["spec"]["template"]["spec"]["containers"][0]
    args = " ".join(server["args"])
    assert "--backend-store-uri postgresql://" in args and "--app-name basic-auth" in args
    assert "--serve-artifacts" in args
    env = {e["name"]: e for e in server["env"]}
    for key in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY",
                "POSTGRES_PASSWORD"):
        assert "secretKeyRef" in env[key]["valueFrom"], key
    assert kinds[("Service", "mlflow")]["spec"]["type"] == "ClusterIP"  # not exposed
    pg = kinds[("Deployment", "mlflow-postgres")]["spec"]["template"]["spec"]["containers"][0]
    assert "secretKeyRef" in {e["name"]: e for e in pg["env"]}["POSTGRES_PASSWORD"]["valueFrom"]


def test_no_password_or_token_is_written_in_cluster_files():
    pattern = re.compile(r"(password|secret|token)\s*[:=]\s*['\"]?[A-Za-z0-9+/_-]{8,}", re.I)
    for path in CLUSTER.rglob("*"):
        if path.is_file() and path.suffix in (".yaml", ".ini", ".sh", ".md", ""):
            for line in path.read_text().splitlines():
                if line.strip().startswith("#") or "secretKeyRef" in line or "$(" in line:
                    continue
                assert not pattern.search(line), f"{path.name}: {line.strip()}"
    ini = (CLUSTER / "mlflow" / "basic_auth.ini").read_text()
    assert "admin_password" not in ini.replace("# admin_password", "")


def test_local_scripts_are_valid_bash():
    for script in ("start.sh", "stop.sh"):
        res = subprocess.run(["bash", "-n", str(CLUSTER / "local" / script)],
                             capture_output=True, text=True)
        assert res.returncode == 0, res.stderr


def test_start_refuses_a_second_cluster_in_the_same_state_dir(tmp_path):
    (tmp_path / "pids").write_text("ray-head 999999\n")
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
           "FLOWTOPO_CLUSTER_DIR": str(tmp_path), "PYTHON": sys.executable,
           "MLFLOW_AUTH_ADMIN_PASSWORD": "x"}
    res = subprocess.run(["bash", str(CLUSTER / "local" / "start.sh")], capture_output=True,
                         text=True, env=env, timeout=60)
    assert res.returncode == 2 and "already recorded" in res.stderr
    assert (tmp_path / "pids").read_text() == "ray-head 999999\n"  # nothing overwritten


@pytest.mark.parametrize("args,code,message", [
    ([], 2, "MLFLOW_AUTH_ADMIN_PASSWORD is not set: refusing to start an MLflow server "
            "without authentication"),
    (["--bogus"], 2, "unknown argument '--bogus'"),
])
def test_start_refuses_an_mlflow_server_without_auth_unless_told(tmp_path, args, code, message):
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
           "FLOWTOPO_CLUSTER_DIR": str(tmp_path / "state"), "PYTHON": sys.executable}
    res = subprocess.run(["bash", str(CLUSTER / "local" / "start.sh"), *args],
                         capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == code and message in res.stderr
    assert not (tmp_path / "state" / "pids").exists()  # nothing was started


def test_stop_signals_live_groups_and_does_not_wait_on_dead_ones(tmp_path):
    """stop.sh waited 30 s whenever a recorded server had been restarted by hand (CI: the
    cluster test restarts MLflow; its exited process stays a zombie of the test until reaped)
    and on a node whose leader had died. A zombie is dead: stop signals what lives and returns
    at once. (The 20 s bound is a hang check, not a speed target: stop.sh takes ~0.3 s here.)"""
    import os
    import time

    live = subprocess.Popen(["sleep", "300"], start_new_session=True)
    dead = subprocess.Popen(["true"], start_new_session=True)
    time.sleep(0.5)  # `dead` has exited and, unreaped, is a zombie in its own group
    try:
        (tmp_path / "pids").write_text(f"ray-head {live.pid}\nmlflow {dead.pid}\n")
        res = subprocess.run(["bash", str(CLUSTER / "local/stop.sh")], capture_output=True,
                             text=True, timeout=20,
                             env={**os.environ, "FLOWTOPO_CLUSTER_DIR": str(tmp_path)})
        assert res.returncode == 0 and "stopped" in res.stdout, res.stderr
        assert live.wait(timeout=5) == -15  # the live leader got SIGTERM
        assert (tmp_path / "pids").read_text() == ""
    finally:
        live.kill()
        dead.wait()
