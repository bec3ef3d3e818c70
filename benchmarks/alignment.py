"""Alignment: tree matching vs the baselines, side by side in one run.

1. Synthetic latents (hierarchical mixtures with asymmetric trees) related by a random affine
   map after a mild volume-preserving warp (`flowtopo.data.warped_pair`: exact densities);
   median over seeds of R², top-1, MRR, label transfer, seconds, and the
   success rate (R² >= 0.9), per method.
2. Trained FlowAE pairs on scikit-learn's digits (two seeds of a coupling FlowAE; a coupling
   vs a continuous FlowAE), aligned on disjoint halves, scored on the paired test split;
   median over seeds and success rate, as for the synthetic settings.
3. Scaling of tree matching with n; where Gromov-Wasserstein (full, not subsampled) runs out.

Run: ``python -m benchmarks.alignment [--seeds 10] [--quick] [--jobs 2]``. ``--jobs N``
(`make bench` runs 2) runs the synthetic seeds N at a time, trains the digits FlowAEs N at a
time and aligns the digits pairs N at a time, one process and one torch thread each: those
tables' seconds are then one thread's, with the other processes beside it. The scaling part
(its seconds are a target: 100k points < 30 s) still runs alone in this process.
"""

from __future__ import annotations

import argparse
import time
import warnings
from typing import Any

import numpy as np

from benchmarks._util import header, in_processes
from flowtopo.data import warped_pair
from flowtopo.errors import InputError
from flowtopo.matching import LatentSpace, align
from flowtopo.paired_scores import translation_scores

SETTINGS = {
    "k=2, 5 clusters": (2, [[3, 1], [2, [1, 1]]]),
    "k=3, 5 clusters": (3, [[3, 1], [2, [1, 1]]]),
    "k=5, 8 clusters": (5, [[3, 1], [2, [1, 1]], [1, [2, 1]]]),
}
METHODS = ["tree", "cluster_qap", "gw", "identity", "oracle"]


def synthetic(k: int, shape: list, seed: int, n: int = 5000):  # noqa: ANN201
    p = warped_pair(shape, k, seed=seed, warp=0.1, n=n)
    return (LatentSpace(p.source, p.source_log_prob), LatentSpace(p.target, p.target_log_prob),
            p.test_source, p.test_target, p.test_labels)


def run_method(method: str, src, tgt, zs, zt, labels) -> dict[str, float]:  # noqa: ANN001
    opts = {"pairs": (zs, zt)} if method == "oracle" else {}
    t = time.perf_counter()
    try:
        res = align(src, tgt, method=method, **opts)
    except InputError:
        return {"r2": float("nan"), "top1": float("nan"), "mrr": float("nan"),
                "label_transfer": float("nan"), "seconds": time.perf_counter() - t,
                "poor_fit": 0.0}
    sec = time.perf_counter() - t
    return {**translation_scores(zs, zt, res.transform, labels), "seconds": sec,
            "poor_fit": float(res.poor_fit)}


def synthetic_seed(setting: str, seed: int) -> dict[str, dict[str, float]]:
    """Every method's row on one seed of one synthetic setting."""
    k, shape = SETTINGS[setting]
    src, tgt, zs, zt, labels = synthetic(k, shape, seed)
    return {m: run_method(m, src, tgt, zs, zt, labels) for m in METHODS}


def synthetic_rows(seeds: int, jobs: int) -> dict[str, list[dict[str, dict[str, float]]]]:
    """`synthetic_seed` of every setting and seed (in ``jobs`` processes when > 1)."""
    tasks = [(name, seed) for name in SETTINGS for seed in range(seeds)]
    done = list(in_processes(synthetic_seed, tasks, jobs))
    out: dict[str, list[dict[str, dict[str, float]]]] = {name: [] for name in SETTINGS}
    for (name, _), rows in zip(tasks, done, strict=True):
        out[name].append(rows)
    return out


def table(rows: dict[str, list[dict[str, float]]]) -> None:
    print("| method | R² | top-1 | MRR | label transfer | seconds | success (R² ≥ 0.9) | "
          "errors | flagged poor fit (wrong maps flagged) |")
    print("|---|---|---|---|---|---|---|---|---|")
    keys = ("r2", "top1", "mrr", "label_transfer", "seconds")
    for method, rs in rows.items():
        med = {k: float(np.nanmedian([r[k] for r in rs])) for k in keys}
        ok = np.mean([r["r2"] >= 0.9 for r in rs])  # NaN (an error) counts as a failure
        errors = sum(np.isnan(r["r2"]) for r in rs)
        flagged = sum(r.get("poor_fit", 0.0) > 0 for r in rs)
        caught = sum(r.get("poor_fit", 0.0) > 0 for r in rs if r["r2"] < 0.9)
        wrong = sum(r["r2"] < 0.9 for r in rs)
        name = method + (" (supervised)" if method == "oracle" else "")
        print(f"| {name} | {med['r2']:.4f} | {med['top1']:.3f} | {med['mrr']:.3f} | "
              f"{med['label_transfer']:.3f} | {med['seconds']:.2f} | {ok:.0%} | {errors} | "
              f"{flagged} ({caught} of {wrong}) |")


