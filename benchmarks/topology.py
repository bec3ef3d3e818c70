"""Density trees vs gudhi's ToMATo and scikit-learn's HDBSCAN, measured side by side.

Same points (a hierarchical Gaussian mixture with a known tree in k dims), n = 10k and 100k.
Ours and ToMATo get the same exact log density, the same kNN graph size and the same merge
threshold (2 nats); HDBSCAN gets the points (it estimates its own density) and the same kNN
size for its core distances (``min_samples=15``), with ``min_cluster_size`` 1% of n.
scikit-learn's default ``min_samples`` is ``min_cluster_size``: a 1,000-NN core distance at
n = 100k, a different density estimate and 80-100 s on 2 cores; that configuration is also
printed up to ``--hdbscan-default-max`` points (10k). Reported: seconds, the time ratio to
ToMATo, the number of clusters found vs the truth, and the adjusted Rand index of the leaf
partition against the generating components.

Run: ``python -m benchmarks.topology [--n 10000 100000] [--k 5] [--hdbscan-default-max N]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.metrics import adjusted_rand_score

from benchmarks._util import header
from flowtopo.data import HierarchicalMixture
from flowtopo.topology import density_tree


def run(name: str, fn, labels: np.ndarray) -> tuple[str, float, int, float]:  # noqa: ANN001
    t = time.perf_counter()
    pred = fn()
    sec = time.perf_counter() - t
    return name, sec, len(set(pred.tolist()) - {-1}), adjusted_rand_score(labels, pred)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, nargs="+", default=[10000, 100000])
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--hdbscan-max", type=int, default=100000)
    ap.add_argument("--hdbscan-default-max", type=int, default=10000,
                    help="largest n at which HDBSCAN also runs with its default min_samples")
    args = ap.parse_args()
    header("topology: density tree vs ToMATo vs HDBSCAN")
    from gudhi.clustering.tomato import Tomato
    from sklearn.cluster import HDBSCAN

    shape = [[[1, 1], 1], [2, 2], [1, 1, 1]]
    mix = HierarchicalMixture.build(shape, args.k, separation=8.0, seed=0)
    print(f"data: hierarchical mixture, shape {shape}, k={args.k}, "
          f"{len(mix.weights)} true clusters")
    print("| n | method | seconds | time / ToMATo | clusters | ARI vs truth |")
    print("|---|---|---|---|---|---|")
    for n in args.n:
        u, labels = mix.sample(n, np.random.default_rng(n))
        f = mix.log_prob(u)
        rows = [
            run("flowtopo density_tree (exact density)",
                lambda u=u: density_tree(u, mix.log_prob, k_neighbors=15).labels, labels),
            run("gudhi ToMATo (same density, k, threshold)",
                lambda u=u, f=f: Tomato(density_type="manual", k=16, merge_threshold=2.0
                                        ).fit(u, weights=f).labels_, labels),
            run("flowtopo density_tree (kNN density)",
                lambda u=u: density_tree(u, None, k_neighbors=15).labels, labels),
        ]
        if n <= args.hdbscan_max:
            rows.append(run("scikit-learn HDBSCAN (min_samples=15, min_cluster_size=1% of n)",
                            lambda u=u, n=n: HDBSCAN(min_cluster_size=max(5, n // 100),
                                                       min_samples=15, copy=True).fit(u).labels_,
                            labels))
        else:
            rows.append((f"scikit-learn HDBSCAN: not run (n > --hdbscan-max {args.hdbscan_max})",
                         float("nan"), 0, float("nan")))
        if n <= args.hdbscan_default_max:
            rows.append(run("scikit-learn HDBSCAN (min_samples=min_cluster_size=1% of n: "
                            "its default)",
                            lambda u=u, n=n: HDBSCAN(min_cluster_size=max(5, n // 100),
                                                       copy=True).fit(u).labels_,
                            labels))
        t_tomato = rows[1][1]
        for name, sec, n_clusters, ari in rows:
            if np.isnan(sec):  # not run
                print(f"| {n} | {name} | - | - | - | - |")
                continue
            print(f"| {n} | {name} | {sec:.2f} | {sec / t_tomato:.2f}x | {n_clusters} | "
                  f"{ari:.4f} |")


if __name__ == "__main__":
    main()
