"""MLflow glue: where runs go, and logging a training run.

The default store is sqlite at an ABSOLUTE path (relative sqlite URIs break inside Ray trial
directories), created on the driver before any worker writes (parallel first writers race on
the schema migrations).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

DEFAULT_DIR = "flowtopo-runs"


def default_tracking_uri(root: str | Path | None = None) -> str:
    """``sqlite:////ABS/flowtopo-runs/mlflow.db`` under ``root`` (default: the working dir)."""
    base = Path(root or Path.cwd()).resolve() / DEFAULT_DIR
    base.mkdir(parents=True, exist_ok=True)
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


def ensure_experiment(tracking_uri: str, name: str) -> str:
    """Create (if needed) the store and the experiment ``name``; return its id.

    Call this on the driver before any trial starts.
    """
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location(tracking_uri))


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