DIGITS_PRIOR = {"name": "hierarchical_gmm", "params": {"branching": [10], "separation": 6.0}}
DIGITS_K = 4


def _digits_model(flow: str, seed: int, dim: int):  # noqa: ANN202
    from flowtopo.model import FlowAE

    params = ({"layers": 6, "hidden": 128, "seed": seed} if flow == "coupling" else
              {"field": "bipartite", "hidden": 32, "method": "split", "step_size": 0.25})
    prior = {"name": DIGITS_PRIOR["name"], "params": {**DIGITS_PRIOR["params"], "seed": seed}}
    return FlowAE.from_config({"dim": dim, "k": DIGITS_K, "noise_std": 0.5, "prior": prior,
                               "flow": {"name": flow, "params": params}})


def _leaf_purity(tree, y: np.ndarray) -> float:  # noqa: ANN001
    """Mass-weighted majority-label share of the leaves; ``y``: the labels of the tree's points."""
    shares = [np.bincount(y[n.members]).max() / len(n.members) for n in tree.leaves()]
    masses = [n.mass for n in tree.leaves()]
    return float(np.average(shares, weights=masses))


def _train_one(flow: str, seed: int, epochs: int) -> tuple[dict[str, Any], float, float]:
    """One digits FlowAE trained by MLE: (its state dict, test NLL, training seconds)."""
    import torch

    from flowtopo.data import load_dataset
    from flowtopo.train import TrainConfig, train

    ds = load_dataset("digits")
    torch.manual_seed(seed)
    t = time.perf_counter()
    res = train(_digits_model(flow, seed, ds.dim), ds.x_train, ds.x_test,
                TrainConfig(epochs=epochs, lr=2e-3, regularizer="mle", seed=seed))
    return res.model.state_dict(), res.test["test_nll"], time.perf_counter() - t


def _digits_align(s: int, flow: str, source_state: dict[str, Any],
                  other_state: dict[str, Any]) -> tuple[dict[str, dict[str, float]],
                                                         float | None, float | None]:
    """Every method on one digits pair: the coupling FlowAE of seed 2s -> ``flow``'s other.

    Returns:
        (method -> scores, the source tree's leaf purity (tree method), the oracle's fit KL).

    """
    from flowtopo.data import load_dataset
    from flowtopo.model_alignment import align_models

    ds = load_dataset("digits")
    assert ds.y_train is not None and ds.y_test is not None  # digits has labels
    source = _digits_model("coupling", 2 * s, ds.dim)
    source.load_state_dict(source_state)
    other = _digits_model(flow, 2 * s + 1 if flow == "coupling" else s, ds.dim)
    other.load_state_dict(other_state)
    source, other = source.eval(), other.eval()
    half = len(ds.x_train) // 2
    za, zb = source.latents(ds.x_test), other.latents(ds.x_test)
    # each model's half, with its exact density (for the fit check of every method)
    sa = LatentSpace(source.latents(ds.x_train[:half]), prior=source.prior)
    sb = LatentSpace(other.latents(ds.x_train[half:]), prior=other.prior)
    rows: dict[str, dict[str, float]] = {}
    purity = oracle_kl = None
    for method in METHODS:
        t = time.perf_counter()
        try:
            if method == "tree":
                res = align_models(source, other, ds.x_train, seed=s)
                purity = _leaf_purity(res.source_tree, ds.y_train[res.info["source_rows"]])
            elif method == "oracle":
                res = align(sa, sb, method="oracle", pairs=(za, zb))
                oracle_kl = res.fit_kl
            else:
                res = align(sa, sb, method=method, seed=s)
            sc = translation_scores(za, zb, res.transform, ds.y_test)
            sc["poor_fit"] = float(res.poor_fit)
        except InputError:
            sc = {"r2": float("nan"), "top1": float("nan"), "mrr": float("nan"),
                  "label_transfer": float("nan"), "poor_fit": 0.0}
        rows[method] = {**sc, "seconds": time.perf_counter() - t}
    return rows, purity, oracle_kl


