"""The dataset object, its standardiser, and checks on raw arrays."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import networkx as nx
import numpy as np

from flowtopo.errors import InputError


def check_array(x: np.ndarray, what: str, *, min_rows: int = 2) -> np.ndarray:
    """Return ``x`` as a finite float32 2-D array, or raise an `InputError` naming ``what``.

    Args:
        x: data, shape (n, D) or (n,) (taken as D = 1).
        what: the file or source named in the error message.
        min_rows: fewest rows accepted.

    """
    raw = np.asarray(x)
    if np.iscomplexobj(raw):
        raise InputError(f"{what}: values are complex ({raw.dtype}); give real numbers")
    try:
        arr = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise InputError(f"{what}: values are not numeric ({err})") from None
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise InputError(f"{what}: expected a 2-D array (rows, features), got shape {arr.shape}")
    if arr.shape[0] < min_rows:
        raise InputError(f"{what}: too few rows ({arr.shape[0]}), need at least {min_rows}")
    if arr.shape[1] < 1:
        raise InputError(f"{what}: no feature columns")
    bad = ~np.isfinite(arr)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise InputError(
            f"{what}: {int(bad.sum())} NaN/inf values (first at row {row}, column {col})"
        )
    return arr.astype(np.float32)


def check_labels(y: np.ndarray, what: str) -> np.ndarray:
    """Return class labels as a 1-D int64 array, or raise an `InputError` naming ``what``.

    Integers, or floats that are whole numbers (1.0 is class 1); NaN/inf, fractional values
    (continuous targets are not classes), complex or non-numeric values are refused rather than
    cast (a cast turned NaN into -9.2e18).
    """
    arr = np.asarray(y)
    if arr.ndim != 1:
        arr = arr.reshape(-1) if arr.ndim == 2 and 1 in arr.shape else arr
    if arr.ndim != 1:
        raise InputError(f"{what}: labels must be one value per row, got shape {arr.shape}")
    if arr.dtype == bool or np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.floating):
        raise InputError(f"{what}: labels must be integer classes, got dtype {arr.dtype}")
    if not np.isfinite(arr).all():
        raise InputError(f"{what}: {int((~np.isfinite(arr)).sum())} NaN/inf labels")
    if not np.array_equal(arr, np.round(arr)):
        raise InputError(f"{what}: labels must be integer classes, got fractional values "
                         f"(e.g. {float(arr[arr != np.round(arr)][0])!r})")
    return arr.astype(np.int64)


@dataclass(frozen=True)
class Standardizer:
    """Per-feature affine standardisation ``(x - mean) / scale``, fitted on the training split.

    It is saved with every model so latents can be reproduced. It is not volume preserving:
    densities change by ``log_abs_det`` (see `log_abs_det`).

    Attributes:
        mean: (D,) feature means.
        scale: (D,) feature scales (> 0).

    """

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray, *, enabled: bool = True) -> Standardizer:
        """Fit on ``x`` (n, D); with ``enabled=False`` return the identity."""
        d = x.shape[1]
        if not enabled:
            return cls(np.zeros(d, np.float32), np.ones(d, np.float32))
        scale = x.std(axis=0)
        scale = np.where(scale > 1e-8, scale, 1.0)
        return cls(x.mean(axis=0).astype(np.float32), scale.astype(np.float32))

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Standardise raw ``x`` (n, D)."""
        return ((x - self.mean) / self.scale).astype(np.float32)

    def inverse(self, x: np.ndarray) -> np.ndarray:
        """Map standardised ``x`` (n, D) back to raw units."""
        return (x * self.scale + self.mean).astype(np.float32)

    @property
    def log_abs_det(self) -> float:
        """``sum(log scale)``: log p_std(transform(x)) = log p_raw(x) + log_abs_det."""
        return float(np.sum(np.log(self.scale.astype(np.float64))))

    def to_dict(self) -> dict[str, list[float]]:
        """JSON-ready form."""
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, list[float]]) -> Standardizer:
        """Inverse of `to_dict`."""
        return cls(np.asarray(d["mean"], np.float32), np.asarray(d["scale"], np.float32))


@dataclass
class Dataset:
    """A dataset: standardised float32 splits, optional labels and ground truth.

    Attributes:
        name: registry name or file path.
        x_train: (n_train, D) standardised training data.
        x_test: (n_test, D) standardised test data.
        y_train: (n_train,) integer labels or None.
        y_test: (n_test,) integer labels or None.
        standardizer: maps raw data to the standardised splits.
        raw_log_density: exact log density of RAW data, ``(n, D) -> (n,)``, when known.
        tree: ground-truth density tree (networkx DiGraph; node attributes ``mass``, ``center``),
            rooted at node 0, when known. ``center`` lives in the information space.
        info: free-form description (source, shape of images, generation parameters).
        latent_train: (n_train, k) ground-truth information coordinates when known.
        latent_test: (n_test, k) likewise.

    """

    name: str
    x_train: np.ndarray
    x_test: np.ndarray
    y_train: np.ndarray | None = None
    y_test: np.ndarray | None = None
    standardizer: Standardizer | None = None
    raw_log_density: Callable[[np.ndarray], np.ndarray] | None = None
    tree: nx.DiGraph | None = None
    info: dict[str, object] = field(default_factory=dict)
    latent_train: np.ndarray | None = None
    latent_test: np.ndarray | None = None

    @property
    def dim(self) -> int:
        """Number of features D."""
        return int(self.x_train.shape[1])

    def log_density(self, x_std: np.ndarray) -> np.ndarray:
        """Exact log density of STANDARDISED data ``x_std`` (n, D) -> (n,), when known.

        Raises:
            InputError: the dataset has no known density.

        """
        if self.raw_log_density is None:
            raise InputError(f"dataset {self.name!r} has no known ground-truth density")
        std = self.standardizer or Standardizer.fit(x_std, enabled=False)
        return self.raw_log_density(std.inverse(x_std)) + std.log_abs_det

    def true_nll_per_dim(self) -> float:
        """Exact held-out NLL of the test split in nats per dimension (standardised units)."""
        return float(-np.mean(self.log_density(self.x_test)) / self.dim)


def make_dataset(
    name: str,
    x: np.ndarray,
    y: np.ndarray | None,
    *,
    test_fraction: float,
    seed: int,
    standardize: bool,
    **extra: object,
) -> Dataset:
    """Split raw ``x`` (n, D) and labels into a standardised `Dataset`.

    The split is a seeded permutation; the standardiser is fitted on the training part only.
    ``extra`` fills the remaining `Dataset` fields; ``latent`` (n, k) is split alongside ``x``.
    """
    x = check_array(x, name, min_rows=4)
    if y is not None:
        y = check_labels(y, name)
        if y.shape[0] != x.shape[0]:
            raise InputError(f"{name}: {x.shape[0]} rows of data but {y.shape[0]} labels")
    if not 0.0 < test_fraction < 1.0:
        raise InputError(f"{name}: test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(x.shape[0])
    n_test = max(1, round(test_fraction * x.shape[0]))
    test, train = perm[:n_test], perm[n_test:]
    std = Standardizer.fit(x[train], enabled=standardize)
    latent = extra.pop("latent", None)
    return Dataset(
        name=name,
        x_train=std.transform(x[train]),
        x_test=std.transform(x[test]),
        y_train=None if y is None else y[train],
        y_test=None if y is None else y[test],
        standardizer=std,
        latent_train=None if latent is None else np.asarray(latent)[train],
        latent_test=None if latent is None else np.asarray(latent)[test],
        **extra,  # type: ignore[arg-type]
    )
