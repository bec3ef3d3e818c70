"""Translate one network's embeddings into another's, without paired data.

``fit_translation(source, target)`` takes two UNPAIRED embedding matrices, source (n, d_s) and
target (m, d_t), and returns a `Translation`:

1. Each side is centred, scaled by one number (its RMS: every direction alike, so the
   network's own geometry is kept; per-feature standardisation would amplify dead units) and
   reduced to its ``pca`` leading principal components. Both are maps with a constant
   Jacobian: the super-level-set tree of the density is unchanged by them.
2. The encoder of each side (``cfg.encoder``):
   - ``flowae``: a flow auto-encoder trained per side (a small prior search inside: each prior
     of ``cfg.priors`` is trained and the best held-out NLL wins), or given (a checkpoint
     folder or an MLflow run id). The noise dims' σ is set to the data's residual scale (the
     RMS of the principal components beyond k), never below it. Its latent space carries the
     model's EXACT density (``density="exact"``) or a kNN estimate on its codes.
   - ``pca`` (default): the linear member of the same family: an orthogonal flow (the
     principal axes; det 1) whose first k outputs are the latent and whose others are the
     noise dims, with no trained nonlinear layer. Its tree uses a kNN density estimate. It is
     the default because it is what works on real networks today: on pairs of classifiers'
     hidden layers (docs/benchmarks.md) trained FlowAEs arrange the classes in their latents
     each in its own way, and no matching recovered the correspondence through them.
3. `flowtopo.matching.align` with ``method="tree"`` and ``select="consensus"`` matches the two
   density trees (the leaf correspondence whose separations agree best in order, the affine
   shape of the matched modes deciding among near ties: two different networks) and fits
   the latent map (``piecewise`` by default: one affine map per matched mode, blended by
   soft membership), at each latent dim of `K_SEARCH` (`confirm`),
   on trees coarsened to a common number of modes and on all their modes (``across_scales``:
   one network may split a class in two modes, or merge two, where the other does not).
4. ``Translation.transform(x_source)``: encode with the source side, map the latent, decode
   with the target side (noise dims 0), undo the target's PCA and scaling.

Every translation carries its fit checks (`AlignResult.fit_reason`): the symmetric KL of the
affine part between the two exact densities, a calibrated classifier two-sample test of the
mapped source latents against the target's, the leaf round trip, and (when the latent dim is
searched) the confirmation of its leaf correspondence by a passing map at another dim.
``poor_fit`` says not to trust it; `NotIdentifiable` is raised when the densities cannot fix
the map at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from flowtopo.errors import InputError
from flowtopo.train_spec import Named

MAP_FILE, SIDE_FILE = "map.json", "side.json"
K_SEARCH = (8, 6, 4)
"""Latent dims tried when ``k`` is None (pca encoder): among the maps that pass every fit
check, cross-dimension confirmation included, the best confirmed wins, then the largest k
(`choose`). Which k carries the correspondence differs between network pairs (measured on 8
digits pairs: 5 of 8 at k = 6 alone, 7 of 8 with the search; docs/method.md)."""
CONFIRMATION_TIE = 0.05
"""Confirmations within this of the best are equal to `choose` (the larger k wins among them):
each is a mass share measured against a different set of maps."""
FLOWAE_K = 6
"""The latent dim of a flowae side when ``k`` is None (each k would train new FlowAEs)."""


class TranslateConfig(BaseModel):
    """How `fit_translation` fits each side and the map (``flowtopo translate fit`` options)."""

    model_config = ConfigDict(extra="forbid")
    k: int | None = Field(None, ge=1, description="Latent dimension of each side. None: "
                          "searched (see `K_SEARCH`; each map must then be confirmed at "
                          "another dim) with the pca encoder, 6 with flowae. An explicit k "
                          "has no cross-dimension confirmation.")
    pca: int | None = Field(16, ge=1, description="Principal components kept per side "
                            "before the FlowAE (None: all dims).")
    priors: list[Named] = Field(
        default_factory=lambda: [Named(name="gmm", params={
            "components": 20, "scale": 0.3, "spread": 2.0})],
        min_length=1, description="Priors tried per side; the best held-out NLL wins.")
    flow: Named = Field(default_factory=lambda: Named(name="coupling"),
                              description="The volume-preserving flow of each FlowAE.")
    epochs: int = Field(250, ge=1)
    lr: float = Field(3e-3, gt=0)
    batch_size: int = Field(128, ge=2)
    recon_weight: float = Field(1.0, ge=0, description="Reconstruction from z alone: what "
                                "decides what goes into the latent.")
    transform: str = Field("piecewise", description="Latent map family: affine, linear, "
                           "orthogonal, piecewise or nonlinear.")
    min_persistence: float = Field(1.0, gt=0, description="Merge threshold of the density "
                                   "trees (nats).")
    encoder: Literal["pca", "flowae"] = Field(
        "pca", description="Each side's encoder: the linear volume-preserving one (principal "
        "axes) or a trained flow auto-encoder.")
    density: Literal["exact", "knn"] = Field(
        "exact", description="With FlowAE sides: the density whose tree is matched, each "
        "FlowAE's exact density or a kNN estimate on its codes (no fit KL then). The pca "
        "encoder always uses the kNN estimate.")
    seed: int = 0
    device: str = "cpu"


def check_embeddings(x: Any, what: str, *, min_rows: int = 50) -> np.ndarray:
    """A real, finite (n, d) float64 array with at least ``min_rows`` rows.

    Raises:
        InputError: one line naming ``what``: wrong shape, complex or non-numeric values,
            NaN/inf, too few rows.

    """
    a = np.asarray(x)
    if a.ndim != 2:
        raise InputError(f"{what}: embeddings must be a 2-D array (n, d), got shape {a.shape}")
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise InputError(f"{what}: embeddings must be real numbers, got dtype {a.dtype}")
    a = a.astype(np.float64)
    bad = int((~np.isfinite(a)).sum())
    if bad:
        raise InputError(f"{what}: {bad} NaN/inf values")
    if len(a) < min_rows:
        raise InputError(f"{what}: {len(a)} rows; a translation needs at least {min_rows} "
                         "(enough for several clusters)")
    return a


@dataclass
class Side:
    """One side's embedding <-> latent pipeline: standardise, PCA, FlowAE.

    Attributes:
        model: the trained `flowtopo.model.FlowAE` (on the PCA coordinates), or None for the
            linear encoder (the latent is then the first k principal coordinates).
        standardizer: raw embedding -> centred and scaled.
        pca_mean: (d,) mean removed before projecting (zeros after standardising).
        pca_components: (p, d) orthonormal rows; the FlowAE sees ``(x - mean) @ components.T``.
        info: how the side was fitted (prior chosen, held-out NLL of each tried prior).

    """

    model: Any
    standardizer: Any
    pca_mean: np.ndarray
    pca_components: np.ndarray
    info: dict[str, Any]

    @property
    def dim(self) -> int:
        """Embedding dimension d."""
        return int(self.pca_components.shape[1])

    def features(self, x: np.ndarray) -> np.ndarray:
        """Raw embeddings (n, d) -> the FlowAE's inputs (n, p)."""
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise InputError(f"expected embeddings of shape (n, {self.dim}), got {x.shape}")
        return (self.standardizer.transform(x) - self.pca_mean) @ self.pca_components.T

    @property
    def k(self) -> int:
        """Latent dimension."""
        return int(self.model.k if self.model is not None else self.info["k"])

    def encode(self, x: np.ndarray) -> np.ndarray:
        """Raw embeddings (n, d) -> latents (n, k)."""
        u = self.features(x)
        return u[:, : self.k] if self.model is None else self.model.latents(u)

    def decode(self, z: np.ndarray) -> np.ndarray:
        """Latents (n, k) -> raw embeddings (n, d), noise dims 0."""
        if self.model is None:
            u = np.zeros((len(z), self.pca_components.shape[0]))
            u[:, : self.k] = z
        else:
            import torch

            ref = next(self.model.parameters())
            with torch.no_grad():
                u = self.model.decode(torch.as_tensor(z, dtype=ref.dtype, device=ref.device),
                                      sample=False).double().cpu().numpy()
        return self.standardizer.inverse(u @ self.pca_components + self.pca_mean)

    def space(self, x: np.ndarray, *, exact: bool = True) -> Any:
        """The `flowtopo.matching.LatentSpace` of ``x`` (n, d).

        With the model's exact density, or (``exact=False``) the points alone: their tree then
        uses a kNN density estimate.
        """
        from flowtopo.matching import LatentSpace

        z = self.encode(x)
        if exact and self.model is None:
            raise InputError("the pca encoder has no exact density; use density 'knn' or "
                             "encoder 'flowae'")
        return LatentSpace(z, prior=self.model.prior) if exact else LatentSpace(z)

    def save(self, path: Path) -> None:
        """Write the side to the folder ``path``.

        A checkpoint folder (`flowtopo.checkpoint`) with the PCA in its config; for the linear
        encoder, ``side.json`` alone.
        """
        pca = {"mean": self.pca_mean.tolist(), "components": self.pca_components.tolist()}
        if self.model is None:
            path.mkdir(parents=True, exist_ok=True)
            (path / SIDE_FILE).write_text(json.dumps({
                "standardizer": self.standardizer.to_dict(), "pca": pca,
                "translate_side": self.info}))
            return
        from flowtopo.checkpoint import save_checkpoint

        save_checkpoint(path, self.model, self.standardizer, {"pca": pca,
                                                              "translate_side": self.info})

    @classmethod
    def load(cls, path: Path) -> Side:
        """Inverse of `save` (weights with ``weights_only=True``).

        Also reads a FlowAE checkpoint written by ``flowtopo train`` or a sweep: its
        standardiser, no PCA.
        """
        from flowtopo.checkpoint import load_checkpoint
        from flowtopo.data import Standardizer

        if (path / SIDE_FILE).is_file():
            try:
                doc = json.loads((path / SIDE_FILE).read_text())
                return cls(None, Standardizer.from_dict(doc["standardizer"]),
                           np.asarray(doc["pca"]["mean"], dtype=np.float64),
                           np.asarray(doc["pca"]["components"], dtype=np.float64),
                           doc["translate_side"])
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise InputError(f"{path / SIDE_FILE}: unreadable ({err})") from None
        ck = load_checkpoint(path)
        pca = ck.config.get("pca")
        if pca is None:  # a FlowAE trained by flowtopo train or a sweep, on the embeddings
            dim = ck.model.dim
            return cls(ck.model, ck.standardizer, np.zeros(dim), np.eye(dim), {
                "encoder": "flowae", "k": ck.model.k, "from": str(path),
                "prior": ck.config["model"]["prior"], "dataset": ck.config.get("dataset")})
        return cls(ck.model, ck.standardizer, np.asarray(pca["mean"], dtype=np.float64),
                   np.asarray(pca["components"], dtype=np.float64),
                   ck.config.get("translate_side", {}))