def digits_pairs(epochs: int, seeds: int, jobs: int = 1) -> None:
    """Per seed s: coupling FlowAEs with seeds 2s and 2s+1, a continuous one with seed s.

    Pairs (coupling 2s -> coupling 2s+1) and (coupling 2s -> continuous s) are aligned on
    disjoint halves of the training split and scored on the paired test split. ``jobs`` > 1:
    the models are trained, then the pairs aligned, that many at a time (one process and one
    thread each).
    """
    kinds = {"coupling -> coupling (seeds)": "coupling", "coupling -> continuous": "continuous"}
    wanted = [m for s in range(seeds) for m in (("coupling", 2 * s), ("coupling", 2 * s + 1),
                                                  ("continuous", s))]
    got = in_processes(_train_one, [(f, s, epochs) for f, s in wanted], jobs)
    trained = dict(zip(wanted, got, strict=True))
    pairs = [(kind, (s, flow, trained["coupling", 2 * s][0],
                     trained[flow, 2 * s + 1 if flow == "coupling" else s][0]))
             for s in range(seeds) for kind, flow in kinds.items()]
    done = list(in_processes(_digits_align, [task for _, task in pairs], jobs))
    rows: dict[str, dict[str, list[dict[str, float]]]] = {
        kind: {m: [] for m in METHODS} for kind in kinds}
    for (kind, _), (scores, _, _) in zip(pairs, done, strict=True):
        for m in METHODS:
            rows[kind][m].append(scores[m])
    purity = [p for _, p, _ in done if p is not None]
    oracle_kl = [kl for _, _, kl in done if kl is not None]
    print(f"label purity of the source model's leaves (mass-weighted share of the majority "
          f"digit; 0.1 = no class structure): median {np.median(purity):.2f}")
    print(f"fit KL of the supervised oracle's map (symmetric KL between the mapped source and "
          f"the target latents, nats; ~0 when an affine map relates the two distributions): "
          f"median {np.median(oracle_kl):.1f}")
    for flow in ("coupling", "continuous"):
        models = [trained[m] for m in wanted if m[0] == flow]
        print(f"{flow} FlowAEs: median test NLL {np.median([r[1] for r in models]):.3f} nats/dim, "
              f"median training {np.median([r[2] for r in models]):.0f} s ({len(models)} models)")
    for kind in kinds:
        print(f"\n### {kind}, median over {seeds} seeds")
        table(rows[kind])


def scaling(ns: list[int]) -> None:
    print("\n| n | tree seconds | tree R² | full GW |")
    print("|---|---|---|---|")
    for n in ns:
        src, tgt, zs, zt, _ = synthetic(3, SETTINGS["k=3, 5 clusters"][1], 0, n=n)
        t = time.perf_counter()
        res = align(src, tgt, method="tree")
        sec = time.perf_counter() - t
        r2 = translation_scores(zs, zt, res.transform)["r2"]
        gib = 3 * n * n * 8 / 2**30
        if n <= 2000:
            t = time.perf_counter()
            g = align(src, tgt, method="gw", n_sub=n)
            gw = (f"{time.perf_counter() - t:.1f} s, R² "
                  f"{translation_scores(zs, zt, g.transform)['r2']:.3f}")
        else:
            gw = f"not run: needs ~{gib:.1f} GiB for its three n x n matrices"
            gw += " and O(n³) time per iteration" if n < 50000 else " (beyond this machine)"
        print(f"| {n} | {sec:.1f} | {r2:.4f} | {gw} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--quick", action="store_true", help="2 seeds, no digits, small scaling")
    ap.add_argument("--jobs", type=int, default=1,
                    help="synthetic seeds run and digits FlowAEs trained at once, one process "
                         "and one thread each")
    ap.add_argument("--parts", default="synthetic,digits,scaling",
                    help="comma-separated subset of synthetic,digits,scaling")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    warnings.filterwarnings("ignore")
    header("alignment: tree matching vs baselines")
    seeds = 2 if args.quick else args.seeds
    per_seed = synthetic_rows(seeds, args.jobs) if "synthetic" in parts else {}
    for name, seeds_rows in per_seed.items():
        print(f"\n## synthetic {name}, affine map after a 0.1 tanh shear, "
              f"median over {seeds} seeds")
        if args.jobs > 1:
            print(f"(seeds run {args.jobs} at a time, one thread each: seconds are one "
                  "thread's)")
        table({m: [rows[m] for rows in seeds_rows] for m in METHODS})
    if not args.quick and "digits" in parts:
        print(f"\n## trained FlowAE pairs on digits (k={DIGITS_K}, prior {DIGITS_PRIOR}, MLE "
              f"{args.epochs} epochs, disjoint halves)")
        if args.jobs > 1:
            print(f"(FlowAEs trained and pairs aligned {args.jobs} at a time, one thread "
                  "each: training and alignment seconds are one thread's)")
        digits_pairs(args.epochs, seeds, args.jobs)
    if "scaling" in parts:
        scaling([1000, 10000] if args.quick else [1000, 10000, 100000])


if __name__ == "__main__":
    main()
