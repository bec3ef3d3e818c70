"""Representations of real networks as data: hidden activations of two trained classifiers.

The use case of flowtopo is translating between the representations of two DIFFERENT neural
networks that saw the same world. `representation_pair` makes such a pair without a network
connection: it trains two classifiers (torch, a few seconds on a CPU) on one base dataset
(digits, wine, the synthetic hierarchical sets, a user's file), each with its own architecture
and seed, and reads one hidden layer of each on the same inputs.

What a translation method may use, and what it may not:

- ``source`` / ``target``: the fit rows. The source network's activations on one half of the
  base training split, the target network's on the OTHER half: no input is seen by both sides,
  so nothing pairs them.
- ``test_source`` / ``test_target``: both networks on the base test split, row i the same
  input: for scoring only.

Architectures are registry entries (`NETWORKS`) named by a short spec string:
``mlp:64:relu`` (hidden widths joined by ``-``, then the activation) or ``cnn:8-16:relu``
(channel counts of 3x3 convolutions, then a dense layer of width 32; image-shaped data only).
The representation is the last hidden layer (after its activation).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from flowtopo.data import Dataset, load_dataset
from flowtopo.errors import InputError

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "sigmoid": nn.Sigmoid, "elu": nn.ELU,
}


@dataclass(frozen=True)
class NetworkSpec:
    """One classifier architecture: ``kind:widths:activation``.

    Attributes:
        kind: a key of `NETWORKS` (``mlp`` or ``cnn``).
        widths: hidden widths (mlp) or convolution channels (cnn).
        activation: a key of `ACTIVATIONS`.

    """

    kind: str
    widths: tuple[int, ...]
    activation: str

    @classmethod
    def parse(cls, text: str) -> NetworkSpec:
        """Read ``mlp:64:relu``, ``mlp:96-32:tanh`` or ``cnn:8-16:relu``.

        Raises:
            InputError: a malformed spec, an unknown kind or activation, a width < 1.

        """
        parts = text.split(":")
        if len(parts) != 3:
            raise InputError(f"network spec {text!r}: expected KIND:WIDTHS:ACTIVATION, e.g. "
                             "mlp:64:relu or cnn:8-16:relu")
        kind, widths, act = parts
        if kind not in NETWORKS:
            raise InputError(f"network spec {text!r}: unknown kind {kind!r}; valid: "
                             f"{', '.join(NETWORKS)}")
        if act not in ACTIVATIONS:
            raise InputError(f"network spec {text!r}: unknown activation {act!r}; valid: "
                             f"{', '.join(ACTIVATIONS)}")
        try:
            w = tuple(int(v) for v in widths.split("-"))
        except ValueError:
            raise InputError(f"network spec {text!r}: widths must be integers joined by '-'"
                             ) from None
        if not w or min(w) < 1:
            raise InputError(f"network spec {text!r}: widths must be >= 1")
        return cls(kind, w, act)

    def __str__(self) -> str:
        return f"{self.kind}:{'-'.join(map(str, self.widths))}:{self.activation}"


class MLPClassifier(nn.Module):
    """Dense layers ``D -> widths... -> classes``; `hidden` is the last hidden layer."""

    def __init__(self, spec: NetworkSpec, dim: int, classes: int,
                 image_shape: tuple[int, int] | None = None) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = dim
        for w in spec.widths:
            layers += [nn.Linear(prev, w), ACTIVATIONS[spec.activation]()]
            prev = w
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(prev, classes)

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """(n, D) -> (n, widths[-1])."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, D) -> (n, classes) logits."""
        return self.head(self.hidden(x))


