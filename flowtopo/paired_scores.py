"""Scores of a translation between latent spaces, on PAIRED test latents (numpy only)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from flowtopo.errors import InputError


def linear_cka(a: np.ndarray, b: np.ndarray) -> float:
    """Linear centred kernel alignment of (n, p) and (n, q) (Kornblith et al., ICML 2019)."""
    a, b = a - a.mean(0), b - b.mean(0)
    num = np.linalg.norm(b.T @ a) ** 2
    den = np.linalg.norm(a.T @ a) * np.linalg.norm(b.T @ b)
    return float(num / den) if den > 0 else 0.0


def translation_scores(z_source: np.ndarray, z_target: np.ndarray,
                       transform: Callable[[np.ndarray], np.ndarray],
                       labels: np.ndarray | None = None, *, n_candidates: int = 1000,
                       neighbors: int = 5, seed: int = 0) -> dict[str, float]:
    """Score ``transform`` on paired test latents (row i of both is the same input).

    Args:
        z_source: (n, k_s) source latents.
        z_target: (n, k_t) target latents of the same inputs.
        transform: source -> target map, (m, k_s) -> (m, k_t).
        labels: (n,) class labels, for label transfer.
        n_candidates: retrieval of the true partner among up to this many test rows.
        neighbors: k of the kNN classifier used for label transfer.
        seed: seeds the choice of retrieval candidates.

    Returns:
        r2 (1 - SSE/SST over all dims), rel_mse, top1, top5, mrr, cka (linear CKA of the
        translated and true latents), and label_transfer (accuracy of a kNN classifier fitted
        on target latents, applied to translated source latents) when labels are given.

    """
    zs, zt = np.asarray(z_source, np.float64), np.asarray(z_target, np.float64)
    if zs.ndim != 2 or zt.ndim != 2 or len(zs) != len(zt):
        raise InputError(f"paired test latents must be (n, k) arrays with the same n, got "
                         f"{zs.shape} and {zt.shape}")
    if not (np.isfinite(zs).all() and np.isfinite(zt).all()):
        raise InputError("test latents contain NaN/inf")
    pred = np.asarray(transform(zs), np.float64)
    err = ((pred - zt) ** 2).sum()
    sst = ((zt - zt.mean(0)) ** 2).sum()
    out = {"r2": float(1 - err / sst), "rel_mse": float(err / sst)}
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(zt), min(n_candidates, len(zt)), replace=False)
    d = ((pred[idx][:, None, :] - zt[idx][None, :, :]) ** 2).sum(-1)  # (m, m)
    rank = (d < np.diag(d)[:, None]).sum(1)  # 0 = the true partner is the nearest
    out.update(top1=float((rank < 1).mean()), top5=float((rank < 5).mean()),
               mrr=float((1.0 / (rank + 1)).mean()), cka=linear_cka(pred, zt))
    if labels is not None:
        from sklearn.neighbors import KNeighborsClassifier

        y = np.asarray(labels)
        clf = KNeighborsClassifier(neighbors).fit(zt, y)
        out["label_transfer"] = float((clf.predict(pred) == y).mean())
    return out


def cycle_error(z: np.ndarray, maps: Sequence[Callable[[np.ndarray], np.ndarray]]) -> float:
    """‖T_n ∘ … ∘ T_1(z) − z‖² / ‖z − mean z‖² on test latents z (n, k)."""
    out = np.asarray(z, np.float64)
    for m in maps:
        out = m(out)
    return float(((out - z) ** 2).sum() / ((z - z.mean(0)) ** 2).sum())
