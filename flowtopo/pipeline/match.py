"""``flowtopo match``: align every pair of a sweep's trained models, one Ray task per pair.

The driver picks runs in MLflow (the best prior family's best runs, or ``--runs``), downloads
their checkpoint artifacts, and puts the checkpoint files in Ray's object store (workers need
no shared disk and no MLflow access). Each task rebuilds both models (``weights_only``), encodes
DISJOINT halves of the training split (`flowtopo.model_alignment.model_spaces`), aligns them, and
scores the map on the paired held-out split against the supervised oracle and any baselines.
The driver then records one MLflow run per ordered pair (map, node pairs, scores, pictures)
under a parent run holding the pairwise score matrix and the cycle consistency of triples.
"""

from __future__ import annotations

import itertools
import json
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flowtopo.errors import InputError
from flowtopo.pipeline.hub import check_strategy, compose_through_hub
from flowtopo.pipeline.match_result import CycleRow, MatchSummary, PairRow, RunRef
from flowtopo.runtime import checkpoint_from_files, fetch_checkpoint


@dataclass
class MatchConfig:
    """What ``flowtopo match`` does (see the CLI for each option).

    Either ``experiment`` (every pair of one sweep's models, trained on the same data) or
    ``source`` and ``target`` (``EXPERIMENT[:RUN]`` each: two models trained on different data,
    e.g. two networks' representations; without ``:RUN`` the experiment's best run by
    ``metric``). Paired test embeddings (``test_source``, ``test_target``, optional
    ``test_labels``) score a cross-experiment match; without them it is recorded unscored.
    """

    experiment: str | None = None
    runs: list[str] | None = None
    top: int = 2
    family: str | None = None
    metric: str = "best_adv_loss"
    method: str = "tree"
    transform: str = "affine"
    baselines: list[str] = field(default_factory=list)
    seed: int = 0
    address: str | None = None
    tracking_uri: str | None = None
    json_out: Path | None = None
    source: str | None = None
    target: str | None = None
    test_source: Path | None = None
    test_target: Path | None = None
    test_labels: Path | None = None
    strategy: str = "all-pairs"

    @property
    def cross(self) -> bool:
        """True for a source/target match across experiments."""
        return self.source is not None or self.target is not None


def choose_runs(cfg: MatchConfig, client: Any, experiment_id: str) -> list[Any]:
    """The MLflow runs to match: ``cfg.runs``, else the best family's ``cfg.top`` best runs.

    Raises:
        InputError: unknown run, a run of another experiment or without a checkpoint, fewer
            than two runs, or an unknown family.

    """
    from mlflow.exceptions import MlflowException

    from flowtopo.pipeline.best import best_priors

    if cfg.runs:
        if len(set(cfg.runs)) < 2:
            raise InputError("--runs: give at least two distinct run ids")
        runs = []
        for rid in dict.fromkeys(cfg.runs):
            try:
                run = client.get_run(rid)
            except MlflowException:
                raise InputError(f"--runs: no MLflow run {rid!r}") from None
            if run.info.experiment_id != experiment_id:
                raise InputError(f"--runs: run {rid} is not in experiment {cfg.experiment!r}")
            if run.info.status != "FINISHED":
                raise InputError(f"--runs: run {rid} is {run.info.status}, not FINISHED "
                                 "(no checkpoint)")
            runs.append(run)
        return runs
    rows = best_priors(cfg.experiment, tracking_uri=cfg.tracking_uri, metric=cfg.metric,
                       top=max(cfg.top, 2), by="family")
    if not rows:
        raise InputError(f"experiment {cfg.experiment!r} has no finished trial runs to match")
    family = cfg.family or rows[0]["group"]
    chosen = [r["run_id"] for r in rows if r["group"] == family][: cfg.top]
    if not chosen:
        families = sorted({r["group"] for r in rows})
        raise InputError(f"no finished runs of family {family!r}; found: {', '.join(families)}")
    if len(chosen) < 2:
        raise InputError(f"family {family!r} has only one finished run; matching needs two "
                         "(run the sweep with seeds >= 2, or pass --runs)")
    return [client.get_run(rid) for rid in chosen]


