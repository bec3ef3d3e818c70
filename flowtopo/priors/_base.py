"""The prior interface: an ``nn.Module`` holding parameters whose ``forward()`` is a distribution.

Following zuko, users write ``prior().log_prob(z)`` and ``prior().sample((n,))``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

import networkx as nx
import numpy as np
import torch
from torch import nn
from torch.distributions import Distribution

from flowtopo.errors import InputError


class Trial(Protocol):
    """The part of ``optuna.Trial`` a search space uses (duck-typed: no optuna import here)."""

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float:
        """Suggest a float in [low, high]."""

    def suggest_int(self, name: str, low: int, high: int) -> int:
        """Suggest an int in [low, high]."""

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        """Suggest one of ``choices``."""


class Prior(nn.Module):
    """Base class of prior families over a latent of dimension ``k``.

    Subclasses set ``name``, ``min_k``, implement `forward` and `suggest`, and call
    ``super().__init__(k, **params)`` with their hyper-parameters so `to_dict` can rebuild them.
    Learned values live in the ``state_dict``; the hyper-parameters in `to_dict`.
    """

    name: ClassVar[str] = ""
    min_k: ClassVar[int] = 1
    max_k: ClassVar[int | None] = None

    def __init__(self, k: int, **params: Any) -> None:
        super().__init__()
        if not isinstance(k, int) or k < self.min_k or (self.max_k is not None and k > self.max_k):
            hi = "" if self.max_k is None else f" and <= {self.max_k}"
            raise InputError(f"prior {self.name!r}: latent dim k must be >= {self.min_k}{hi}, "
                             f"got {k}")
        self.k = k
        self.params = dict(params)

    def forward(self) -> Distribution:
        """The distribution over R^k, with ``event_shape == (k,)``."""
        raise NotImplementedError

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """Shortcut for ``self().log_prob(z)``: (..., k) -> (...)."""
        return self().log_prob(z)

    def _reference(self) -> torch.Tensor:
        """A floating tensor of this prior: numpy inputs take its dtype and device."""
        tensors = [*self.parameters(), *self.buffers()]
        return next((t for t in tensors if t.is_floating_point()), torch.zeros(()))

    def numpy_log_prob(self, z: np.ndarray, chunk: int = 65536) -> np.ndarray:
        """Log density of numpy points ``z`` (n, k) -> (n,) float64, without gradients.

        This is the callable that `flowtopo.topology.density_tree` takes as ``log_density``.
        """
        ref = self._reference()
        out = []
        with torch.no_grad():
            dist = self()
            for i in range(0, len(z), chunk):
                zt = torch.as_tensor(np.asarray(z[i:i + chunk]), dtype=ref.dtype,
                                     device=ref.device)
                out.append(dist.log_prob(zt).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)

    def numpy_log_prob_and_grad(self, z: np.ndarray, chunk: int = 65536
                                ) -> tuple[np.ndarray, np.ndarray]:
        """Log density (n,) and its exact gradient in space (n, k) of numpy points ``z`` (n, k).

        By autograd through the distribution (the prior's parameters get no gradient). The
        maximum-likelihood polish of `flowtopo.matching` uses it instead of finite differences.
        """
        ref = self._reference()
        vals, grads = [], []
        with torch.enable_grad():
            for i in range(0, len(z), chunk):
                zt = torch.as_tensor(np.asarray(z[i:i + chunk]), dtype=ref.dtype,
                                     device=ref.device).requires_grad_(True)
                lp = self().log_prob(zt)  # a fresh graph per chunk (grad frees the last one)
                (g,) = torch.autograd.grad(lp.sum(), zt)
                vals.append(lp.detach().double().cpu().numpy())
                grads.append(g.double().cpu().numpy())
        if not vals:
            return np.zeros(0), np.zeros((0, self.k))
        return np.concatenate(vals), np.concatenate(grads)

    @classmethod
    def suggest(cls, trial: Trial, k: int, narrow: dict[str, Any]) -> dict[str, Any]:
        """Define-by-run search space: suggest this family's hyper-parameters on ``trial``.

        Called once per trial after the family itself was chosen. Parameter names are prefixed
        with the family name; ``narrow`` maps a parameter to ``[low, high]``, a list of choices
        (for categorical ones) or a fixed value, as written in a sweep YAML.
        """
        raise NotImplementedError

    def true_tree(self) -> nx.DiGraph | None:
        """Ground-truth density tree when known analytically, else None.

        Nodes carry ``mass`` and ``center`` (k,); node 0 is the root.
        """
        return None

    def modes(self) -> torch.Tensor | None:
        """(m, k) locations of the density's modes when known analytically, else None."""
        return None

    def to_dict(self) -> dict[str, Any]:
        """``{name, k, params}``: the hyper-parameters that rebuild this prior (not its weights)."""
        return {"name": self.name, "k": self.k, "params": dict(self.params)}

    def extra_repr(self) -> str:
        """Shown by ``repr``."""
        return f"k={self.k}, " + ", ".join(f"{a}={v!r}" for a, v in self.params.items())


def single_node_tree(center: torch.Tensor) -> nx.DiGraph:
    """A one-node tree (a single cluster of mass 1)."""
    t = nx.DiGraph()
    t.add_node(0, mass=1.0, center=center.detach().cpu().numpy())
    return t


def positive(value: float, what: str, family: str) -> float:
    """Return ``value`` or raise an `InputError` when it is not > 0."""
    if not (isinstance(value, int | float) and value > 0):
        raise InputError(f"prior {family!r}: {what} must be > 0, got {value!r}")
    return float(value)


_RANGE_KEYS = {"low", "high", "log"}


def _narrowing(name: str, spec: Any, numeric: bool) -> tuple[str, Any]:
    """Read a narrowing written in the sweep YAML; return its kind and value.

    Kinds: ``("fixed", value)``; ``("values", [choices])`` from ``{values: [...]}`` (or, for a
    categorical parameter, a bare list); ``("range", (low, high, log))`` from
    ``{low, high[, log]}`` or, for a number, a bare ``[low, high]``. A bare list of another
    length for a number is refused: ``[4, 8, 16]`` would otherwise read as the range 4..8.

    Raises:
        InputError: an ambiguous list, unknown keys, an empty choice list, a bound that is not
            a finite number or a range with low > high.

    """
    if isinstance(spec, dict):
        if set(spec) == {"values"}:
            values = spec["values"]
            if not isinstance(values, list) or not values:
                raise InputError(f"{name}: values must be a non-empty list")
            return "values", values
        if not spec or not set(spec) <= _RANGE_KEYS or not {"low", "high"} <= set(spec):
            raise InputError(f"{name}: write {{low: A, high: B}} (optionally log: true) for a "
                             f"range or {{values: [...]}} for choices, got keys {sorted(spec)}")
        if not numeric:
            raise InputError(f"{name}: a range needs a numeric parameter; use {{values: [...]}}")
        return "range", _bounds(name, spec["low"], spec["high"], spec.get("log"))
    if isinstance(spec, list | tuple):
        if not numeric:
            if not spec:
                raise InputError(f"{name}: an empty list of choices")
            return "values", list(spec)
        if len(spec) != 2:
            raise InputError(f"{name}: a list of {len(spec)} numbers is ambiguous: write "
                             f"{{low: A, high: B}} for a range or {{values: {list(spec)}}} for "
                             "choices")
        return "range", _bounds(name, spec[0], spec[1], None)
    return "fixed", spec


def _bounds(name: str, low: Any, high: Any, log: Any) -> tuple[float, float, bool | None]:
    import math

    try:
        lo, hi = float(low), float(high)
    except (TypeError, ValueError):
        raise InputError(f"{name}: range bounds must be numbers, got {low!r} and "
                         f"{high!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise InputError(f"{name}: a range needs finite bounds with low <= high, got "
                         f"[{low}, {high}]")
    if log is not None and not isinstance(log, bool):
        raise InputError(f"{name}: log must be true or false, got {log!r}")
    return lo, hi, log


def suggest_float(trial: Trial, name: str, low: float, high: float, narrow: dict[str, Any],
                  key: str, *, log: bool = False) -> float:
    """Suggest ``name`` in [low, high], narrowed by ``narrow[key]`` (see `_narrowing`)."""
    spec = narrow.get(key)
    if spec is None:
        return trial.suggest_float(name, low, high, log=log)
    kind, value = _narrowing(name, spec, numeric=True)
    if kind == "values":
        return float(trial.suggest_categorical(name, [float(v) for v in value]))
    if kind == "range":
        lo, hi, lg = value
        if (lg if lg is not None else log) and lo <= 0:
            raise InputError(f"{name}: a log range needs low > 0, got {lo}")
        return trial.suggest_float(name, lo, hi, log=lg if lg is not None else log)
    return float(value)


def suggest_int(trial: Trial, name: str, low: int, high: int, narrow: dict[str, Any],
                key: str) -> int:
    """Suggest an int ``name`` in [low, high], narrowed like `suggest_float`."""
    spec = narrow.get(key)
    if spec is None:
        return trial.suggest_int(name, low, high)
    kind, value = _narrowing(name, spec, numeric=True)
    if kind == "values":
        return int(trial.suggest_categorical(name, [int(v) for v in value]))
    if kind == "range":
        lo, hi, lg = value
        return trial.suggest_int(name, int(lo), int(hi), log=bool(lg))
    return int(value)


def suggest_choice(trial: Trial, name: str, choices: list[Any], narrow: dict[str, Any],
                   key: str) -> Any:
    """Suggest one of ``choices`` (or of the narrowed ``narrow[key]``: a list or {values})."""
    spec = narrow.get(key)
    if spec is None:
        return trial.suggest_categorical(name, choices)
    kind, value = _narrowing(name, spec, numeric=False)
    if kind == "values":
        return trial.suggest_categorical(name, value)
    return value
