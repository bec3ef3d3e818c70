"""Synthetic hierarchical Gaussian mixtures with an exact density and a known density tree.

Generation (every step after the mixture is volume preserving, so the density is exact):

    u ~ sum_l w_l N(mu_l, sigma^2 I_k)          (information space, tree of clusters)
    e ~ N(0, noise_std^2 I_{D-k})                (noise dims)
    x = warp(R [u; e])                           (R: random rotation, warp: additive couplings)

    log p(x) = log p_mix(u) + log N(e; 0, noise_std^2 I),  with [u; e] = R^T warp^{-1}(x).
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np

from flowtopo.data._rotation import random_rotation
from flowtopo.errors import InputError

#: A tree shape: a leaf is a positive number (its relative mass), an inner node a list of shapes.
Shape = float | int | list["Shape"]


def balanced_shape(branching: list[int] | tuple[int, ...]) -> Shape:
    """A balanced shape with ``branching[d]`` children per node at depth ``d``, equal masses."""
    if not branching:
        return 1.0
    return [balanced_shape(branching[1:]) for _ in range(branching[0])]


def _sibling_directions(m: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """``m`` unit vectors in R^k spread apart: a regular simplex when it fits, else best of draws.

    Returns:
        (m, k) array.

    """
    if m == 1:
        return np.zeros((1, k))
    if k == 1:
        return np.linspace(-1.0, 1.0, m)[:, None]
    if m - 1 <= k:
        simplex = np.eye(m) - 1.0 / m
        basis = np.linalg.svd(simplex)[2][: m - 1]  # (m-1, m) orthonormal rows spanning it
        coords = simplex @ basis.T  # (m, m-1)
        coords /= np.linalg.norm(coords, axis=1, keepdims=True)
        embed = random_rotation(k, rng)[:, : m - 1] if k > 1 else np.eye(1)
        return coords @ embed.T
    best, best_gap = None, -1.0
    for _ in range(256):
        v = rng.normal(size=(m, k))
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        gap = np.min(np.linalg.norm(v[:, None] - v[None], axis=-1) + 3 * np.eye(m))
        if gap > best_gap:
            best, best_gap = v, gap
    return best  # type: ignore[return-value]


@dataclass(frozen=True)
class HierarchicalMixture:
    """A tree of isotropic Gaussian clusters in R^k with its ground-truth tree.

    Attributes:
        means: (L, k) leaf means.
        sigma: leaf standard deviation.
        weights: (L,) leaf weights, summing to 1.
        tree: DiGraph rooted at 0; nodes carry ``mass``, ``center`` (k,), ``depth``, and
            ``leaf`` (index into ``means`` for leaves, else -1).

    """

    means: np.ndarray
    sigma: float
    weights: np.ndarray
    tree: nx.DiGraph

    @classmethod
    def build(
        cls,
        shape: Shape,
        k: int,
        *,
        separation: float = 12.0,
        decay: float = 0.4,
        sigma: float = 0.5,
        seed: int = 0,
    ) -> HierarchicalMixture:
        """Place the clusters of ``shape`` in R^k.

        Children of a node at depth d sit at ``center + separation * decay**d * direction``,
        with sibling directions spread as a regular simplex (randomly rotated).

        Raises:
            InputError: bad shape, k < 1, or non-positive scales.

        """
        if k < 1:
            raise InputError(f"latent dim k must be >= 1, got {k}")
        if separation <= 0 or sigma <= 0 or not 0 < decay <= 1:
            raise InputError("need separation > 0, sigma > 0 and 0 < decay <= 1")
        rng = np.random.default_rng(seed)
        tree = nx.DiGraph()
        means: list[np.ndarray] = []
        raw_w: list[float] = []

        def add(node_shape: Shape, center: np.ndarray, depth: int, parent: int | None) -> float:
            nid = tree.number_of_nodes()
            tree.add_node(nid, center=center, depth=depth, leaf=-1, mass=0.0)
            if parent is not None:
                tree.add_edge(parent, nid)
            if isinstance(node_shape, list):
                if not node_shape:
                    raise InputError("a tree shape has an empty list of children")
                dirs = _sibling_directions(len(node_shape), k, rng)
                step = separation * decay**depth
                mass = sum(
                    add(child, center + step * d, depth + 1, nid)
                    for child, d in zip(node_shape, dirs, strict=True)
                )
            else:
                mass = float(node_shape)
                if not mass > 0:
                    raise InputError(f"leaf masses must be positive numbers, got {node_shape!r}")
                tree.nodes[nid]["leaf"] = len(means)
                means.append(center)
                raw_w.append(mass)
            tree.nodes[nid]["mass"] = mass
            return mass

        total = add(shape, np.zeros(k), 0, None)
        for n in tree.nodes:
            tree.nodes[n]["mass"] /= total
        return cls(np.array(means), float(sigma), np.array(raw_w) / total, tree)

    @property
    def k(self) -> int:
        """Dimension of the information space."""
        return int(self.means.shape[1])

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``n`` points; returns (u (n, k), leaf label (n,))."""
        labels = rng.choice(len(self.weights), size=n, p=self.weights)
        return self.means[labels] + self.sigma * rng.normal(size=(n, self.k)), labels

    def log_prob(self, u: np.ndarray) -> np.ndarray:
        """Exact log density of ``u`` (n, k) -> (n,)."""
        # |u - m|² = |u|² - 2 u·m + |m|²: one (n, k) x (k, L) product, no (n, L, k) array; and
        # the log-sum-exp written out (scipy's checks its arguments at every call). The matching
        # polish evaluates this density ~300 times per alignment: 3x faster than the broadcast
        # and scipy.special.logsumexp (tests/test_data.py checks it against that form).
        u = np.asarray(u, dtype=float)
        d2 = np.maximum((u * u).sum(1)[:, None] - 2.0 * (u @ self.means.T)
                        + (self.means * self.means).sum(1)[None], 0.0)  # (n, L)
        a = np.log(self.weights) - (0.5 / self.sigma**2) * d2
        top = a.max(1)
        log_norm = -0.5 * self.k * np.log(2 * np.pi * self.sigma**2)
        return top + np.log(np.exp(a - top[:, None]).sum(1)) + log_norm


