"""Low-dimensional toy shapes for pictures: the seed's tangled 3-D clouds and 2-D shapes."""

from __future__ import annotations

import numpy as np


def trefoil(n: int, rng: np.random.Generator, noise: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """A noisy trefoil knot in R^3; labels are thirds of the curve. Returns (x (n, 3), y (n,))."""
    t = rng.uniform(0, 2 * np.pi, n)
    x = np.stack([np.sin(t) + 2 * np.sin(2 * t), np.cos(t) - 2 * np.cos(2 * t), -np.sin(3 * t)], 1)
    return x + noise * rng.normal(size=x.shape), (3 * t / (2 * np.pi)).astype(int)


def linked_rings(
    n: int, rng: np.random.Generator, noise: float = 0.08
) -> tuple[np.ndarray, np.ndarray]:
    """Two linked circles of radius 1 in R^3 (a Hopf link). Returns (x (n, 3), ring label (n,))."""
    y = rng.integers(0, 2, n)
    t = rng.uniform(0, 2 * np.pi, n)
    a = np.stack([np.cos(t), np.sin(t), np.zeros(n)], 1)
    b = np.stack([1 + np.cos(t), np.zeros(n), np.sin(t)], 1)
    x = np.where(y[:, None] == 0, a, b)
    return x + noise * rng.normal(size=x.shape), y


def rings(n: int, rng: np.random.Generator, noise: float = 0.08) -> tuple[np.ndarray, np.ndarray]:
    """Two concentric circles (radii 1 and 2.5) in R^2. Returns (x (n, 2), ring label (n,))."""
    y = rng.integers(0, 2, n)
    t = rng.uniform(0, 2 * np.pi, n)
    r = np.where(y == 0, 1.0, 2.5)
    x = np.stack([r * np.cos(t), r * np.sin(t)], 1)
    return x + noise * rng.normal(size=x.shape), y


def moons(n: int, rng: np.random.Generator, noise: float = 0.08) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's two interleaving half circles. Returns (x (n, 2), moon label (n,))."""
    from sklearn.datasets import make_moons

    return make_moons(n, noise=noise, random_state=int(rng.integers(2**31)))


def pinwheel(n: int, rng: np.random.Generator, arms: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """A pinwheel of ``arms`` curved Gaussian arms in R^2. Returns (x (n, 2), arm label (n,))."""
    y = rng.integers(0, arms, n)
    feats = rng.normal(size=(n, 2)) * np.array([0.3, 0.05]) + np.array([1.0, 0.0])
    angle = 2 * np.pi * y / arms + 0.25 * np.exp(feats[:, 0])
    c, s = np.cos(angle), np.sin(angle)
    x = np.stack([c * feats[:, 0] - s * feats[:, 1], s * feats[:, 0] + c * feats[:, 1]], 1)
    return 2 * x, y
