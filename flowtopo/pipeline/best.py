"""Best priors: query a sweep's finished MLflow runs, rank by an explicit summary metric."""

from __future__ import annotations

from typing import Any

from flowtopo.errors import InputError

SUMMARY_METRICS = ("best_adv_loss", "best_nll", "best_c2st", "test_adv_loss", "test_nll",
                   "test_c2st")
SHOWN = ("best_adv_loss", "best_nll", "best_c2st")


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
    import mlflow

    from flowtopo.tracking import find_experiment, resolve_tracking_uri

    if metric not in SUMMARY_METRICS:
        raise InputError(f"unknown ranking metric {metric!r}; valid: "
                         f"{', '.join(SUMMARY_METRICS)}")
    if by not in ("family", "dataset"):
        raise InputError(f"--by must be family or dataset, got {by!r}")
    client = mlflow.MlflowClient(resolve_tracking_uri(tracking_uri))
    exp = find_experiment(client, experiment)
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string="attributes.status = 'FINISHED' and tags.`flowtopo.kind` = 'trial'",
        order_by=[f"metrics.{metric} {'ASC' if ascending else 'DESC'}"], max_results=5000)
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        if metric not in r.data.metrics:
            continue
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
    best_of = {g: rows[0][metric] for g, rows in groups.items()}
    order = sorted(groups, key=lambda g: best_of[g], reverse=not ascending)
    return [row for g in order for row in groups[g]]
