"""Runtime setup shared by the orchestration commands: Ray sessions and MLflow checkpoints.

- `init_ray`: connect to a cluster (workers get the tracking URI; never a password: they take
  the cluster's own MLflow credentials, `flowtopo.mlflow_auth`), attach as a Ray Job's driver,
  or start a private local Ray.
- `download_checkpoint`: a run's checkpoint artifact into a folder (MLflow only, no torch);
  `fetch_checkpoint` / `checkpoint_from_files`: as bytes (for Ray's object store) and back to
  a loaded checkpoint (``weights_only``).

Used by the sweep runner, ``flowtopo match``, ``priors best --reproducibility``, the report and
the CLI; it imports none of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flowtopo.errors import InputError

CHECKPOINT_ARTIFACT = "checkpoint"
"""The artifact folder of a run that holds its checkpoint."""


def init_ray(address: str | None, uri: str) -> None:
    """Connect to ``address`` (workers get ``MLFLOW_TRACKING_URI=uri``), or start a local Ray."""
    import os

    import ray

    if ray.is_initialized():
        return
    quiet = {"log_to_driver": False, "configure_logging": False}
    if address:  # a cluster: workers get the tracking URI through the runtime environment,
        # which Ray logs in plain text: no credentials (the nodes hold the job user's, in the
        # file $FLOWTOPO_MLFLOW_CREDENTIALS names; flowtopo.mlflow_auth)
        from flowtopo.mlflow_auth import check_no_secret

        check_no_secret("the tracking URI", uri)
        ray.init(address=address, runtime_env={"env_vars": {"MLFLOW_TRACKING_URI": uri}},
                 **quiet)
    elif os.environ.get("RAY_ADDRESS"):  # a Ray Job's driver: the job's runtime env applies
        ray.init(**quiet)
    else:  # embedded default: a NEW local Ray sized to the machine ("local": never attach to
        # a cluster that `ray start` once recorded in /tmp/ray, which may be long gone)
        ray.init(address="local", include_dashboard=False, **quiet)
    _private_ray_token()


def fits_a_node(request: dict[str, float]) -> bool:
    """Whether some alive node of the connected Ray cluster offers ``request`` (cpu, gpu) in all.

    A trial's resources must sit on one node; this asks for the node's total, not what is free
    now (busy nodes free up; a node too small never grows).
    """
    import ray

    need = {"CPU": request.get("cpu", 0.0), "GPU": request.get("gpu", 0.0)}
    return any(all(node.get("Resources", {}).get(k, 0.0) >= v for k, v in need.items() if v > 0)
               for node in ray.nodes() if node.get("Alive"))


def wait_for_resources(request: dict[str, float], *, wait_s: float, can_grow: bool,
                       poll_s: float = 5.0) -> None:
    """Return once a node of the cluster can hold one trial; else raise a one-line error.

    Ray Tune would otherwise wait forever for a placement no node can give (a GPU trial on a
    cluster without GPUs). A local Ray (``can_grow`` False) never gains a node: refused at
    once. A cluster may (an autoscaler adding GPU workers from zero): it is given ``wait_s``.

    Raises:
        InputError: no node offers the request, and none appeared in time.

    """
    import time

    import ray

    deadline = time.monotonic() + (wait_s if can_grow else 0.0)
    while not fits_a_node(request):
        if time.monotonic() >= deadline:
            largest = max((n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")),
                          key=lambda r: (r.get("GPU", 0.0), r.get("CPU", 0.0)), default={})
            where = (f"no node of the cluster appeared with them in {wait_s:g} s "
                     "(resources.wait_s)" if can_grow else "the local Ray has no such node")
            raise InputError(
                f"resources: a trial needs cpu={request.get('cpu', 0):g}, "
                f"gpu={request.get('gpu', 0):g} on one node, and {where}; the largest node "
                f"offers cpu={largest.get('CPU', 0.0):g}, gpu={largest.get('GPU', 0.0):g}")
        time.sleep(poll_s)


def _private_ray_token() -> None:
    """Ray writes its auth token to ``~/.ray/auth_token`` readable by everyone: make it 0600."""
    import os

    token = Path.home() / ".ray" / "auth_token"
    if token.is_file() and token.stat().st_mode & 0o077:
        os.chmod(token, 0o600)


def resolve_model(tracking_uri: str, ref: str) -> str:
    """The run id behind ``ref``: a run id as is, or ``models:/NAME@ALIAS`` / ``models:/NAME/V``.

    Raises:
        InputError: an unknown registered model, alias or version.

    """
    if not ref.startswith("models:/"):
        return ref
    from mlflow.exceptions import MlflowException

    from flowtopo.tracking import mlflow_client

    client = mlflow_client(tracking_uri, read_only=True)
    spec = ref.removeprefix("models:/")
    try:
        if "@" in spec:
            name, alias = spec.split("@", 1)
            mv = client.get_model_version_by_alias(name, alias)
        else:
            name, _, version = spec.partition("/")
            mv = client.get_model_version(name, version)
    except MlflowException as err:
        raise InputError(f"{ref}: no such registered model version "
                         f"({str(err).splitlines()[0][:200]})") from None
    if not mv.run_id:
        raise InputError(f"{ref}: the model version names no run")
    return str(mv.run_id)


def download_checkpoint(tracking_uri: str, run_id: str, dst: Path) -> Path:
    """Download a run's checkpoint artifact under ``dst`` (not loaded); return its folder.

    ``run_id`` may also be a registered model, ``models:/NAME@ALIAS`` or ``models:/NAME/V``
    (`resolve_model`; written by ``flowtopo priors best --register``). Needs MLflow, not torch.

    Raises:
        InputError: the run has no checkpoint artifact.

    """
    import mlflow

    run_id = resolve_model(tracking_uri, run_id)
    if tracking_uri.startswith(("http://", "https://")):
        from flowtopo.mlflow_auth import load_credentials

        load_credentials()  # on a cluster node: the job user's (mlflow_client does the same)
    try:
        return Path(mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=CHECKPOINT_ARTIFACT, dst_path=str(dst),
            tracking_uri=tracking_uri))
    except Exception as err:  # MlflowException, OSError: the artifact is missing
        raise InputError(f"run {run_id}: no checkpoint artifact ({type(err).__name__}: "
                         f"{str(err).splitlines()[0][:200]})") from None


def fetch_checkpoint(tracking_uri: str, run_id: str, dst: Path) -> dict[str, bytes]:
    """`download_checkpoint`, checked to load; its files as bytes (for the object store).

    Raises:
        InputError: the run has no checkpoint artifact, or it does not load (``weights_only``).

    """
    from flowtopo.checkpoint import load_checkpoint

    local = download_checkpoint(tracking_uri, run_id, dst)
    load_checkpoint(local)  # refuses anything but a plain state_dict
    return {p.name: p.read_bytes() for p in local.iterdir() if p.is_file()}


def checkpoint_from_files(files: dict[str, bytes], root: Path) -> Any:
    """Write checkpoint files (from `fetch_checkpoint`) under ``root`` and load them."""
    from flowtopo.checkpoint import load_checkpoint

    root.mkdir(parents=True, exist_ok=True)
    for name, blob in files.items():
        (root / name).write_bytes(blob)
    return load_checkpoint(root)
