"""MLflow glue: where runs go, and logging a training run.

The default store is sqlite at an ABSOLUTE path (relative sqlite URIs break inside Ray trial
directories), created on the driver before any worker writes (parallel first writers race on
the schema migrations).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

DEFAULT_DIR = "flowtopo-runs"


def default_tracking_uri(root: str | Path | None = None) -> str:
    """``sqlite:////ABS/flowtopo-runs/mlflow.db`` under ``root`` (default: the working dir).

    Nothing is created here: a command that writes creates the store (`mlflow_client`), a
    command that only reads refuses a store that is not there.
    """
    base = Path(root or Path.cwd()).resolve() / DEFAULT_DIR
    return f"sqlite:///{base / 'mlflow.db'}"


def resolve_tracking_uri(explicit: str | None = None, root: str | Path | None = None) -> str:
    """The flag/YAML value, else ``MLFLOW_TRACKING_URI``, else `default_tracking_uri`.

    A relative sqlite path is made absolute.
    """
    uri = explicit or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(root)
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = f"sqlite:///{Path(uri.removeprefix('sqlite:///')).resolve()}"
    return uri


def artifact_location(tracking_uri: str) -> str | None:
    """For a local sqlite store: ``file://`` artifacts beside the database; else None."""
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri.removeprefix("sqlite:///"))
        return (db.parent / "artifacts").resolve().as_uri()
    return None


SCHEMES = ("sqlite", "http", "https", "file", "postgresql", "mysql", "databricks")
PROBE_TIMEOUT_S = 10.0


def mlflow_client(tracking_uri: str, *, read_only: bool = False, probe: bool = True) -> Any:
    """An ``MlflowClient`` for ``tracking_uri``; every flowtopo process opens MLflow here.

    A local sqlite store is created and migrated under an exclusive file lock
    (``mlflow.db.lock`` beside it): two processes opening a fresh store at once otherwise race
    on MLflow's schema migrations (one fails with "duplicate column" or an alembic error).

    Args:
        tracking_uri: the store.
        read_only: a command that only reads: a sqlite store that does not exist is an error,
            not created.
        probe: for an http(s) server, check within ``PROBE_TIMEOUT_S`` that it answers (the
            client's own retries take minutes); trials pass False and rely on those retries.

    For an http(s) server, a process without MLflow credentials in its environment takes
    them from ``$FLOWTOPO_MLFLOW_CREDENTIALS`` (`flowtopo.mlflow_auth.load_credentials`).

    Raises:
        InputError: an unknown URI scheme, a missing store (``read_only``), an unreachable
            server, an unreadable or unprotected credentials file.

    """
    import mlflow

    from flowtopo.errors import InputError

    scheme = tracking_uri.split(":", 1)[0].split("+", 1)[0] if ":" in tracking_uri else ""
    if scheme not in SCHEMES:
        raise InputError(f"tracking URI {tracking_uri!r}: unknown scheme {scheme!r}; valid: "
                         f"{', '.join(SCHEMES)}")
    if scheme in ("http", "https"):
        from flowtopo.mlflow_auth import load_credentials

        load_credentials()  # on a cluster node: the job user's, from its 0600 file
        if probe:
            _probe(tracking_uri)
    if not tracking_uri.startswith("sqlite:///"):
        return mlflow.MlflowClient(tracking_uri)
    if read_only and not Path(tracking_uri.removeprefix("sqlite:///")).is_file():
        raise InputError(f"no MLflow store at {tracking_uri.removeprefix('sqlite:///')}: run a "
                         "sweep or a training there first, or pass --tracking-uri")
    import fcntl

    db = Path(tracking_uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{db}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return mlflow.MlflowClient(tracking_uri)  # creates/migrates the store, eagerly
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _probe(uri: str) -> None:
    """Raise `InputError` unless the MLflow server at ``uri`` answers within the timeout."""
    import urllib.error
    import urllib.request

    from flowtopo.errors import InputError

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=PROBE_TIMEOUT_S):
            return
    except urllib.error.HTTPError:
        return  # it answered (an auth proxy may refuse /health): the client takes it from here
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise InputError(f"cannot reach the MLflow server at {uri} within "
                         f"{PROBE_TIMEOUT_S:.0f} s ({reason})") from None


