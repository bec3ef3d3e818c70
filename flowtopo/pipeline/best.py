"""Best priors: query a sweep's finished MLflow runs, rank by an explicit summary metric."""

from __future__ import annotations

from typing import Any

from flowtopo.errors import InputError

SUMMARY_METRICS = ("best_adv_loss", "best_nll", "best_c2st", "test_adv_loss", "test_nll",
                   "test_c2st")
SHOWN = ("best_adv_loss", "best_nll", "best_c2st")
BY = ("family", "dataset")
"""What `best_priors` groups runs by."""


def best_priors(experiment: str, *, tracking_uri: str | None = None,
                metric: str = "best_adv_loss", top: int = 3, by: str = "family",
                ascending: bool = True) -> list[dict[str, Any]]:
    """The ``top`` finished trial runs per family (or dataset), best first.

    ``metric`` must be an explicit summary metric (MLflow's ``metrics.X`` is the LAST value
    logged, so per-epoch metrics would rank by their final epoch): one of `SUMMARY_METRICS`.

    Returns:
        rows with group, rank, run_id, family, dataset, seed, sweep_id, the shown metrics and
        the prior's parameters.

    Raises:
        InputError: unknown experiment, metric or grouping.

    """
    from flowtopo.tracking import find_experiment, mlflow_client, resolve_tracking_uri

    _check_ranking(metric, by)
    client = mlflow_client(resolve_tracking_uri(tracking_uri), read_only=True)
    exp = find_experiment(client, experiment)
    return rank_runs(trial_runs(client, exp.experiment_id, finished=True), metric=metric,
                     top=top, by=by, ascending=ascending)


TRIAL_FILTER = "tags.`flowtopo.kind` = 'trial'"
MAX_RUNS = 50_000  # the sqlite/SQL store's page limit


def trial_runs(client: Any, experiment_id: str, *, finished: bool = False) -> list[Any]:
    """Every trial run of an experiment (only FINISHED ones when ``finished``), in ONE query.

    A query returns each run with all its parameters, tags and metrics (~3 s per 1,000 runs
    on sqlite, benchmarks/sweep.py): read them once and rank that list (`rank_runs`).
    """
    where = TRIAL_FILTER + (" and attributes.status = 'FINISHED'" if finished else "")
    return list(client.search_runs([experiment_id], filter_string=where, max_results=MAX_RUNS))


def rank_runs(runs: list[Any], *, metric: str = "best_adv_loss", top: int = 3,
              by: str = "family", ascending: bool = True) -> list[dict[str, Any]]:
    """`best_priors`'s rows from runs already fetched: FINISHED runs with ``metric``.

    Raises:
        InputError: unknown metric or grouping.

    """
    _check_ranking(metric, by)
    runs = sorted((r for r in runs if r.info.status == "FINISHED" and metric in r.data.metrics),
                  key=lambda r: rank_key(metric, r.data.metrics[metric]),
                  reverse=not ascending)
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        group = r.data.tags.get(by, "?")
        rows = groups.setdefault(group, [])
        if len(rows) >= top:
            continue
        prior_params = {k.removeprefix("model.prior.params."): v for k, v in r.data.params.items()
                        if k.startswith("model.prior.params.")}
        rows.append({
            "group": group, "rank": len(rows) + 1, "run_id": r.info.run_id,
            "family": r.data.tags.get("family"), "dataset": r.data.tags.get("dataset"),
            "seed": r.data.tags.get("seed"), "sweep_id": r.data.tags.get("sweep_id"),
            **{m: r.data.metrics.get(m) for m in (*SHOWN, metric)},
            "prior_params": prior_params,
        })
    best_of = {g: rank_key(metric, rows[0][metric]) for g, rows in groups.items()}
    order = sorted(groups, key=lambda g: best_of[g], reverse=not ascending)
    return [row for g in order for row in groups[g]]


def _check_ranking(metric: str, by: str) -> None:
    """Refuse an unknown ranking metric or grouping (before any store is opened)."""
    if metric not in SUMMARY_METRICS:
        raise InputError(f"unknown ranking metric {metric!r}; valid: "
                         f"{', '.join(SUMMARY_METRICS)}")
    if by not in BY:
        raise InputError(f"--by must be {' or '.join(BY)}, got {by!r}")


def model_name(experiment: str, group: str) -> str:
    """The registered-model name of ``group``'s best run in ``experiment``."""
    return f"flowtopo-{experiment}-{group}"


