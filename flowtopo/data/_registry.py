"""The dataset registry: a plain dict of loader functions, and `load_dataset`."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

import numpy as np

from flowtopo.data import _toys
from flowtopo.data._base import Dataset, make_dataset
from flowtopo.data._files import FILE_SUFFIXES, read_array_file, read_idx_dir
from flowtopo.data._hierarchy import (
    AdditiveWarp,
    HierarchicalGenerator,
    HierarchicalMixture,
    Shape,
    balanced_shape,
)
from flowtopo.data._rotation import random_rotation
from flowtopo.errors import InputError


def hierarchical(
    *,
    n: int = 4000,
    dim: int = 6,
    k: int = 2,
    shape: Shape | None = None,
    branching: list[int] | None = None,
    separation: float = 12.0,
    decay: float = 0.4,
    sigma: float = 0.5,
    noise_std: float = 0.5,
    warp: float = 0.5,
    warp_layers: int = 3,
    test_fraction: float = 0.25,
    standardize: bool = False,
    seed: int = 0,
) -> Dataset:
    """Hierarchical Gaussian mixture in k dims, noise in dim-k dims, rotated and warped.

    ``shape`` (nested lists, leaves = relative masses) or ``branching`` (balanced) sets the tree;
    the default is ``[[1, 1], [1, 1, 1]]``. Exact log density and tree are attached.
    """
    if not 1 <= k <= dim:
        raise InputError(f"hierarchical: need 1 <= k <= dim, got k={k}, dim={dim}")
    if shape is None:
        shape = balanced_shape(branching) if branching else [[1, 1], [1, 1, 1]]
    rng = np.random.default_rng(seed)
    mix = HierarchicalMixture.build(shape, k, separation=separation, decay=decay, sigma=sigma,
                                    seed=seed)
    rot = random_rotation(dim, rng) if dim > 1 else np.eye(1)
    gen = HierarchicalGenerator(mix, dim, noise_std, rot,
                                AdditiveWarp.random(dim, n_layers=warp_layers, strength=warp,
                                                    rng=rng))
    x, u, labels = gen.sample(n, rng)
    return make_dataset(
        "hierarchical", x, labels, test_fraction=test_fraction, seed=seed, standardize=standardize,
        raw_log_density=gen.log_prob, tree=mix.tree, latent=u,
        info={"k": k, "leaves": len(mix.weights), "generator": gen},
    )


def _toy(fn: Callable[..., tuple[np.ndarray, np.ndarray]], name: str) -> Callable[..., Dataset]:
    def load(*, n: int = 3000, test_fraction: float = 0.25, standardize: bool = True,
             seed: int = 0) -> Dataset:
        x, y = fn(n, np.random.default_rng(seed))
        return make_dataset(name, x, y, test_fraction=test_fraction, seed=seed,
                            standardize=standardize, info={"source": "generator"})

    load.__doc__ = fn.__doc__
    return load


def digits(*, test_fraction: float = 0.25, standardize: bool = True, seed: int = 0) -> Dataset:
    """scikit-learn's bundled handwritten digits: 1797 images of 8x8 pixels, 10 classes."""
    from sklearn.datasets import load_digits

    b = load_digits()
    x = b.data + np.random.default_rng(seed).uniform(0, 1, b.data.shape)  # dequantise
    return make_dataset("digits", x, b.target, test_fraction=test_fraction, seed=seed,
                        standardize=standardize, info={"image_shape": (8, 8), "source": "sklearn"})


def wine(*, test_fraction: float = 0.25, standardize: bool = True, seed: int = 0) -> Dataset:
    """scikit-learn's bundled wine recognition data: 178 samples, 13 features, 3 classes."""
    from sklearn.datasets import load_wine

    b = load_wine()
    return make_dataset("wine", b.data, b.target, test_fraction=test_fraction, seed=seed,
                        standardize=standardize, info={"source": "sklearn"})


def _idx_family(name: str) -> Callable[..., Dataset]:
    def load(*, path: str | None = None, limit: int | None = None, standardize: bool = False,
             seed: int = 0) -> Dataset:
        if path is None:
            raise InputError(f"{name}: give option path=DIR, the folder holding the IDX files")
        d = read_idx_dir(path, name)
        xs = [d["train_x"], d["test_x"]]
        ys = [d["train_y"], d["test_y"]]
        if limit is not None:
            xs, ys = [a[:limit] for a in xs], [a[:limit] for a in ys]
        x = np.concatenate(xs)
        y = np.concatenate(ys)
        ds = make_dataset(name, x, y, test_fraction=len(xs[1]) / len(x), seed=seed,
                          standardize=standardize, info={"image_shape": (28, 28), "source": path})
        return ds

    load.__doc__ = f"{name} from IDX files in a user-given folder (option path=DIR; no download)."
    return load