def ensure_experiment(tracking_uri: str, name: str) -> str:
    """Create (if needed) the store and the experiment ``name``; return its id.

    Call this on the driver before any trial starts.
    """
    from mlflow.exceptions import MlflowException

    client = mlflow_client(tracking_uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location(tracking_uri))
    except MlflowException:  # another process created it since: that one is ours too
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def find_experiment(client: Any, name: str) -> Any:
    """The MLflow experiment ``name``.

    Raises:
        InputError: no such experiment (the message lists the ones there are).

    """
    from flowtopo.errors import InputError

    exp = client.get_experiment_by_name(name)
    if exp is None:
        names = ", ".join(e.name for e in client.search_experiments()) or "none"
        raise InputError(f"no MLflow experiment {name!r}; found: {names}")
    return exp


def log_metrics(client: Any, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
    """Log ``metrics`` at ``step`` in ONE request (``log_batch``), not one call per metric."""
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])


FLUSH_S = 1.0
"""How long per-epoch metrics wait in a `MetricBuffer` before they are written."""
MAX_BATCH = 1000  # MLflow's limit of metrics in one log_batch


class MetricBuffer:
    """Per-epoch metrics written at most once per ``flush_s`` seconds, several epochs a request.

    One ``log_batch`` costs ~18 ms on a sqlite store (a commit) and a round trip on a server;
    written every epoch it was 18% of a quickstart trial (benchmarks/sweep.py). A run's curves
    stay live to within ``flush_s``; `flush` (at a checkpoint, the end, a failure) writes the
    rest.
    """

    def __init__(self, client: Any, run_id: str, flush_s: float = FLUSH_S) -> None:
        import time

        self.client, self.run_id, self.flush_s = client, run_id, flush_s
        self._pending: list[Any] = []
        self._last = time.monotonic()

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Queue ``metrics`` at ``step``; write the queue when ``flush_s`` has passed."""
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._pending += [Metric(k, float(v), now, step) for k, v in metrics.items()]
        if time.monotonic() - self._last >= self.flush_s:
            self.flush()

    def flush(self) -> None:
        """Write every queued metric (one request per `MAX_BATCH`)."""
        import time

        pending, self._pending = self._pending, []
        for i in range(0, len(pending), MAX_BATCH):
            self.client.log_batch(self.run_id, metrics=pending[i:i + MAX_BATCH])
        self._last = time.monotonic()


def log_params(client: Any, run_id: str, params: dict[str, Any]) -> None:
    """Log ``params`` (flattened) in ONE request per 100 (MLflow's batch limit)."""
    from mlflow.entities import Param

    flat = [Param(k, v) for k, v in flatten(params).items()]
    for i in range(0, len(flat), 100):
        client.log_batch(run_id, params=flat[i:i + 100])


def provenance_tags() -> dict[str, str]:
    """``flowtopo.version`` and ``flowtopo.git_commit`` (of the code that runs, or "unknown").

    The commit is asked of git once per process (`_git_commit`); a sweep tags every trial.
    """
    from flowtopo._version import __version__

    return {"flowtopo.version": __version__, "flowtopo.git_commit": _git_commit()}


@functools.lru_cache(maxsize=1)
def _git_commit() -> str:
    """The commit of the checkout this package runs from, or "unknown" (not a git checkout)."""
    import subprocess

    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=Path(__file__).parent)
        if res.returncode == 0 and res.stdout.strip():
            return res.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten nested dicts into ``a.b.c`` keys with string values (MLflow params)."""
    out: dict[str, str] = {}
    for key, v in d.items():
        name = f"{prefix}{key}"
        if isinstance(v, dict):
            out.update(flatten(v, f"{name}."))
        else:
            out[name] = str(v)[:6000]
    return out


@contextmanager
def run_lifecycle(client: Any, run_id: str, *, finish: bool = True) -> Iterator[str]:
    """The one lifecycle of a flowtopo MLflow run (train, trial, sweep parent, match parent).

    The block's end sets the run FINISHED (unless ``finish`` is False: the caller decides, e.g.
    a sweep parent left RUNNING to be resumed); an exception sets it FAILED with an ``error``
    tag, Ctrl-C sets it KILLED; either way the exception goes on. A run is never left RUNNING
    by a failure.
    """
    try:
        yield run_id
    except KeyboardInterrupt:
        client.set_terminated(run_id, "KILLED")
        raise
    except BaseException as err:
        client.set_tag(run_id, "error", f"{type(err).__name__}: {err}"[:4000])
        client.set_terminated(run_id, "FAILED")
        raise
    if finish:
        client.set_terminated(run_id, "FINISHED")


def maybe_lifecycle(client: Any, run_id: str | None, **options: bool) -> Any:
    """`run_lifecycle` when there is a run, else a context that does nothing."""
    return nullcontext() if run_id is None else run_lifecycle(client, run_id, **options)