@dataclass(frozen=True)
class AdditiveWarp:
    """A random volume-preserving nonlinear map: additive couplings ``x_b += A tanh(B x_a + c)``.

    Attributes:
        layers: per layer (perm (D,), B (h, |a|), c (h,), A (|b|, h)).

    """

    layers: tuple[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], ...]

    @classmethod
    def random(cls, dim: int, *, n_layers: int, strength: float, hidden: int = 8,
               rng: np.random.Generator) -> AdditiveWarp:
        """Draw ``n_layers`` couplings of amplitude ``strength`` (0 = identity)."""
        layers = []
        if dim < 2:
            n_layers = 0
        for _ in range(n_layers):
            perm = rng.permutation(dim)
            a = dim // 2
            layers.append((
                perm,
                rng.normal(size=(hidden, a)) / np.sqrt(a),
                rng.normal(size=hidden) * 0.5,
                strength * rng.normal(size=(dim - a, hidden)) / np.sqrt(hidden),
            ))
        return cls(tuple(layers))

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Apply the warp to ``x`` (n, D)."""
        x = x.copy()
        for perm, b, c, a_mat in self.layers:
            ia, ib = perm[: b.shape[1]], perm[b.shape[1]:]
            x[:, ib] += np.tanh(x[:, ia] @ b.T + c) @ a_mat.T
        return x

    def inverse(self, y: np.ndarray) -> np.ndarray:
        """Exact inverse of `forward`."""
        y = y.copy()
        for perm, b, c, a_mat in reversed(self.layers):
            ia, ib = perm[: b.shape[1]], perm[b.shape[1]:]
            y[:, ib] -= np.tanh(y[:, ia] @ b.T + c) @ a_mat.T
        return y


@dataclass(frozen=True)
class HierarchicalGenerator:
    """The full generative model of the ``hierarchical`` dataset (see module docstring)."""

    mixture: HierarchicalMixture
    dim: int
    noise_std: float
    rotation: np.ndarray
    warp: AdditiveWarp

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Returns (x (n, D), u (n, k), leaf labels (n,))."""
        u, labels = self.mixture.sample(n, rng)
        e = self.noise_std * rng.normal(size=(n, self.dim - self.mixture.k))
        x = self.warp.forward(np.concatenate([u, e], axis=1) @ self.rotation.T)
        return x, u, labels

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        """Exact log density of ``x`` (n, D) -> (n,)."""
        y = self.warp.inverse(np.asarray(x, np.float64)) @ self.rotation
        k = self.mixture.k
        e = y[:, k:]
        log_noise = -0.5 * (e**2).sum(1) / self.noise_std**2 - 0.5 * e.shape[1] * np.log(
            2 * np.pi * self.noise_std**2
        )
        return self.mixture.log_prob(y[:, :k]) + log_noise
