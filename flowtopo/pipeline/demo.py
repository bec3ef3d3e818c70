"""``flowtopo demo``: the main job end to end on one machine, through the real engines.

1. A synthetic hierarchical dataset with a known tree (6-D data, 2-D information space).
2. A sweep on local Ray Tune + Optuna (grid over the prior families, each at fixed
   parameters), recorded in a sqlite MLflow store under ``--out``; the seeds phase retrains
   each family with a second seed, so every family has two models.
3. Families ranked by held-out adversarial loss from MLflow (`flowtopo.pipeline.best`), with
   NLL and two-sample accuracy beside it (training is exact maximum likelihood by default; a
   discriminator is trained alongside in every mode, so the adversarial loss is recorded).
4. ``flowtopo match`` on the best family's two models: both ordered pairs as Ray tasks,
   disjoint halves of the training split, exact prior densities, scored on the paired test
   split against the supervised oracle and the unsupervised baselines.
5. ``flowtopo report`` writes the static HTML report; ``summary.json`` sums it up.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from flowtopo.pipeline.match_result import Scores


@dataclass
class DemoConfig:
    """What the demo runs."""

    families: list[str] = field(default_factory=lambda: ["gmm", "hierarchical_gmm", "flow_prior"])
    seeds: int = 2
    epochs: int = 60
    n: int = 5000
    regularizer: str = "mle"
    out: Path = Path("flowtopo-runs/demo")
    baselines: list[str] = field(default_factory=lambda: ["cluster_qap", "gw"])
    max_concurrent_trials: int = 2


class FamilyRank(BaseModel):
    """One prior family's held-out measures, averaged over its seeds' runs."""

    model_config = ConfigDict(extra="forbid")
    family: str
    runs: int
    adv_loss: float
    nll: float
    c2st: float


class TreeOutcome(BaseModel):
    """What tree matching did on the best family's first pair (``error`` when it failed)."""

    model_config = ConfigDict(extra="forbid")
    error: str | None = None
    ambiguous: bool | None = None
    node_pairs: list[list[int]] | None = None
    candidates: int | None = None
    poor_fit: bool = False
    fit_reason: str | None = None
    mean_r2: float | None = None


class DemoSummary(BaseModel):
    """What `run_demo` returns; `to_json` is ``summary.json``."""

    model_config = ConfigDict(extra="forbid")
    ranking: list[FamilyRank]
    best_family: str
    scores: Scores
    tree: TreeOutcome
    sweep_id: str
    trials: int
    failed: int
    tracking_uri: str
    report: str
    seconds: float
    out: str

    def to_json(self) -> dict[str, Any]:
        """The JSON form (``summary.json``)."""
        return self.model_dump(mode="json")


PRIOR_PARAMS: dict[str, dict[str, Any]] = {
    "gmm": {"components": 8},
    "hierarchical_gmm": {"depth": 2, "branching": [2, 2]},
}


def demo_sweep(cfg: DemoConfig) -> dict[str, Any]:
    """The demo's sweep YAML as a dict: one grid point per family, at fixed parameters.

    Raises:
        InputError: an unknown family, or one that needs more latent dims than k = 2.

    """
    from flowtopo.errors import InputError
    from flowtopo.priors import PRIORS

    priors = {}
    for family in cfg.families:
        if family not in PRIORS:
            raise InputError(f"unknown prior family {family!r}; valid: {', '.join(PRIORS)}")
        fixed = {k: v for k, v in PRIORS[family](2).params.items() if not isinstance(v, list)}
        priors[family] = {**fixed, **PRIOR_PARAMS.get(family, {})}
    out = Path(cfg.out).resolve()
    return {
        "name": "demo",
        "dataset": {"name": "hierarchical", "options": {
            "n": cfg.n, "dim": 6, "k": 2, "seed": 0, "shape": [[2, 1], [1, [1, 1]]]}},
        "model": {"k": 2, "noise_std": 0.5, "flow": {"name": "coupling", "params": {}}},
        "search": {"priors": priors, "lr": [3e-3, 3e-3], "batch_size": [256]},
        "regularizer": cfg.regularizer,
        "train": {"epochs": cfg.epochs},
        "seeds": cfg.seeds, "num_samples": len(priors), "sampler": "grid",
        "max_concurrent_trials": cfg.max_concurrent_trials, "max_failures": 0,
        "metric": "val_adv_loss", "mode": "min",
        "mlflow": {"experiment": "demo", "tracking_uri": f"sqlite:///{out / 'mlflow.db'}"},
    }