def isotropic_scaler(x: np.ndarray) -> Any:
    """A `flowtopo.data.Standardizer` that centres ``x`` (n, d) and divides by one number.

    That number is the root mean square deviation, the same for every feature, so the
    geometry is kept up to scale.
    """
    from flowtopo.data import Standardizer

    mean = x.mean(0)
    rms = float(np.sqrt(np.mean((x - mean) ** 2))) or 1.0
    return Standardizer(mean, np.full(x.shape[1], rms))


def _pca(x: np.ndarray, p: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean (d,), components (p, d), variances (d,)) of standardised ``x``."""
    mean = x.mean(0)
    _, sv, vt = np.linalg.svd(x - mean, full_matrices=False)
    var = sv**2 / max(len(x) - 1, 1)
    keep = vt.shape[0] if p is None else min(p, vt.shape[0])
    return mean, vt[:keep], var


def fit_side(x: np.ndarray, cfg: TranslateConfig, *, what: str = "embeddings") -> Side:
    """Standardise and reduce ``x`` (n, d), then train a FlowAE per prior of ``cfg.priors``.

    Returns the `Side` whose FlowAE has the best held-out NLL.

    Raises:
        InputError: bad embeddings, ``k`` larger than the dims kept, an unknown prior or flow.

    """
    from flowtopo.model import FlowAE
    from flowtopo.train import TrainConfig, train

    x = check_embeddings(x, what)
    if cfg.k is None:
        raise InputError("fit_side needs an explicit k (fit_translation searches it)")
    std = isotropic_scaler(x)
    xs = std.transform(x)
    mean, comps, var = _pca(xs, cfg.pca)
    p = comps.shape[0]
    if cfg.k > p:
        raise InputError(f"{what}: k={cfg.k} latent dims but only {p} dims kept (pca={cfg.pca},"
                         f" d={x.shape[1]}); lower k")
    if cfg.encoder == "pca":
        return Side(None, std, mean, comps, {"encoder": "pca", "k": cfg.k, "pca": p,
                                             "explained": float(var[: cfg.k].sum() / var.sum())})
    u = (xs - mean) @ comps.T
    residual = float(np.sqrt(np.mean(var[cfg.k:p]))) if p > cfg.k else 1.0
    noise_std = max(residual, 1e-3)
    tcfg = TrainConfig(epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size,
                       regularizer="mle", recon_weight=cfg.recon_weight, seed=cfg.seed,
                       device=cfg.device, patience=max(10, cfg.epochs // 4))
    best: tuple[float, Any, dict[str, Any]] | None = None
    tried = []
    import torch

    for prior in cfg.priors:
        torch.manual_seed(cfg.seed)
        model = FlowAE.from_config({
            "dim": p, "k": cfg.k, "noise_std": noise_std, "learn_noise": True,
            "flow": cfg.flow.model_dump(),
            "prior": prior.model_dump()})
        res = train(model, u.astype(np.float32), None, tcfg)
        nll = float(res.best["val_nll"])
        tried.append({"prior": prior.model_dump(), "val_nll": nll, "epochs": res.best_epoch})
        if best is None or nll < best[0]:
            best = (nll, res.model.cpu(), prior.model_dump())
    assert best is not None
    info = {"encoder": "flowae", "prior": best[2], "val_nll": best[0], "tried": tried,
            "noise_std": noise_std,
            "pca": p, "k": cfg.k, "explained": float(var[:p].sum() / var.sum())}
    return Side(best[1], std, mean, comps, info)


@dataclass
class Translation:
    """A fitted translation from source embeddings (d_s) to target embeddings (d_t).

    Attributes:
        source: the source side (embedding -> latent).
        target: the target side (latent -> embedding).
        alignment: the latent map (`flowtopo.matching.AlignResult`: matrix, offset,
            piecewise part, matched nodes, fit checks).
        config: the `TranslateConfig` it was fitted with (``k`` the one chosen).
        search: each map tried (`K_SEARCH`; ``coarsened``: on trees coarsened to a common
            number of modes): whether it passed, its confirmation, and why not.

    """

    source: Side
    target: Side
    alignment: Any
    config: TranslateConfig
    search: list[dict[str, Any]] = field(default_factory=list)

    def transform_latents(self, z: np.ndarray) -> np.ndarray:
        """Source latents (n, k_s) -> target latents (n, k_t)."""
        return self.alignment.transform(z)

    def transform(self, x_source: np.ndarray) -> np.ndarray:
        """Source embeddings (n, d_s) -> target embeddings (n, d_t).

        Raises:
            InputError: wrong width, NaN/inf.

        """
        x = check_embeddings(x_source, "source embeddings", min_rows=1)
        return self.target.decode(self.transform_latents(self.source.encode(x)))

    @property
    def leaf_correspondence(self) -> list[tuple[int, int]]:
        """Matched (source mode, target mode) node ids of the two density trees."""
        ts = self.alignment.source_tree
        return [(u, v) for u, v in self.alignment.node_pairs
                if ts is None or ts.nodes[u].is_leaf]

    @property
    def fit_kl(self) -> float | None:
        """Symmetric KL of the affine part between the two exact latent densities (nats)."""
        return self.alignment.fit_kl

    @property
    def poor_fit(self) -> bool:
        """True when any fit check flags the map (see ``fit_reason``)."""
        return bool(self.alignment.poor_fit)

    @property
    def fit_reason(self) -> str | None:
        """Why the map is flagged, or None."""
        return self.alignment.fit_reason

    def summary(self) -> dict[str, Any]:
        """JSON-ready description: dims, priors, matched modes, fit checks."""
        a = self.alignment
        return {
            "source_dim": self.source.dim, "target_dim": self.target.dim,
            "k": [self.source.k, self.target.k], "encoder": self.config.encoder,
            "transform": a.transform_kind, "source": self.source.info,
            "target": self.target.info,
            "leaf_correspondence": self.leaf_correspondence,
            "modes": [len(a.source_tree.leaves()), len(a.target_tree.leaves())]
            if a.source_tree is not None and a.target_tree is not None else None,
            "fit_kl": a.fit_kl, "round_trip": a.round_trip, "confirmation": a.confirmation,
            "fit_check": a.fit_check.to_dict() if a.fit_check is not None else None,
            "ambiguous": a.ambiguous, "poor_fit": self.poor_fit, "fit_reason": self.fit_reason,
            "k_search": self.search,
        }

    def save(self, out: str | Path) -> Path:
        """Write ``out/source``, ``out/target`` (checkpoints) and ``out/map.json``."""
        p = Path(out)
        p.mkdir(parents=True, exist_ok=True)
        self.source.save(p / "source")
        self.target.save(p / "target")
        a = self.alignment
        doc = {"matrix": a.matrix.tolist(), "offset": a.offset.tolist(),
               "transform": a.transform_kind,
               "piecewise": a.piecewise.to_dict() if a.piecewise is not None else None,
               "config": self.config.model_dump(mode="json"), "summary": self.summary()}
        if a.residual is not None:
            raise InputError("a 'nonlinear' translation cannot be saved (its thin-plate spline "
                             "has no portable form); use transform 'piecewise'")
        (p / MAP_FILE).write_text(json.dumps(doc, indent=1, default=float))
        return p

    @classmethod
    def load(cls, path: str | Path) -> Translation:
        """Read a folder written by `save` (weights with ``weights_only=True``).

        Raises:
            InputError: not a translation folder, or an unreadable file.

        """
        from flowtopo.matching import AlignResult, FitCheck
        from flowtopo.matching._transforms import PiecewiseAffine

        p = Path(path)
        if not (p / MAP_FILE).is_file():
            raise InputError(f"{p}: not a translation folder (missing {MAP_FILE})")
        try:
            doc = json.loads((p / MAP_FILE).read_text())
            summ = doc["summary"]
            check = summ.get("fit_check")
            alignment = AlignResult(
                np.asarray(doc["matrix"], dtype=np.float64),
                np.asarray(doc["offset"], dtype=np.float64), "tree", doc["transform"],
                node_pairs=[tuple(x) for x in summ["leaf_correspondence"]],
                piecewise=(PiecewiseAffine.from_dict(doc["piecewise"])
                           if doc["piecewise"] is not None else None),
                fit_kl=summ["fit_kl"], round_trip=summ["round_trip"],
                confirmation=summ.get("confirmation"),
                fit_check=FitCheck(**{k: v for k, v in check.items() if k != "poor"})
                if check else None, ambiguous=bool(summ["ambiguous"]))
            cfg = TranslateConfig.model_validate(doc["config"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise InputError(f"{p / MAP_FILE}: unreadable translation ({err})") from None
        return cls(Side.load(p / "source"), Side.load(p / "target"), alignment, cfg,
                   summ.get("k_search", []))


def fit_translation(source: np.ndarray, target: np.ndarray, cfg: TranslateConfig | None = None,
                    *, source_side: Side | None = None, target_side: Side | None = None
                    ) -> Translation:
    """Fit a `Translation` from unpaired source (n, d_s) and target (m, d_t) embeddings.

    Args:
        source: the source network's embeddings.
        target: the target network's embeddings (rows unrelated to the source's).
        cfg: options (`TranslateConfig`).
        source_side: an already trained side (e.g. `Side.load`), instead of training one.
        target_side: likewise for the target.

    With ``cfg.k`` None (the pca encoder) a map is fitted at each latent dim of `K_SEARCH`;
    each map that passes its fit checks must also be confirmed by a passing map at another
    dim (`confirm`). At each k the map is fitted on the trees coarsened to a common number of
    modes and, when coarsening changed a tree, on every mode as well (unequal counts: the extra
    modes stay unmatched). Of the maps that pass everything, the best confirmed is returned, the
    larger k winning near ties (`choose`); when none does, the largest identifiable one,
    flagged. ``Translation.search`` records each map tried.

    Raises:
        InputError: bad embeddings or options; `flowtopo.matching.NotIdentifiable` when at no
            k the densities have enough matched modes in general position to fix the map.

    """
    from flowtopo.matching import TRANSFORMS, NotIdentifiable, align

    cfg = cfg or TranslateConfig()
    if cfg.transform not in TRANSFORMS:
        raise InputError(f"unknown transform {cfg.transform!r}; valid: {', '.join(TRANSFORMS)}")
    xs = check_embeddings(source, "source")
    xt = check_embeddings(target, "target")
    if source_side is not None or target_side is not None:
        given = (source_side or target_side).k  # type: ignore[union-attr]
        ks = [cfg.k or given]
    elif cfg.k is not None:
        ks = [cfg.k]
    else:
        room = min(xs.shape[1], xt.shape[1], cfg.pca or xs.shape[1])
        ks = [k for k in (K_SEARCH if cfg.encoder == "pca" else (FLOWAE_K,)) if k <= room]
        if not ks:
            raise InputError(f"the embeddings keep only {room} dims; give an explicit k < "
                             f"{min(K_SEARCH)}")
    found: list[Translation] = []
    refusals: dict[int, str] = {}
    for k in ks:
        c = cfg.model_copy(update={"k": k})
        try:
            s = source_side or fit_side(xs, c, what="source")
            t = target_side or fit_side(xt, c, what="target")
            exact = cfg.density == "exact" and s.model is not None and t.model is not None
            sp, tp = s.space(xs, exact=exact), t.space(xt, exact=exact)
            res = align(sp, tp, method="tree", transform=c.transform, seed=c.seed,
                        min_persistence=c.min_persistence, select="consensus")
        except NotIdentifiable as err:
            refusals[k] = str(err)
            if len(refusals) == len(ks):
                raise
            continue
        found.append(Translation(s, t, res, c))
        if len(ks) > 1 and res.info.get("coarsened"):  # also every mode, unequal counts
            try:
                fine = align(sp, tp, method="tree", transform=c.transform, seed=c.seed,
                             min_persistence=c.min_persistence, select="consensus",
                             across_scales=False)
                found.append(Translation(s, t, fine, c))
            except NotIdentifiable:
                pass  # the coarsened map at this k stands; its entry records the k
    if len(ks) > 1:
        confirm(found, len(xs), len(xt))
    tried = [{"k": k, "passed": False, "reason": refusals[k]} if k in refusals else
             {"k": k, "coarsened": bool(tr.alignment.info.get("coarsened")),
              "passed": not tr.poor_fit, "reason": tr.fit_reason,
              "confirmation": tr.alignment.confirmation}
             for k in ks for tr in ([None] if k in refusals else
                                    [tr for tr in found if tr.config.k == k])]
    chosen = choose(found)
    chosen.search = tried
    return chosen


def choose(found: list[Translation]) -> Translation:
    """The translation `fit_translation` returns among its maps at several latent dims.

    Among the maps that pass every check (cross-dimension confirmation included), the one whose
    leaf correspondence another dim reproduces best (the highest ``confirmation``), the larger
    k breaking ties; when none passes, the first (the largest identifiable k), flagged.

    Why not simply the largest k that passes: on a benchmark pair (two seeds of one MLP on
    digits, at other seeds of the search) the k = 8 map passed with 0.64 of the leaf mass right
    and a confirmation of 0.77 (by the k = 6 map, 0.89 right), while the maps at k = 6 and 4
    confirmed each other at 0.96 (docs/benchmarks.md, "seed robustness").
    """
    passing = [tr for tr in found if not tr.poor_fit]
    if not passing:
        return found[0]
    top = max(tr.alignment.confirmation or 0.0 for tr in passing)
    near = [tr for tr in passing if (tr.alignment.confirmation or 0.0) >= top - CONFIRMATION_TIE]
    return max(near, key=lambda tr: (tr.config.k or 0, tr.alignment.confirmation or 0.0))


def confirm(found: list[Translation], n_source: int, n_target: int) -> None:
    """Set ``alignment.confirmation`` of each translation that passes its own checks.

    A leaf correspondence that the data fix is found again at another latent dim; one that
    hangs on the noise of one projection is not (measured; docs/method.md "Cross-dimension
    confirmation"). Each passing map is compared (`flowtopo.matching.leaf_agreement`) with
    every other passing map; its confirmation is the best agreement, 0.0 when it is the only
    one that passes. Flagged maps are left as they are.

    Args:
        found: translations of the same rows at different latent dims.
        n_source: source rows.
        n_target: target rows.

    """
    from flowtopo.matching import leaf_agreement

    passing = [tr for tr in found if not tr.poor_fit]
    for tr in passing:
        tr.alignment.confirmation = max(
            (leaf_agreement(tr.alignment, other.alignment, n_source, n_target)
             for other in passing if other.config.k != tr.config.k), default=0.0)

__all__ = [
    "Side",
    "TranslateConfig",
    "Translation",
    "check_embeddings",
    "choose",
    "confirm",
    "fit_side",
    "fit_translation",
]
