"""MLflow credentials on a cluster: a job user, and a 0600 file instead of environment variables.

A password handed to Ray (a job's or a worker's ``runtime_env`` ``env_vars``) is written in
plain text to Ray's logs and shown by its Jobs API to anyone with the Ray token. So on a
cluster:

- the cluster's nodes hold the credentials of a non-admin MLflow user (the *job user*) in a
  file only their owner reads, named by ``$FLOWTOPO_MLFLOW_CREDENTIALS`` (a path, not a
  secret; MLflow's own ``~/.mlflow/credentials`` format). `load_credentials` reads it into the
  process (`flowtopo.tracking.mlflow_client` calls it); `create_job_user` makes the user and
  the file (``cluster/local/start.sh``; the Kubernetes manifests mount a secret);
- whoever submits a sweep creates its experiment with their own credentials and grants the
  job user EDIT on it, and on nothing else (`grant_job_user`): the job's writes are confined
  to that experiment (other experiments: the server's ``default_permission``, READ);
- nothing secret travels with a job (`check_no_secret`).

flowtopo's own; MLflow's basic-auth app (``mlflow.server.get_app_client``) does the user
management.
"""

from __future__ import annotations

import configparser
import os
import secrets
import stat
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flowtopo.errors import InputError

CREDENTIALS_ENV = "FLOWTOPO_MLFLOW_CREDENTIALS"
"""Names the job user's credentials file on a cluster's nodes."""
JOB_USER_ENV = "FLOWTOPO_MLFLOW_JOB_USER"
"""The job user's name, for whoever submits (granted EDIT on each submitted experiment)."""
DEFAULT_JOB_USER = "flowtopo-jobs"
USERNAME, PASSWORD = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"


def load_credentials() -> str | None:
    """Take this process's MLflow user from ``$FLOWTOPO_MLFLOW_CREDENTIALS``; return its name.

    Credentials already in the environment win (MLflow's own order), so a user's shell is
    unchanged; on a cluster node the environment holds none and the file is used. Only this
    process's ``os.environ`` changes: nothing is passed on, nothing written.

    Raises:
        InputError: the file is missing, readable or writable by others, or holds no
            ``[mlflow]`` user and password.

    """
    path = os.environ.get(CREDENTIALS_ENV)
    if not path or os.environ.get(PASSWORD):
        return None
    user, password = read_credentials(Path(path))
    os.environ[USERNAME], os.environ[PASSWORD] = user, password
    return user


def read_credentials(path: Path) -> tuple[str, str]:
    """(user, password) from an MLflow credentials file no other user can read or change.

    Its group may read it (Kubernetes mounts a secret 0440 under the pod's ``fsGroup``).
    """
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except OSError as err:
        raise InputError(f"{CREDENTIALS_ENV}={path}: cannot read it ({err.strerror})") from None
    if mode & (stat.S_IRWXO | stat.S_IWGRP):  # group-read allowed: a Kubernetes secret
        # mounted for the image's user is 0440 under the pod's fsGroup
        raise InputError(f"{CREDENTIALS_ENV}={path}: readable or writable by others (mode "
                         f"{stat.S_IMODE(mode):o}); chmod 600 it")
    cfg = configparser.ConfigParser()
    try:
        cfg.read_string(text)
        user = cfg["mlflow"][USERNAME.lower()]
        password = cfg["mlflow"][PASSWORD.lower()]
    except (configparser.Error, KeyError):
        raise InputError(f"{CREDENTIALS_ENV}={path}: not an MLflow credentials file ([mlflow] "
                         f"with {USERNAME.lower()} and {PASSWORD.lower()})") from None
    return user, password


def write_credentials(path: Path, user: str, password: str) -> None:
    """Write ``path`` (mode 0600 from its creation) in MLflow's credentials format.

    Raises:
        InputError: the file cannot be written there.

    """
    cfg = configparser.ConfigParser()
    cfg["mlflow"] = {USERNAME.lower(): user, PASSWORD.lower(): password}
    try:
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as err:
        raise InputError(f"{path}: cannot write the credentials there ({err.strerror})") from None
    with os.fdopen(fd, "w") as f:
        cfg.write(f)


def create_job_user(tracking_uri: str, path: Path, user: str = DEFAULT_JOB_USER) -> None:
    """Create (or give a new password to) the non-admin ``user``; its credentials go to ``path``.

    Run by an MLflow admin (credentials in this process's environment), on the machine that
    starts the cluster. The password is random and is written nowhere else.

    Raises:
        InputError: the server cannot be reached, has no basic-auth, or refuses (the caller
            is not an admin).

    """
    from mlflow.exceptions import MlflowException

    from flowtopo.tracking import mlflow_client

    mlflow_client(tracking_uri)  # a server that does not answer: one line, within seconds
    auth = _auth_client(tracking_uri)
    password = secrets.token_urlsafe(24)
    staged = path.with_name(f".{path.name}.new")  # written first: an unwritable --out fails
    write_credentials(staged, user, password)     # before the server changes anything
    try:
        try:
            auth.create_user(user, password)
        except MlflowException as err:
            if "RESOURCE_ALREADY_EXISTS" not in str(err):
                raise
            auth.update_user_password(user, password)  # a restarted cluster: a new password
    except MlflowException as err:
        staged.unlink(missing_ok=True)
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"cannot create the MLflow job user {user!r} at {tracking_uri} (an "
                         f"admin's MLFLOW_TRACKING_USERNAME/PASSWORD needed): {first}") from None
    os.replace(staged, path)


def grant_job_user(tracking_uri: str, experiment_id: str, user: str) -> None:
    """Give ``user`` EDIT on the experiment (the caller must MANAGE it: its creator does).

    Raises:
        InputError: the server refused (the caller may not manage the experiment, or there
            is no such user).

    """
    from mlflow.exceptions import MlflowException

    auth = _auth_client(tracking_uri)
    try:
        auth.grant_user_permission(user, "experiment", experiment_id, "EDIT")
    except MlflowException as err:
        if "RESOURCE_ALREADY_EXISTS" in str(err):
            return  # granted before (a second sweep in the same experiment)
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"cannot give the MLflow job user {user!r} EDIT on experiment "
                         f"{experiment_id} at {tracking_uri}: {first}") from None


def _auth_client(tracking_uri: str) -> Any:
    """MLflow's basic-auth client for the server at ``tracking_uri``.

    Importing it warns about the server's own web framework, which is not run here: silenced.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from mlflow.server import get_app_client

        return get_app_client("basic-auth", tracking_uri=tracking_uri)


def check_no_secret(name: str, url: str) -> None:
    """Refuse a URL carrying a password (it would be written to Ray's job records and logs).

    Raises:
        InputError: ``url`` has a password in it.

    """
    try:
        has_password = urlsplit(url).password is not None
    except ValueError:
        has_password = False
    if has_password:
        raise InputError(f"{name} holds a password, and a job's settings are written to Ray's "
                         f"logs and shown by its Jobs API: set it in the cluster nodes' "
                         f"environment instead (docs/cluster.md)")