def run_demo(cfg: DemoConfig, log: Any = print) -> DemoSummary:
    """Run the demo; ``log`` receives strings or rich renderables. Returns the summary."""
    from flowtopo.data import load_dataset
    from flowtopo.errors import InputError
    from flowtopo.pipeline.best import best_priors
    from flowtopo.pipeline.match import MatchConfig, run_match
    from flowtopo.pipeline.report import build_report
    from flowtopo.sweep.runner import run_sweep
    from flowtopo.sweep.spec import SweepSpec
    from flowtopo.yaml_io import parse_spec

    t0 = time.perf_counter()
    out = Path(cfg.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    spec = parse_spec(json.dumps(demo_sweep(cfg)), SweepSpec, "demo")  # one line if bad
    ds = load_dataset(spec.dataset.name, **spec.dataset.options)
    log(f"dataset: hierarchical, D=6, k=2, {len(ds.x_train)} train / {len(ds.x_test)} test, "
        f"exact test NLL {ds.true_nll_per_dim():.3f} nats/dim, "
        f"{len([n for n in ds.tree if ds.tree.out_degree(n) == 0])} true clusters")
    log(f"sweep: {len(cfg.families)} prior families x {cfg.seeds} seeds on local Ray, "
        f"MLflow {spec.mlflow.tracking_uri}")
    sweep = run_sweep(spec, storage_path=out / "ray")
    uri = sweep.tracking_uri
    rows = best_priors("demo", tracking_uri=uri, top=cfg.seeds)
    ranking = []
    for family in dict.fromkeys(r["group"] for r in rows):
        mine = [r for r in rows if r["group"] == family]
        ranking.append(FamilyRank(family=family, runs=len(mine),
                                  **{m: sum(r[f"best_{m}"] for r in mine) / len(mine)
                                     for m in ("adv_loss", "nll", "c2st")}))
    ranking.sort(key=lambda r: r.adv_loss)
    if not ranking:
        raise InputError("the demo sweep finished no trial (see the MLflow runs' error tags)")
    best = ranking[0].family
    log(f"best prior family by held-out adversarial loss: {best}")
    scores: Scores = {}
    try:
        match = run_match(MatchConfig(experiment="demo", family=best, top=2,
                                      baselines=list(cfg.baselines), tracking_uri=uri,
                                      json_out=out / "match.json"), log=log)
        first = match.pairs[0]
        scores = first.scores
        tree = (TreeOutcome(error=first.error) if not first.ok else
                TreeOutcome(ambiguous=first.ambiguous, node_pairs=first.node_pairs,
                            candidates=first.candidates, poor_fit=first.poor_fit,
                            fit_reason=first.fit_reason))
        tree.mean_r2 = match.mean_r2
    except InputError as err:
        tree = TreeOutcome(error=str(err))
        log(f"matching failed: {err}")
    report = build_report("demo", out / "report", tracking_uri=uri)
    summary = DemoSummary(ranking=ranking, best_family=best, scores=scores, tree=tree,
                          sweep_id=sweep.sweep_id, trials=sweep.trials, failed=sweep.failed,
                          tracking_uri=uri, report=str(report),
                          seconds=time.perf_counter() - t0, out=str(out))
    (out / "summary.json").write_text(json.dumps(summary.to_json(), indent=2))
    return summary