class CNNClassifier(nn.Module):
    """3x3 convolutions (``widths`` channels, 2x2 max-pool after each) and a dense layer of 32.

    The representation (`hidden`) is that dense layer. Image-shaped data only.
    """

    dense = 32

    def __init__(self, spec: NetworkSpec, dim: int, classes: int,
                 image_shape: tuple[int, int] | None = None) -> None:
        super().__init__()
        if image_shape is None or image_shape[0] * image_shape[1] != dim:
            raise InputError("a cnn needs image-shaped data (digits, mnist); use mlp for "
                             "tabular data")
        self.image_shape = image_shape
        act = ACTIVATIONS[spec.activation]
        convs: list[nn.Module] = []
        prev, h, w = 1, *image_shape
        for c in spec.widths:
            convs += [nn.Conv2d(prev, c, 3, padding=1), act()]
            if min(h, w) >= 4:
                convs.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            prev = c
        self.convs = nn.Sequential(*convs, nn.Flatten())
        self.body = nn.Sequential(nn.Linear(prev * h * w, self.dense), act())
        self.head = nn.Linear(self.dense, classes)

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """(n, D) -> (n, 32)."""
        return self.body(self.convs(x.reshape(-1, 1, *self.image_shape)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, D) -> (n, classes) logits."""
        return self.head(self.hidden(x))


NETWORKS: dict[str, type[MLPClassifier] | type[CNNClassifier]] = {
    "mlp": MLPClassifier,
    "cnn": CNNClassifier,
}


@dataclass
class TrainedNetwork:
    """A classifier trained on a base dataset, and its held-out accuracy."""

    spec: NetworkSpec
    net: nn.Module
    test_accuracy: float
    seed: int

    @torch.no_grad()
    def activations(self, x: np.ndarray) -> np.ndarray:
        """The representation of ``x`` (n, D): (n, width) float64."""
        self.net.eval()
        return self.net.hidden(torch.as_tensor(x, dtype=torch.float32)).double().numpy()


def train_network(spec: NetworkSpec, ds: Dataset, *, seed: int = 0, epochs: int = 60,
                  lr: float = 3e-3, batch_size: int = 64) -> TrainedNetwork:
    """Train the classifier ``spec`` on ``ds`` (labels required) with Adam and cross-entropy.

    Raises:
        InputError: the dataset has no labels, or a cnn on data that is not image-shaped.

    """
    if ds.y_train is None or ds.y_test is None:
        raise InputError(f"{ds.name}: representation pairs need class labels (a classifier is "
                         "trained on them)")
    torch.manual_seed(seed)
    classes = int(max(ds.y_train.max(), ds.y_test.max())) + 1
    image = ds.info.get("image_shape")
    net = NETWORKS[spec.kind](spec, ds.dim, classes,
                              tuple(image) if image is not None else None)  # type: ignore[arg-type]
    x = torch.as_tensor(ds.x_train, dtype=torch.float32)
    y = torch.as_tensor(ds.y_train, dtype=torch.long)
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        net.train()
        for idx in torch.randperm(len(x), generator=gen).split(batch_size):
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        pred = net(torch.as_tensor(ds.x_test, dtype=torch.float32)).argmax(1).numpy()
    return TrainedNetwork(spec, net, float((pred == ds.y_test).mean()), seed)


@dataclass
class RepresentationPair:
    """Two networks' representations of one base dataset (see the module docstring).

    Attributes:
        source: (n_s, d_s) source activations on fit half A (unpaired with ``target``).
        target: (n_t, d_t) target activations on fit half B.
        labels_source: (n_s,) class labels of half A (for scoring and reports only).
        labels_target: (n_t,) class labels of half B.
        test_source: (m, d_s) source activations on the test inputs.
        test_target: (m, d_t) target activations on the SAME test inputs (row i = row i).
        labels_test: (m,) their labels.
        paired_source: (n, d_s) the source network on EVERY training input, and
        paired_target: (n, d_t) the target network on the same inputs, row for row: for
            SUPERVISED ceilings only (a translation method must never see them).
        info: base dataset, network specs, seeds, test accuracies.

    """

    source: np.ndarray
    target: np.ndarray
    labels_source: np.ndarray
    labels_target: np.ndarray
    test_source: np.ndarray
    test_target: np.ndarray
    labels_test: np.ndarray
    paired_source: np.ndarray
    paired_target: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    FILES = ("source", "target", "labels_source", "labels_target", "test_source",
             "test_target", "labels_test", "paired_source", "paired_target")

    def save(self, out: str | Path) -> Path:
        """Write one ``.npy`` per array and ``info.json`` into the folder ``out``."""
        p = Path(out)
        p.mkdir(parents=True, exist_ok=True)
        for name in self.FILES:
            np.save(p / f"{name}.npy", getattr(self, name), allow_pickle=False)
        (p / "info.json").write_text(json.dumps(self.info, indent=2))
        return p

    @classmethod
    def load(cls, path: str | Path) -> RepresentationPair:
        """Read a folder written by `save`.

        Raises:
            InputError: a missing or unreadable file.

        """
        p = Path(path)
        arrays = {}
        for name in cls.FILES:
            f = p / f"{name}.npy"
            if not f.is_file():
                raise InputError(f"{p}: not a representation pair (missing {f.name})")
            try:
                arrays[name] = np.load(f, allow_pickle=False)
            except ValueError as err:
                raise InputError(f"{f}: unreadable ({err})") from None
        info = json.loads((p / "info.json").read_text()) if (p / "info.json").is_file() else {}
        return cls(**arrays, info=info)


def representation_pair(base: str = "digits", source: str = "mlp:64:relu",
                        target: str = "mlp:96-32:tanh", *, seed_source: int = 0,
                        seed_target: int = 1, epochs: int = 60, split_seed: int = 0,
                        base_options: dict[str, Any] | None = None) -> RepresentationPair:
    """Train two classifiers on ``base`` and return their representations (module docstring).

    Args:
        base: a dataset name or file path (`flowtopo.data.load_dataset`); needs labels.
        source: the source network's spec (`NetworkSpec.parse`).
        target: the target network's spec.
        seed_source: the source network's initialisation and batch-order seed.
        seed_target: the target network's.
        epochs: training epochs of each classifier.
        split_seed: seeds the split of the training inputs into the two fit halves.
        base_options: loader options of ``base``.

    Raises:
        InputError: unknown dataset or spec, no labels, a cnn on tabular data.

    """
    spec_s, spec_t = NetworkSpec.parse(source), NetworkSpec.parse(target)
    ds = load_dataset(base, **(base_options or {}))
    net_s = train_network(spec_s, ds, seed=seed_source, epochs=epochs)
    net_t = train_network(spec_t, ds, seed=seed_target, epochs=epochs)
    perm = np.random.default_rng(split_seed).permutation(len(ds.x_train))
    half_a, half_b = np.sort(perm[: len(perm) // 2]), np.sort(perm[len(perm) // 2:])
    assert ds.y_train is not None and ds.y_test is not None  # train_network checked
    info = {"base": base, "base_options": base_options or {},
            "source": {"network": str(spec_s), "seed": seed_source,
                       "test_accuracy": net_s.test_accuracy},
            "target": {"network": str(spec_t), "seed": seed_target,
                       "test_accuracy": net_t.test_accuracy},
            "epochs": epochs, "split_seed": split_seed}
    return RepresentationPair(
        source=net_s.activations(ds.x_train[half_a]),
        target=net_t.activations(ds.x_train[half_b]),
        labels_source=ds.y_train[half_a], labels_target=ds.y_train[half_b],
        test_source=net_s.activations(ds.x_test), test_target=net_t.activations(ds.x_test),
        labels_test=ds.y_test, paired_source=net_s.activations(ds.x_train),
        paired_target=net_t.activations(ds.x_train), info=info)


__all__ = [
    "NETWORKS",
    "NetworkSpec",
    "RepresentationPair",
    "TrainedNetwork",
    "representation_pair",
    "train_network",
]
