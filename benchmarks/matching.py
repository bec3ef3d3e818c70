"""Matching many models: all ordered pairs against a hub (``flowtopo match --strategy``).

N FlowAEs trained on one data set (different seeds, the pipeline test's setting: a 6-D
hierarchical mixture, k = 2, a GMM prior), then for N in ``--models``:

- ``all-pairs``: ``align(method="tree", transform="affine")`` on every ordered pair, each on
  the two models' DISJOINT halves of the training split (as a ``flowtopo match`` task does);
- ``hub``: the same alignment of each model to model 0 only (N - 1 alignments), every other
  ordered pair composed through the hub (`flowtopo.pipeline.hub.compose_through_hub`).

Measured side by side in one run: alignments, wall time (one process, so the ratio is the
work's, not Ray's scheduling), the mean R² of the maps on the paired test split (the same
pairs under both strategies), and the cycle error of all-pairs' triples. Composed maps are
cycle-consistent by construction (every cycle through the hub is the identity), so their
cycle error says nothing and is not reported as a win; the R² on the pairs composed is.

Target (issue 18): 20 models in at most 7% of all-pairs' wall time. Run:
``python -m benchmarks.matching [--models 5 10 20] [--jobs 2]`` (20 models: 380 alignments,
long; ``--jobs`` trains the models, untimed, in that many processes).
"""

from __future__ import annotations

import argparse
import itertools
import time
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from benchmarks._util import header, in_processes

if TYPE_CHECKING:
    from flowtopo.model import FlowAE

DATA = {"n": 3000, "dim": 6, "k": 2, "seed": 0, "shape": [[2, 1], [1, [1, 1]]]}


def _model() -> FlowAE:
    from flowtopo.model import FlowAE

    return FlowAE.from_config({"dim": 6, "k": 2, "noise_std": 0.5,
                               "flow": {"name": "coupling", "params": {}},
                               "prior": {"name": "gmm", "params": {"components": 8,
                                                                  "spread": 3.0,
                                                                  "scale": 0.5}}})


def _train_one(seed: int) -> dict[str, Any]:
    """The state dict of the model of ``seed`` (a ``--jobs`` worker's task)."""
    import torch

    from flowtopo.data import load_dataset
    from flowtopo.train import TrainConfig, train

    ds = load_dataset("hierarchical", **DATA)
    torch.manual_seed(seed)
    m = _model()
    train(m, ds.x_train, None, TrainConfig(epochs=20, regularizer="mle", lr=3e-3,
                                           batch_size=256, seed=seed))
    return m.state_dict()


def train_models(n: int, jobs: int = 1) -> tuple[list, object]:
    """Models of seeds 0..n-1 (untimed; ``jobs`` > 1: that many processes, one thread each)."""
    from flowtopo.data import load_dataset

    states = in_processes(_train_one, [(seed,) for seed in range(n)], jobs)
    models = []
    for state in states:
        m = _model()
        m.load_state_dict(state)
        models.append(m.eval())
    return models, load_dataset("hierarchical", **DATA)


def run(models: list, ds: object, n: int, seed: int = 0) -> dict[str, dict[str, float]]:
    from flowtopo.matching import align
    from flowtopo.model_alignment import model_spaces
    from flowtopo.paired_scores import cycle_error, translation_scores
    from flowtopo.pipeline.hub import compose_through_hub

    ms = models[:n]
    test = [m.latents(ds.x_test) for m in ms]
    y = ds.y_test

    def one(a: int, b: int) -> object:
        sa, sb, _, _ = model_spaces(ms[a], ms[b], ds.x_train, seed=seed)
        return align(sa, sb, method="tree", transform="affine", seed=seed, select="fit")

    def r2(fn: object, a: int, b: int) -> float:
        return translation_scores(test[a], test[b], fn, y)["r2"]  # type: ignore[arg-type]

    t0 = time.perf_counter()
    direct = {(a, b): one(a, b) for a, b in itertools.permutations(range(n), 2)}
    t_all = time.perf_counter() - t0
    t0 = time.perf_counter()
    legs = {a: one(a, 0) for a in range(1, n)}  # aligned again: timed on their own
    composed = compose_through_hub({a: (r.matrix, r.offset) for a, r in legs.items()}, 0)
    t_hub = time.perf_counter() - t0
    rest = [p for p in itertools.permutations(range(n), 2) if p[1] != 0]
    hub_r2 = [r2(legs[a].transform, a, 0) for a in range(1, n)] + [
        r2(composed[p].transform, *p) for p in rest if not isinstance(composed[p], Exception)]
    all_r2 = [r2(res.transform, a, b) for (a, b), res in direct.items()]
    composed_direct_r2 = [r2(direct[p].transform, *p) for p in rest]
    composed_r2 = [r2(composed[p].transform, *p) for p in rest
                   if not isinstance(composed[p], Exception)]
    triples = list(itertools.permutations(range(n), 3))
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(triples), min(200, len(triples)), replace=False)
    cyc = [cycle_error(test[a], [direct[(a, b)].transform, direct[(b, c)].transform,
                                 direct[(c, a)].transform])
           for a, b, c in (triples[i] for i in pick)]
    return {"all-pairs": {"alignments": len(direct), "seconds": t_all,
                          "mean_r2": float(np.mean(all_r2)),
                          "r2_on_composed_pairs": float(np.mean(composed_direct_r2)),
                          "cycle_error": float(np.median(cyc))},
            "hub": {"alignments": len(legs), "seconds": t_hub, "mean_r2": float(np.mean(hub_r2)),
                    "r2_on_composed_pairs": float(np.mean(composed_r2)),
                    "failed": sum(isinstance(c, Exception) for c in composed.values())}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=int, nargs="+", default=[5, 10])
    ap.add_argument("--jobs", type=int, default=1,
                    help="train the models in this many processes, one thread each (the "
                         "alignments, which are timed, still run in this one)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    header("matching many models: all ordered pairs vs a hub (flowtopo match --strategy)")
    models, ds = train_models(max(args.models), args.jobs)
    print("\n| models | strategy | alignments | seconds | time / all-pairs' | mean R² (every "
          "pair) | R² on the pairs the hub composes | median cycle error |")
    print("|---|---|---|---|---|---|---|---|")
    for n in sorted(args.models):
        out = run(models, ds, n)
        a, h = out["all-pairs"], out["hub"]
        print(f"| {n} | all-pairs | {a['alignments']} | {a['seconds']:.1f} | 1.00 | "
              f"{a['mean_r2']:.3f} | {a['r2_on_composed_pairs']:.3f} (direct) | "
              f"{a['cycle_error']:.3g} |")
        print(f"| {n} | hub | {h['alignments']} | {h['seconds']:.1f} | "
              f"{h['seconds'] / a['seconds']:.3f} | {h['mean_r2']:.3f} | "
              f"{h['r2_on_composed_pairs']:.3f} (composed; {h['failed']} failed) | "
              "0 by construction |", flush=True)


if __name__ == "__main__":
    main()