def from_file(path: str, *, test_fraction: float = 0.25, standardize: bool = True,
              seed: int = 0) -> Dataset:
    """User data from a .npy, .npz (x, optional y) or .csv file."""
    x, y = read_array_file(path)
    return make_dataset(str(path), x, y, test_fraction=test_fraction, seed=seed,
                        standardize=standardize, info={"source": str(path)})


DATASETS: dict[str, Callable[..., Dataset]] = {
    "hierarchical": hierarchical,
    "trefoil": _toy(_toys.trefoil, "trefoil"),
    "linked_rings": _toy(_toys.linked_rings, "linked_rings"),
    "rings": _toy(_toys.rings, "rings"),
    "moons": _toy(_toys.moons, "moons"),
    "pinwheel": _toy(_toys.pinwheel, "pinwheel"),
    "digits": digits,
    "wine": wine,
    "mnist": _idx_family("mnist"),
    "fashion_mnist": _idx_family("fashion_mnist"),
}


AT_LEAST_ONE = ("n", "dim", "k", "limit", "warp_layers")
"""Options that count something: integers >= 1."""
NON_NEGATIVE = ("separation", "decay", "sigma", "noise_std", "warp")
"""Options that scale something: finite reals >= 0."""


def _check_options(fn: Callable[..., Dataset], name: str, options: dict[str, object]) -> None:
    """Refuse unknown options, values of the wrong type, and values out of range.

    The type is the loader's annotation (pydantic, strict: ``dim=six`` and ``n=2.5`` are
    refused, not coerced); the ranges are `AT_LEAST_ONE`, `NON_NEGATIVE` and a test fraction
    strictly between 0 and 1.

    Raises:
        InputError: one line naming the dataset, the option and what it must be.

    """
    import math
    import typing

    from pydantic import TypeAdapter, ValidationError

    params = inspect.signature(fn).parameters
    allowed = [p for p, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise InputError(
            f"dataset {name!r}: unknown option(s) {', '.join(unknown)}; valid: {', '.join(allowed)}"
        )
    hints = typing.get_type_hints(fn)
    for key, value in options.items():
        if isinstance(value, np.generic):  # numpy scalars count as the Python numbers they hold
            value = value.item()
        if key == "shape":  # a recursive alias: checked by hand
            if value is not None and not _is_shape(value):
                raise InputError(f"dataset {name!r}: option shape={value!r} must be nested "
                                 "lists whose leaves are positive masses, e.g. [[1, 1], [2]]")
        elif key in hints:
            try:
                TypeAdapter(hints[key]).validate_python(value, strict=True)
            except ValidationError:
                raise InputError(f"dataset {name!r}: option {key}={value!r} must be "
                                 f"{_describe(hints[key])}") from None
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue  # the ranges below are of numbers
        bad = ""
        if key in AT_LEAST_ONE and value < 1:
            bad = "an integer >= 1"
        elif key in NON_NEGATIVE and not (math.isfinite(value) and value >= 0):
            bad = "a finite number >= 0"
        elif key == "test_fraction" and not 0 < value < 1:
            bad = "between 0 and 1 (exclusive)"
        if bad:
            raise InputError(f"dataset {name!r}: option {key}={value!r} must be {bad}")


def _is_shape(v: object) -> bool:
    """A tree `Shape`: a positive finite mass, or a non-empty list of shapes."""
    import math

    if isinstance(v, bool):
        return False
    if isinstance(v, (int, float)):
        return math.isfinite(v) and v > 0
    return isinstance(v, list) and len(v) > 0 and all(_is_shape(c) for c in v)


def _describe(hint: object) -> str:
    """A type annotation in words: 'int', 'float', 'bool or None'..."""
    text = str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")
    return "of type " + text.replace(" | NoneType", " or None").replace("NoneType", "None")


def load_dataset(name: str, **options: object) -> Dataset:
    """Load a registered dataset by name, or a user file by path.

    Args:
        name: a key of `DATASETS`, or a path ending in .npy, .npz or .csv.
        **options: keyword options of that loader (see ``flowtopo data show NAME``).

    Raises:
        InputError: unknown name (the message lists valid choices), unknown options, bad data.

    """
    if name in DATASETS:
        fn = DATASETS[name]
        _check_options(fn, name, options)
        return fn(**options)
    if Path(name).suffix.lower() in FILE_SUFFIXES:
        _check_options(from_file, name, options)
        return from_file(name, **options)  # type: ignore[arg-type]
    raise InputError(
        f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}, or a file path ending in "
        f"{', '.join(FILE_SUFFIXES)}"
    )