def register_best(rows: list[dict[str, Any]], experiment: str, *,
                  tracking_uri: str | None = None, alias: str = "best") -> list[dict[str, Any]]:
    """Register each group's rank-1 run as a model version and point ``alias`` at it.

    The version's source is the run's checkpoint artifact (a plain state_dict, loaded with
    ``weights_only``); load it back with `flowtopo.runtime.fetch_checkpoint` and
    ``models:/NAME@ALIAS``. Idempotent: when ``alias`` already points at a version of the same
    run, nothing new is created.

    Returns:
        One row per group: group, model, version, alias, run_id, created (bool).

    """
    from mlflow.exceptions import MlflowException

    from flowtopo.runtime import CHECKPOINT_ARTIFACT
    from flowtopo.tracking import mlflow_client, resolve_tracking_uri

    client = mlflow_client(resolve_tracking_uri(tracking_uri))
    out = []
    for r in rows:
        if r["rank"] != 1:
            continue
        name, run_id = model_name(experiment, str(r["group"])), r["run_id"]
        try:
            client.create_registered_model(name, tags={"flowtopo.experiment": experiment,
                                                        "flowtopo.group": str(r["group"])})
        except MlflowException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        try:
            current = client.get_model_version_by_alias(name, alias)
        except MlflowException:
            current = None
        if current is not None and current.run_id == run_id:
            out.append({"group": r["group"], "model": name, "version": int(current.version),
                        "alias": alias, "run_id": run_id, "created": False})
            continue
        mv = client.create_model_version(name, source=f"runs:/{run_id}/{CHECKPOINT_ARTIFACT}",
                                         run_id=run_id)
        client.set_registered_model_alias(name, alias, mv.version)
        out.append({"group": r["group"], "model": name, "version": int(mv.version),
                    "alias": alias, "run_id": run_id, "created": True})
    return out


def rank_key(metric: str, value: float) -> float:
    """What ranks ``value`` of summary ``metric`` (smaller is better).

    The metric itself, except the two-sample accuracies (``*_c2st``): their distance from
    chance (`flowtopo.train_config.c2st_gap`), so that 0.45 does not outrank 0.5. The import
    is torch-free: ranking loads no torch.
    """
    from flowtopo.train_config import c2st_gap

    return c2st_gap(value) if metric.endswith("_c2st") else float(value)


def measure_reproducibility(rows: list[dict[str, Any]], *, tracking_uri: str | None = None,
                            max_inputs: int = 1000, seed: int = 0) -> list[dict[str, Any]]:
    """Add each run's tree reproducibility against the other runs of its group, and record it.

    For every group with at least two runs (seeds), the checkpoints are loaded
    (``weights_only``), each pair is compared on the same held-out inputs
    (`flowtopo.pipeline.reproducibility.tree_reproducibility`), and every run gets the mean
    over its partners as ``repro_leaf_ari`` and ``repro_sym_kl``: in the rows returned, and
    logged to its MLflow run. Groups of one run get None.
    """
    import tempfile
    from pathlib import Path

    from flowtopo.checkpoint import load_checkpoint
    from flowtopo.data import load_dataset
    from flowtopo.pipeline.reproducibility import pairwise_reproducibility
    from flowtopo.runtime import fetch_checkpoint
    from flowtopo.tracking import mlflow_client, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    client = mlflow_client(uri, read_only=True)
    out = [{**r, "repro_leaf_ari": None, "repro_sym_kl": None} for r in rows]
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in out:
        groups.setdefault(r["group"], []).append(r)
    with tempfile.TemporaryDirectory() as tmp:
        for members in groups.values():
            if len(members) < 2:
                continue
            ckpts = {}
            for r in members:
                fetch_checkpoint(uri, r["run_id"], Path(tmp) / r["run_id"])
                ckpts[r["run_id"]] = load_checkpoint(Path(tmp) / r["run_id"] / "checkpoint")
            datasets = {repr(c.config.get("dataset")) for c in ckpts.values()}
            if len(datasets) > 1:  # e.g. --by dataset over a sweep of one family: skip
                continue
            spec = next(iter(ckpts.values())).config["dataset"]
            ds = load_dataset(spec["name"], **spec.get("options", {}))
            scores = pairwise_reproducibility({rid: c.model for rid, c in ckpts.items()},
                                              ds.x_test[:max_inputs], seed=seed)
            for r in members:
                r.update(scores[r["run_id"]])
                for key, value in scores[r["run_id"]].items():
                    client.log_metric(r["run_id"], key, value)
    return out


def rank_families(rows: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """One row per group, ranked by fit AND reproducibility.

    ``fit``: the group's mean `rank_key` of ``metric`` (lower is better); ``leaf_ari`` and
    ``sym_kl``: its runs' mean reproducibility (`measure_reproducibility`). ``score`` = rank by
    fit + rank by leaf ARI (higher is better); groups without a reproducibility measure rank
    last on it.
    A tree that changes with the seed is not the data's: a family that fits well but does not
    reproduce is no better than one that reproduces and fits slightly worse.
    """
    from scipy.stats import rankdata

    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["group"], []).append(r)

    def mean(vals: list[Any]) -> float:
        vals = [v for v in vals if v is not None]
        return float(sum(vals) / len(vals)) if vals else float("nan")

    fam = [{"group": g, "runs": len(rs), "fit": mean([rank_key(metric, r[metric])
                                                       for r in rs if r[metric] is not None]),
            "leaf_ari": mean([r.get("repro_leaf_ari") for r in rs]),
            "sym_kl": mean([r.get("repro_sym_kl") for r in rs])} for g, rs in groups.items()]
    if not fam:
        return []
    fit_rank = rankdata([f["fit"] for f in fam])
    ari = [f["leaf_ari"] if f["leaf_ari"] == f["leaf_ari"] else -2.0 for f in fam]
    ari_rank = rankdata([-a for a in ari])
    for f, a, b in zip(fam, fit_rank, ari_rank, strict=True):
        f["score"] = float(a + b)
    return sorted(fam, key=lambda f: (f["score"], f["fit"]))
