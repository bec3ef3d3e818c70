"""Alignment: tree matching vs the baselines, side by side in one run.

1. Synthetic latents (hierarchical mixtures with asymmetric trees) related by a random affine
   map plus a mild warp; median over seeds of R², top-1, MRR, label transfer, seconds, and the
   success rate (R² >= 0.9), per method.
2. Trained FlowAE pairs on scikit-learn's digits (two seeds of a coupling FlowAE; a coupling
   vs a continuous FlowAE), aligned on disjoint halves, scored on the paired test split.
3. Scaling of tree matching with n; where Gromov-Wasserstein (full, not subsampled) runs out.

Run: ``python -m benchmarks.alignment [--seeds 10] [--quick]``.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from scipy.stats import special_ortho_group

from benchmarks._util import header
from flowtopo.data import HierarchicalMixture
from flowtopo.errors import InputError
from flowtopo.matching import LatentSpace, align
from flowtopo.metrics import translation_scores

SETTINGS = {
    "k=2, 5 clusters": (2, [[3, 1], [2, [1, 1]]]),
    "k=3, 5 clusters": (3, [[3, 1], [2, [1, 1]]]),
    "k=5, 8 clusters": (5, [[3, 1], [2, [1, 1]], [1, [2, 1]]]),
}
METHODS = ["tree", "cluster_qap", "gw", "identity", "oracle"]


def synthetic(k: int, shape: list, seed: int, n: int = 5000):  # noqa: ANN201
    rng = np.random.default_rng(seed)
    mix = HierarchicalMixture.build(shape, k, seed=k + seed, separation=10)
    a = special_ortho_group.rvs(k, random_state=k + seed) @ np.diag(rng.uniform(0.5, 2, k))
    b = 3 * rng.normal(size=k)
    a_inv, log_det = np.linalg.inv(a), np.log(abs(np.linalg.det(a)))

    def true_map(z: np.ndarray) -> np.ndarray:
        return z @ a.T + b + 0.1 * np.tanh(z[:, ::-1])

    u_s, u_t = mix.sample(n, rng)[0], mix.sample(n, rng)[0]
    test, labels = mix.sample(2000, rng)
    src = LatentSpace(u_s, mix.log_prob)
    tgt = LatentSpace(true_map(u_t), lambda y: mix.log_prob((y - b) @ a_inv.T) - log_det)
    return src, tgt, test, true_map(test), labels


def run_method(method: str, src, tgt, zs, zt, labels) -> dict[str, float]:  # noqa: ANN001
    opts = {"pairs": (zs, zt)} if method == "oracle" else {}
    t = time.perf_counter()
    try:
        res = align(src, tgt, method=method, **opts)
    except InputError:
        return {"r2": float("nan"), "top1": float("nan"), "mrr": float("nan"),
                "label_transfer": float("nan"), "seconds": time.perf_counter() - t}
    sec = time.perf_counter() - t
    return {**translation_scores(zs, zt, res.transform, labels), "seconds": sec}


def table(rows: dict[str, list[dict[str, float]]]) -> None:
    print("| method | R² | top-1 | MRR | label transfer | seconds | success (R² ≥ 0.9) | "
          "errors |")
    print("|---|---|---|---|---|---|---|---|")
    keys = ("r2", "top1", "mrr", "label_transfer", "seconds")
    for method, rs in rows.items():
        med = {k: float(np.nanmedian([r[k] for r in rs])) for k in keys}
        ok = np.mean([r["r2"] >= 0.9 for r in rs])  # NaN (an error) counts as a failure
        errors = sum(np.isnan(r["r2"]) for r in rs)
        name = method + (" (supervised)" if method == "oracle" else "")
        print(f"| {name} | {med['r2']:.4f} | {med['top1']:.3f} | {med['mrr']:.3f} | "
              f"{med['label_transfer']:.3f} | {med['seconds']:.2f} | {ok:.0%} | {errors} |")


def digits_pairs(epochs: int) -> None:
    import torch

    from flowtopo.data import load_dataset
    from flowtopo.matching import align_models
    from flowtopo.model import FlowAE
    from flowtopo.train import TrainConfig, train

    ds = load_dataset("digits")
    models = {}
    for name, flow, seed in (("coupling-s0", "coupling", 0), ("coupling-s1", "coupling", 1),
                             ("continuous-s0", "continuous", 0)):
        torch.manual_seed(seed)
        params = {"layers": 6, "hidden": 128, "seed": seed} if flow == "coupling" else {
            "hidden": 8, "rtol": 1e-4, "atol": 1e-4}
        m = FlowAE.from_config({"dim": ds.dim, "k": 4, "noise_std": 0.5,
                                "flow": {"name": flow, "params": params},
                                "prior": {"name": "gmm", "params": {"components": 12,
                                                                    "seed": seed}}})
        t = time.perf_counter()
        res = train(m, ds.x_train, ds.x_test, TrainConfig(epochs=epochs, lr=2e-3,
                                                          regularizer="mle", seed=seed))
        models[name] = res.model
        print(f"trained {name}: test NLL {res.test['test_nll']:.3f} nats/dim "
              f"({time.perf_counter() - t:.0f} s)")
    xt = torch.as_tensor(ds.x_test)
    print("\n| pair | method | R² | top-1 | MRR | label transfer | seconds |")
    print("|---|---|---|---|---|---|---|")
    for a, b in (("coupling-s0", "coupling-s1"), ("coupling-s0", "continuous-s0")):
        with torch.no_grad():
            za, zb = (models[x].encode(xt)[0].double().numpy() for x in (a, b))
        half = len(ds.x_train) // 2
        with torch.no_grad():
            fa = models[a].encode(torch.as_tensor(ds.x_train[:half]))[0].double().numpy()
            fb = models[b].encode(torch.as_tensor(ds.x_train[half:]))[0].double().numpy()
        for method in METHODS:
            t = time.perf_counter()
            try:
                if method == "tree":
                    res = align_models(models[a], models[b], ds.x_train)
                elif method == "oracle":
                    res = align(za, zb, method="oracle", pairs=(za, zb))
                else:
                    res = align(fa, fb, method=method)
                sc = translation_scores(za, zb, res.transform, ds.y_test)
                print(f"| {a} -> {b} | {method} | {sc['r2']:.3f} | {sc['top1']:.3f} | "
                      f"{sc['mrr']:.3f} | {sc['label_transfer']:.3f} | "
                      f"{time.perf_counter() - t:.1f} |")
            except InputError as err:
                print(f"| {a} -> {b} | {method} | failed: {str(err)[:90]} | | | | |")


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
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    header("alignment: tree matching vs baselines")
    seeds = 2 if args.quick else args.seeds
    for name, (k, shape) in SETTINGS.items():
        rows: dict[str, list[dict[str, float]]] = {m: [] for m in METHODS}
        for seed in range(seeds):
            src, tgt, zs, zt, labels = synthetic(k, shape, seed)
            for m in METHODS:
                rows[m].append(run_method(m, src, tgt, zs, zt, labels))
        print(f"\n## synthetic {name}, affine map + 0.1 tanh warp, median over {seeds} seeds")
        table(rows)
    if not args.quick:
        print("\n## trained FlowAE pairs on digits (k=4, gmm prior, MLE, disjoint halves)")
        digits_pairs(args.epochs)
    scaling([1000, 10000] if args.quick else [1000, 10000, 100000])


if __name__ == "__main__":
    main()
