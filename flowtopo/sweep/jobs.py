"""Submitting sweeps as Ray Jobs (JobSubmissionClient), with Ray's token authentication.

The token is, in order: ``--token``, ``RAY_AUTH_TOKEN``, the file ``RAY_AUTH_TOKEN_PATH``, or
``~/.ray/auth_token`` (written by ``ray start``/``ray.init`` on the head); it travels as an
``Authorization: Bearer`` header. Jobs are stopped with SIGINT (``RAY_JOB_STOP_SIGNAL``) so Ray
Tune saves its state and the sweep can be resumed.

No secret travels with a job: Ray writes a job's environment to its logs and shows it through
the Jobs API. The job writes to MLflow as the cluster's job user (`flowtopo.mlflow_auth`),
whom `submit` grants EDIT on the sweep's experiment, and only on it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from flowtopo.errors import InputError
from flowtopo.sweep.spec import OPTUNA_STORAGE_ENV


def resolve_token(explicit: str | None = None) -> str | None:
    """The Ray auth token from the flag, the environment or the default file, else None."""
    if explicit:
        return explicit
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"]
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    candidates = [Path(path)] if path else [Path.home() / ".ray" / "auth_token"]
    for c in candidates:
        if c.is_file() and c.read_text().strip():
            return c.read_text().strip()
    return None


def client(address: str, token: str | None = None) -> Any:
    """A ``JobSubmissionClient`` for the dashboard at ``address`` (http://HEAD:8265)."""
    from ray.job_submission import JobSubmissionClient

    tok = resolve_token(token)
    headers = {"Authorization": f"Bearer {tok}"} if tok else None
    try:
        return JobSubmissionClient(address, headers=headers)
    except Exception as err:  # connection refused, auth refused: one line for the user
        raise InputError(_explain(address, err)) from None


def _explain(address: str, err: Exception) -> str:
    msg = str(err).splitlines()[0] if str(err) else type(err).__name__
    if "uthentication" in type(err).__name__ or "token" in msg.lower():
        return (f"Ray Jobs API at {address} refused the request ({msg}); pass --token or set "
                "RAY_AUTH_TOKEN to the cluster's token (ray get-auth-token on the head)")
    return f"cannot reach the Ray Jobs API at {address} ({msg})"


def _call(address: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except InputError:
        raise
    except Exception as err:
        if "does not exist" in str(err) or "not found" in str(err).lower():
            raise InputError(f"no such job on {address}: {args[0] if args else ''}") from None
        raise InputError(_explain(address, err)) from None


def submit(file: Path, address: str, *, tracking_uri: str | None = None,
           storage: str | None = None, token: str | None = None,
           job_user: str | None = None) -> str:
    """Submit ``flowtopo sweep run FILE`` as a Ray Job; return its submission id.

    The YAML travels in the job's working_dir; flowtopo must be installed on the cluster
    (see docs/cluster.md). The job's environment holds the tracking URI (flag, YAML,
    ``MLFLOW_TRACKING_URI``, else this machine's absolute sqlite default),
    ``RAY_JOB_STOP_SIGNAL=SIGINT`` and ``$FLOWTOPO_OPTUNA_STORAGE``, and no credentials: with
    ``job_user`` (the cluster's MLflow job user, default ``$FLOWTOPO_MLFLOW_JOB_USER``) the
    experiment is created here, with this environment's MLflow credentials, and the job user
    is granted EDIT on it.

    Raises:
        InputError: the YAML, the cluster, a URL holding a password (the tracking URI, the
            Optuna storage), or a grant the server refuses.

    """
    from flowtopo.mlflow_auth import JOB_USER_ENV, check_no_secret, grant_job_user
    from flowtopo.sweep.spec import SweepSpec
    from flowtopo.tracking import ensure_experiment, resolve_tracking_uri
    from flowtopo.yaml_io import load_spec

    spec = load_spec(file, SweepSpec)
    uri = resolve_tracking_uri(tracking_uri or spec.mlflow.tracking_uri)
    check_no_secret("the tracking URI", uri)
    optuna = os.environ.get(OPTUNA_STORAGE_ENV)
    if optuna:
        check_no_secret(f"${OPTUNA_STORAGE_ENV}", optuna)
    jc = client(address, token)
    job_user = job_user or os.environ.get(JOB_USER_ENV)
    if job_user and uri.startswith(("http://", "https://")):
        grant_job_user(uri, ensure_experiment(uri, spec.mlflow.experiment), job_user)
    work = Path(tempfile.mkdtemp(prefix="flowtopo-job-"))
    shutil.copy(file, work / "sweep.yaml")
    cmd = ["python", "-m", "flowtopo.cli", "sweep", "run", "sweep.yaml", "--tracking-uri", uri]
    if storage:
        cmd += ["--storage", storage]
    sid = f"flowtopo-{spec.name}-{uuid.uuid4().hex[:8]}"
    # SIGINT lets Ray Tune save its state and flowtopo sign the folder; Ray's default grace
    # of 3 s before SIGKILL is too short for both, so the job gets 120 s.
    env = {"MLFLOW_TRACKING_URI": uri, "RAY_JOB_STOP_SIGNAL": "SIGINT",
           "RAY_JOB_STOP_WAIT_TIME_S": "120"}
    if optuna:
        env[OPTUNA_STORAGE_ENV] = optuna
    try:
        deadline = time.monotonic() + 60
        while True:  # a head that has just started has no job agent for a few seconds
            try:
                return jc.submit_job(entrypoint=" ".join(cmd), submission_id=sid,
                                     runtime_env={"working_dir": str(work), "env_vars": env})
            except Exception as err:
                if "No available agent" not in str(err) or time.monotonic() > deadline:
                    raise InputError(_explain(address, err)) from None
                time.sleep(2)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def status(job_id: str, address: str, token: str | None = None) -> str:
    """PENDING, RUNNING, STOPPED, SUCCEEDED or FAILED."""
    jc = client(address, token)
    return str(_call(address, jc.get_job_status, job_id).value)


def logs(job_id: str, address: str, token: str | None = None) -> str:
    """The job's driver logs so far."""
    jc = client(address, token)
    return str(_call(address, jc.get_job_logs, job_id))


def follow_logs(job_id: str, address: str, token: str | None = None,
                write: Any = None) -> None:
    """Stream the job's logs to ``write`` (default: stdout) until the job ends.

    Ray's ``tail_job_logs`` (a websocket to the dashboard); the job's status is checked first
    so that an unknown id is one line, like ``logs``.
    """
    import asyncio
    import sys

    jc = client(address, token)
    _call(address, jc.get_job_status, job_id)
    out = write or sys.stdout.write

    async def tail() -> None:
        async for chunk in jc.tail_job_logs(job_id):
            out(chunk)

    try:
        asyncio.run(tail())
    except Exception as err:  # the dashboard went away mid-stream
        raise InputError(_explain(address, err)) from None


def stop(job_id: str, address: str, token: str | None = None) -> bool:
    """Ask the job to stop (SIGINT: Ray Tune saves its state). True if it was running."""
    jc = client(address, token)
    return bool(_call(address, jc.stop_job, job_id))