def _cross_spaces(ck_a: Any, ck_b: Any, dataset_a: dict[str, Any], dataset_b: dict[str, Any],
                  test: dict[str, np.ndarray] | None) -> dict[str, Any]:
    """Spaces of models trained on DIFFERENT data (a cross-experiment match).

    Each model encodes its own training split (unpaired); the paired test embeddings, when
    given, are standardised by each model's own standardiser.
    """
    from flowtopo.data import load_dataset
    from flowtopo.matching import LatentSpace

    a, b = ck_a.model, ck_b.model
    ds_a = load_dataset(dataset_a["name"], **dataset_a.get("options", {}))
    ds_b = load_dataset(dataset_b["name"], **dataset_b.get("options", {}))
    out: dict[str, Any] = {
        "space_a": LatentSpace(a.latents(ds_a.x_train), prior=a.prior),
        "space_b": LatentSpace(b.latents(ds_b.x_train), prior=b.prior),
        "test_source": None, "test_target": None, "y_test": None}
    if test is not None:
        out["test_source"] = a.latents(ck_a.standardizer.transform(test["source"]))
        out["test_target"] = b.latents(ck_b.standardizer.transform(test["target"]))
        out["y_test"] = test.get("labels")
    return out


def align_pair(ckpt_a: dict[str, bytes], ckpt_b: dict[str, bytes], dataset: dict[str, Any],
               method: str, transform: str, baselines: list[str], seed: int,
               dataset_b: dict[str, Any] | None = None,
               test: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """One pair (the body of the Ray task): align, then score on the paired test split.

    With ``dataset_b`` (a model trained on other data than ``dataset``: a cross-experiment
    match) each model encodes its own training split, and scores need ``test`` (paired
    ``source``/``target`` embeddings, optional ``labels``); without it ``scores`` is empty.

    Returns:
        ``result`` (`AlignResult`) or ``error``; ``scores`` (method -> translation scores);
        the latents drawn in pictures: ``z_source``/``z_target`` (the halves aligned) and
        ``test_source``/``test_target`` (paired), ``y_test``; ``seconds``.

    """
    from flowtopo.data import load_dataset
    from flowtopo.matching import align
    from flowtopo.model_alignment import model_spaces
    from flowtopo.paired_scores import translation_scores

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        ck_a = checkpoint_from_files(ckpt_a, Path(tmp) / "a")
        ck_b = checkpoint_from_files(ckpt_b, Path(tmp) / "b")
    a, b = ck_a.model, ck_b.model
    if dataset_b is None or dataset_b == dataset:
        ds = load_dataset(dataset["name"], **dataset.get("options", {}))
        za, zb, y = a.latents(ds.x_test), b.latents(ds.x_test), ds.y_test
        space_a, space_b, _, _ = model_spaces(a, b, ds.x_train, seed=seed)  # encoded once
    else:
        cross = _cross_spaces(ck_a, ck_b, dataset, dataset_b, test)
        space_a, space_b = cross["space_a"], cross["space_b"]
        za, zb, y = cross["test_source"], cross["test_target"], cross["y_test"]
    out: dict[str, Any] = {"scores": {}, "test_source": za, "test_target": zb,
                           "y_test": y, "z_source": space_a.points,
                           "z_target": space_b.points}

    def score(transform_fn: Any) -> dict[str, float] | None:
        return None if za is None else translation_scores(za, zb, transform_fn, y)

    # two models of one data set are related by a map of the family: the fit picks; two
    # models of different data (two networks) by the cue consensus (docs/method.md "Cues")
    opts = {"select": "fit" if dataset_b is None or dataset_b == dataset else "consensus"
            } if method == "tree" else {}
    try:
        res = align(space_a, space_b, method=method, transform=transform, seed=seed, **opts)
        out["result"] = res
        out["scores"][method] = score(res.transform)
    except InputError as err:
        out["error"] = str(err)
    if za is not None:
        oracle = align(za, zb, method="oracle", pairs=(za, zb), transform=transform)
        out["scores"]["oracle"] = score(oracle.transform)
    for name in baselines:
        try:
            base = align(out["z_source"], out["z_target"], method=name, seed=seed)
            out["scores"][name] = score(base.transform)
        except InputError as err:
            out.setdefault("baseline_errors", {})[name] = str(err)
    out["scores"] = {m: sc for m, sc in out["scores"].items() if sc is not None}
    out["seconds"] = time.perf_counter() - t0
    return out


def run_match(cfg: MatchConfig, log: Any = print) -> MatchSummary:
    """Run ``flowtopo match``; return (and with ``cfg.json_out`` write) the scores.

    Stages: check the choices, pick the runs, fetch their checkpoints, align the pairs as
    Ray tasks, record the match in MLflow.

    Raises:
        InputError: unknown experiment, method or runs; runs trained on different datasets.

    """
    from flowtopo.tracking import mlflow_client, resolve_tracking_uri

    _check_choices(cfg)
    uri = resolve_tracking_uri(cfg.tracking_uri)
    client = mlflow_client(uri, read_only=True)  # it writes only into an existing store
    runs, exp_id, test = _chosen_runs(cfg, client)
    names = {r.info.run_id: _short_name(r) for r in runs}
    ckpts, datasets, dataset = _fetch_models(cfg, uri, runs, names)
    ids = list(ckpts)
    hub = ids[0] if cfg.strategy == "hub" else None  # the best run by --metric
    pairs = ([(a, hub) for a in ids if a != hub] if hub is not None
             else list(itertools.permutations(ckpts, 2)))
    log(f"matching {len(runs)} models ({', '.join(names.values())}): "
        f"{len(pairs)} ordered pairs as Ray tasks"
        + (f", the other {len(runs) * (len(runs) - 1) - len(pairs)} composed through "
           f"{names[hub]}" if hub is not None else ""))
    results = _align_pairs(cfg, uri, ckpts, datasets, pairs, test)
    summary = _record_match(cfg, client, exp_id, runs, names, results, hub, dataset)
    for warning in summary.warnings:
        log(f"warning: {warning}")
    if cfg.json_out is not None:
        Path(cfg.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.json_out).write_text(json.dumps(summary.to_json(), indent=2))
    return summary


def _check_choices(cfg: MatchConfig) -> None:
    """Refuse an unknown or supervised method, an unknown transform, an inapplicable strategy."""
    from flowtopo.matching import METHODS, TRANSFORMS

    for name in [cfg.method, *cfg.baselines]:
        if name not in METHODS or METHODS[name].supervised:
            valid = [m for m, fn in METHODS.items() if not fn.supervised]
            raise InputError(f"unknown or supervised method {name!r}; valid: {', '.join(valid)}")
    if cfg.transform not in TRANSFORMS:
        raise InputError(f"unknown transform {cfg.transform!r}; valid: {', '.join(TRANSFORMS)}")
    check_strategy(cfg.strategy, cfg.transform, cfg.cross)


def _chosen_runs(cfg: MatchConfig, client: Any
                 ) -> tuple[list[Any], str, dict[str, np.ndarray] | None]:
    """The runs to match, the experiment recording the match, and the paired test rows.

    The test rows are a cross-experiment match's (None within a sweep: its own test split
    scores).
    """
    from flowtopo.tracking import find_experiment

    if cfg.cross:
        if cfg.experiment or cfg.runs:
            raise InputError("give either --experiment (and --runs) or --source and --target")
        if not (cfg.source and cfg.target):
            raise InputError("--source and --target go together (EXPERIMENT[:RUN] each)")
        runs = [resolve_ref(client, cfg, cfg.source, "--source"),
                resolve_ref(client, cfg, cfg.target, "--target")]
        if runs[0].info.run_id == runs[1].info.run_id:
            raise InputError("--source and --target name the same run")
        return runs, runs[0].info.experiment_id, read_paired_test(cfg)
    if cfg.experiment is None:
        raise InputError("give --experiment, or --source and --target")
    if cfg.test_source or cfg.test_target or cfg.test_labels:
        raise InputError("--test-source/--test-target/--test-labels go with --source and "
                         "--target (a sweep's own test split scores --experiment)")
    exp_id = find_experiment(client, cfg.experiment).experiment_id
    return choose_runs(cfg, client, exp_id), exp_id, None


def _fetch_models(cfg: MatchConfig, uri: str, runs: list[Any], names: dict[str, str]
                  ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Each run's checkpoint files and dataset spec, and the dataset the match records.

    Raises:
        InputError: runs of one experiment trained on different datasets.

    """
    with tempfile.TemporaryDirectory() as tmp:
        ckpts = {r.info.run_id: fetch_checkpoint(uri, r.info.run_id, Path(tmp) / r.info.run_id)
                 for r in runs}
    datasets = {rid: json.loads(files["config.json"])["dataset"] for rid, files in ckpts.items()}
    if not cfg.cross and len({json.dumps(d, sort_keys=True) for d in datasets.values()}) > 1:
        raise InputError("the chosen runs were trained on different datasets: "
                         + "; ".join(f"{names[r]}: {d}" for r, d in datasets.items())
                         + " (to match models of different data use --source and --target)")
    ids = list(ckpts)
    dataset = (datasets[ids[0]] if not cfg.cross else
               {"source": datasets[ids[0]], "target": datasets[ids[1]]})
    return ckpts, datasets, dataset


def _align_pairs(cfg: MatchConfig, uri: str, ckpts: dict[str, Any], datasets: dict[str, Any],
                 pairs: list[tuple[str, str]], test: dict[str, np.ndarray] | None
                 ) -> dict[tuple[str, str], Any]:
    """`align_pair` on every ordered pair, as parallel Ray tasks (one CPU each)."""
    import ray

    from flowtopo.runtime import init_ray

    init_ray(cfg.address, uri)
    refs = {rid: ray.put(files) for rid, files in ckpts.items()}
    task = ray.remote(num_cpus=1)(align_pair)
    first = next(iter(ckpts))

    def oriented(a: str) -> dict[str, np.ndarray] | None:
        if test is None or a == first:
            return test
        return {"source": test["target"], "target": test["source"],
                **({"labels": test["labels"]} if "labels" in test else {})}

    futures = [task.remote(refs[a], refs[b], datasets[a], cfg.method, cfg.transform,
                           list(cfg.baselines), cfg.seed, datasets[b], oriented(a))
               for a, b in pairs]
    return dict(zip(pairs, ray.get(futures), strict=True))


def _record_match(cfg: MatchConfig, client: Any, exp_id: str, runs: list[Any],
                  names: dict[str, str], results: dict[tuple[str, str], Any], hub: str | None,
                  dataset: dict[str, Any]) -> MatchSummary:
    """The match's parent run and one child run per pair in MLflow; return the summary."""
    from flowtopo.tracking import log_params, provenance_tags, run_lifecycle

    exp_name = client.get_experiment(exp_id).name
    match_id = f"match-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    tags = {"flowtopo.kind": "match", "match_id": match_id, "method": cfg.method,
            "runs": ",".join(names), "cross": str(cfg.cross).lower()}
    if cfg.cross:
        tags.update(source_experiment=exp_name, target_experiment=client.get_experiment(
            runs[1].info.experiment_id).name)
    sweeps = sorted({r.data.tags["sweep_id"] for r in runs if r.data.tags.get("sweep_id")})
    if sweeps:  # the sweep(s) the matched models came from
        tags["sweep_id"] = ",".join(sweeps)
    parent = client.create_run(exp_id, run_name=match_id, tags={**tags, **provenance_tags()})
    pid = parent.info.run_id
    with run_lifecycle(client, pid), tempfile.TemporaryDirectory() as tmp:  # never RUNNING
        log_params(client, pid, {"method": cfg.method, "transform": cfg.transform,
                                 "seed": cfg.seed, "baselines": ",".join(cfg.baselines),
                                 "dataset": json.dumps(dataset)})
        pair_rows = [_record_pair(client, exp_id, pid, a, b, names, res, cfg,
                                  Path(tmp)) for (a, b), res in results.items()]
        if hub is not None:  # every cycle through the hub is the identity: not measured
            pair_rows += _record_composed(client, exp_id, pid, hub, names, results, cfg)
            cycles: list[CycleRow] = []
        else:
            cycles = _cycles(results, names)
        summary = _summary(match_id, pid, names, pair_rows, cycles, cfg, dataset)
        summary.strategy, summary.alignments = cfg.strategy, len(results)
        summary.hub = None if hub is None else names[hub]
        _record_parent(client, pid, summary, Path(tmp))
    return summary


def resolve_ref(client: Any, cfg: MatchConfig, ref: str, flag: str) -> Any:
    """The finished run ``EXPERIMENT:RUN``, or the best run of ``EXPERIMENT`` by ``cfg.metric``.

    Raises:
        InputError: unknown experiment or run, a run of another experiment or not FINISHED,
            an experiment with no finished trial runs.

    """
    from mlflow.exceptions import MlflowException

    from flowtopo.pipeline.best import best_priors
    from flowtopo.tracking import find_experiment

    name, _, rid = ref.partition(":")
    exp = find_experiment(client, name)
    if not rid:
        rows = best_priors(name, tracking_uri=cfg.tracking_uri, metric=cfg.metric, top=1)
        if not rows:
            raise InputError(f"{flag}: experiment {name!r} has no finished trial runs")
        rid = min(rows, key=lambda r: r[cfg.metric])["run_id"]
    try:
        run = client.get_run(rid)
    except MlflowException:
        raise InputError(f"{flag}: no MLflow run {rid!r}") from None
    if run.info.experiment_id != exp.experiment_id:
        raise InputError(f"{flag}: run {rid} is not in experiment {name!r}")
    if run.info.status != "FINISHED":
        raise InputError(f"{flag}: run {rid} is {run.info.status}, not FINISHED (no checkpoint)")
    return run


def read_paired_test(cfg: MatchConfig) -> dict[str, np.ndarray] | None:
    """The paired test embeddings of a cross match, or None when none were given.

    Raises:
        InputError: only one side given, unreadable files, row counts that differ.

    """
    from flowtopo.data import read_array_file

    if cfg.test_source is None and cfg.test_target is None:
        if cfg.test_labels is not None:
            raise InputError("--test-labels needs --test-source and --test-target")
        return None
    if cfg.test_source is None or cfg.test_target is None:
        raise InputError("--test-source and --test-target go together (paired rows)")
    out = {"source": read_array_file(str(cfg.test_source))[0],
           "target": read_array_file(str(cfg.test_target))[0]}
    if cfg.test_labels is not None:
        out["labels"] = np.asarray(read_array_file(str(cfg.test_labels))[0]).reshape(-1)
    sizes = {k: len(v) for k, v in out.items()}
    if len(set(sizes.values())) > 1:
        raise InputError(f"paired test files must have the same number of rows, got {sizes}")
    return out


def _short_name(run: Any) -> str:
    tags = run.data.tags
    return f"{tags.get('family', '?')}-s{tags.get('seed', '?')}-{run.info.run_id[:6]}"


def _record_pair(client: Any, exp_id: str, parent_id: str, a: str, b: str,
                 names: dict[str, str], res: dict[str, Any], cfg: MatchConfig,
                 tmp: Path) -> PairRow:
    """One MLflow run for the ordered pair (a -> b): map, node pairs, scores, pictures."""
    from flowtopo.matching.plot import plot_match
    from flowtopo.tracking import log_metrics

    run = client.create_run(exp_id, run_name=f"{names[a]} -> {names[b]}", tags={
        "mlflow.parentRunId": parent_id, "flowtopo.kind": "match-pair", "source_run": a,
        "target_run": b, "method": cfg.method})
    rid = run.info.run_id
    scores = res["scores"]
    log_metrics(client, rid, {f"{m}_{k}": v for m, sc in scores.items() for k, v in sc.items()
                              if np.isfinite(v)})
    row = PairRow(source=a, target=b, source_name=names[a], target_name=names[b], run_id=rid,
                  scores=scores, seconds=res["seconds"])
    if "error" in res:
        row.error = res["error"]
        client.set_tag(rid, "error", res["error"][:4000])
        # the scores of what did run (the baselines, the oracle), read back by the report
        client.log_dict(rid, {"scores": scores, "error": row.error, "source_run": a,
                              "target_run": b}, "pair.json")
        client.set_terminated(rid, "FAILED")
        return row
    ar = res["result"]
    detail = {"matrix": ar.matrix.tolist(), "offset": ar.offset.tolist(),
              "node_pairs": [list(map(int, p)) for p in ar.node_pairs], "cost": float(ar.cost),
              "ambiguous": bool(ar.ambiguous), "candidates": len(ar.candidates),
              "transform": ar.transform_kind, "fit_kl": ar.fit_kl, "poor_fit": ar.poor_fit,
              "fit_reason": ar.fit_reason, "round_trip": ar.round_trip,
              "select": ar.info.get("select"),
              "fit_check": ar.fit_check.to_dict() if ar.fit_check is not None else None}
    checks = {"fit_kl": ar.fit_kl, "round_trip": ar.round_trip,
              "c2st_excess": ar.fit_check.excess if ar.fit_check is not None else None}
    log_metrics(client, rid, {k: v for k, v in checks.items() if v is not None})
    if ar.poor_fit:
        client.set_tag(rid, "poor_fit", ar.fit_reason)
    if ar.source_tree is not None and ar.target_tree is not None:
        detail["source_tree"] = json.loads(ar.source_tree.to_json())
        detail["target_tree"] = json.loads(ar.target_tree.to_json())
    row = row.model_copy(update=detail)
    client.log_dict(rid, {**detail, "scores": scores, "source_run": a, "target_run": b},
                    "pair.json")
    if res["test_source"] is not None:  # an unscored cross match has no paired rows to draw
        picture = plot_match(ar, res["z_source"], res["z_target"], res["test_source"],
                             res["test_target"], res["y_test"], tmp / f"{rid}.png",
                             titles=(names[a], names[b]))
        client.log_artifact(rid, str(picture), "pictures")
        row.picture = f"pictures/{picture.name}"
    client.set_terminated(rid, "FINISHED")
    return row


def _record_composed(client: Any, exp_id: str, parent_id: str, hub: str,
                     names: dict[str, str], results: dict[tuple[str, str], dict[str, Any]],
                     cfg: MatchConfig) -> list[PairRow]:
    """Compose the pairs not aligned directly through ``hub``; one MLflow run each.

    Scored like direct pairs on the paired held-out split (each model's test latents come
    from its own leg); a pair composed from a flagged leg is flagged, one composed from a leg
    that failed or cannot be inverted fails with that reason.
    """
    from flowtopo.matching import align
    from flowtopo.paired_scores import translation_scores
    from flowtopo.tracking import log_metrics

    legs = {a: res for (a, _), res in results.items()}
    composed = compose_through_hub({a: (r["result"].matrix, r["result"].offset)
                                    for a, r in legs.items() if "result" in r}, hub)
    any_leg = next(iter(legs.values()))
    test = {hub: any_leg["test_target"], **{a: r["test_source"] for a, r in legs.items()}}
    rows: list[PairRow] = []
    for a in names:
        for b in names:
            if a == b or b == hub:
                continue
            run = client.create_run(exp_id, run_name=f"{names[a]} -> {names[b]}", tags={
                "mlflow.parentRunId": parent_id, "flowtopo.kind": "match-pair",
                "source_run": a, "target_run": b, "method": cfg.method,
                "composed_via": names[hub]})
            rid = run.info.run_id
            row = PairRow(source=a, target=b, source_name=names[a], target_name=names[b],
                          run_id=rid, composed_via=names[hub])
            failed = [x for x in (a, b) if x != hub and "result" not in legs[x]]
            cm = composed.get((a, b))
            if failed or cm is None or isinstance(cm, InputError):
                why = (f"{names[failed[0]]} -> {names[hub]} failed: {legs[failed[0]]['error']}"
                       if failed else str(cm))
                row.error = f"composed through {names[hub]}: {why}"
                client.set_tag(rid, "error", row.error[:4000])
                client.log_dict(rid, row.model_dump(include={"scores", "error", "composed_via"}),
                                "pair.json")
                client.set_terminated(rid, "FAILED")
                rows.append(row)
                continue
            za, zb, y = test[a], test[b], any_leg["y_test"]
            oracle = align(za, zb, method="oracle", pairs=(za, zb), transform=cfg.transform)
            row.scores = {cfg.method: translation_scores(za, zb, cm.transform, y),
                          "oracle": translation_scores(za, zb, oracle.transform, y)}
            flagged = [(x, legs[x]["result"]) for x in (a, b) if x != hub
                       and legs[x]["result"].poor_fit]
            row.matrix, row.offset = cm.matrix.tolist(), cm.offset.tolist()
            row.legs, row.poor_fit = list(cm.legs), bool(flagged)
            row.fit_reason = (f"composed through a flagged leg ({names[flagged[0][0]]} -> "
                              f"{names[hub]}: {flagged[0][1].fit_reason})" if flagged else None)
            log_metrics(client, rid, {f"{m}_{k}": v for m, sc in row.scores.items()
                                      for k, v in sc.items() if np.isfinite(v)})
            if row.fit_reason is not None:
                client.set_tag(rid, "poor_fit", row.fit_reason)
            client.log_dict(rid, row.model_dump(include={
                "matrix", "offset", "legs", "poor_fit", "fit_reason", "fit_kl", "ambiguous",
                "scores", "composed_via"}), "pair.json")
            client.set_terminated(rid, "FINISHED")
            rows.append(row)
    return rows


def _cycles(results: dict[tuple[str, str], dict[str, Any]],
            names: dict[str, str]) -> list[CycleRow]:
    """Cycle error of every ordered triple whose three pairs aligned (on a's test latents)."""
    from flowtopo.paired_scores import cycle_error

    out = []
    for a, b, c in itertools.permutations(names, 3):
        legs = [results.get(p, {}).get("result") for p in ((a, b), (b, c), (c, a))]
        if all(leg is not None for leg in legs):
            err = cycle_error(results[(a, b)]["test_source"], [leg.transform for leg in legs])
            out.append(CycleRow(cycle=[names[a], names[b], names[c]], error=err))
    return out


def _summary(match_id: str, pid: str, names: dict[str, str], rows: list[PairRow],
             cycles: list[CycleRow], cfg: MatchConfig, dataset: dict[str, Any]) -> MatchSummary:
    """Runs, pairs, score matrix, cycles, warnings (strategy, alignments and hub set after)."""
    ids = list(names)
    matrix = [[None if a == b else next(
        (r.scores.get(cfg.method, {}).get("r2") for r in rows
         if r.source == a and r.target == b), None) for b in ids] for a in ids]
    ok = [r for r in rows if r.ok]
    mean = {m: float(np.mean([r.scores[m]["r2"] for r in rows if m in r.scores]))
            for m in (cfg.method, "oracle", *cfg.baselines)
            if any(m in r.scores for r in rows)}
    return MatchSummary(
        match_id=match_id, parent_run_id=pid, method=cfg.method, transform=cfg.transform,
        dataset=dataset, runs=[RunRef(run_id=r, name=n) for r, n in names.items()],
        r2_matrix=matrix, mean_r2=mean, pairs=rows, cycles=cycles,
        failed_pairs=len(rows) - len(ok), poor_fit_pairs=sum(r.poor_fit for r in ok),
        warnings=_warnings(ok, cycles))


CYCLE_WARN = 0.1
"""Cycle error (relative to the latents' variance) above which a triple is called out."""


def _warnings(ok: list[PairRow], cycles: list[CycleRow]) -> list[str]:
    """Oracle-free doubts about the maps: poor distribution fit, inconsistent cycles."""
    out = [f"{r.source_name} -> {r.target_name}: the map does not carry one latent "
           f"distribution onto the other ({r.fit_reason}); do not trust it"
           for r in ok if r.poor_fit]
    out += [f"cycle {' -> '.join(c.cycle)}: error {c.error:.3g} > {CYCLE_WARN}; "
            "the maps of this triple disagree" for c in cycles if c.error > CYCLE_WARN]
    return out


def _record_parent(client: Any, pid: str, summary: MatchSummary, tmp: Path) -> None:
    from flowtopo.matching.plot import plot_score_matrix
    from flowtopo.tracking import log_metrics

    metrics = {f"mean_r2_{m}": v for m, v in summary.mean_r2.items()}
    metrics["failed_pairs"] = float(summary.failed_pairs)
    metrics["poor_fit_pairs"] = float(summary.poor_fit_pairs)
    if summary.cycles:
        metrics["max_cycle_error"] = max(c.error for c in summary.cycles)
        metrics["mean_cycle_error"] = float(np.mean([c.error for c in summary.cycles]))
    log_metrics(client, pid, metrics)
    # the summary without its pairs (each pair's detail is in its own run's pair.json)
    client.log_dict(pid, {k: v for k, v in summary.to_json().items() if k != "pairs"},
                    "scores.json")
    picture = plot_score_matrix(summary.r2_matrix, [r.name for r in summary.runs],
                                tmp / "score_matrix.png", title=f"{summary.method} R²")
    client.log_artifact(pid, str(picture), "pictures")
