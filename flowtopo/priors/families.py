"""The prior families. Each is one class: parameters, distribution, search space, ground truth.

The torch distributions are built with ``validate_args=False``: their parameters are valid by
construction (scales are ``exp`` of a log scale, weights are logits), and torch's checks would
read a boolean back from the device several times per ``log_prob``, a host sync in every
training step on a GPU.
"""

from __future__ import annotations

from typing import Any

import networkx as nx
import numpy as np
import torch
from torch import nn
from torch.distributions import (
    Categorical,
    Distribution,
    Independent,
    MixtureSameFamily,
    Normal,
)

from flowtopo.errors import InputError, check_keywords
from flowtopo.priors._base import (
    Prior,
    Trial,
    positive,
    single_node_tree,
    suggest_choice,
    suggest_float,
    suggest_int,
)
from flowtopo.priors._dists import Shell, SmoothedBox, Superposition, Torus

MAX_COMPONENTS = 4096  # beyond it a mixture is not a prior to search (and sampling breaks at 2^24)


class _DtypeAnchor(Prior):
    """Priors without learnable tensors keep a buffer so ``.to(float64)`` still sets their dtype."""

    def __init__(self, k: int, **params: Any) -> None:
        super().__init__(k, **params)
        self.register_buffer("_anchor", torch.zeros(()))

    @property
    def dtype(self) -> torch.dtype:
        """The floating dtype this prior computes in."""
        return self._anchor.dtype

    @property
    def device(self) -> torch.device:
        """The device this prior computes on."""
        return self._anchor.device


class GaussianPrior(Prior):
    """``N(0, diag(σ²))``: isotropic (one σ) or diagonal (k σs), learnable or fixed.

    An isotropic Gaussian makes any rotation of the latent unidentifiable (DESIGN.md).
    """

    name = "gaussian"

    def __init__(self, k: int, *, diagonal: bool = False, scale: float = 1.0,
                 learnable: bool = True) -> None:
        super().__init__(k, diagonal=diagonal, scale=scale, learnable=learnable)
        init = torch.full((k if diagonal else 1,), float(np.log(positive(scale, "scale",
                                                                         self.name))))
        self.log_scale = nn.Parameter(init, requires_grad=learnable)

    def forward(self) -> Distribution:
        """``Independent(Normal(0, σ), 1)``."""
        scale = self.log_scale.exp().expand(self.k)
        return Independent(Normal(torch.zeros_like(scale), scale, validate_args=False), 1,
                           validate_args=False)

    @classmethod
    def suggest(cls, trial: Trial, k: int, narrow: dict[str, Any]) -> dict[str, Any]:
        """Search: diagonal or isotropic."""
        return {"diagonal": suggest_choice(trial, "gaussian.diagonal", [False, True], narrow,
                                           "diagonal")}

    def true_tree(self) -> nx.DiGraph:
        """One cluster."""
        return single_node_tree(torch.zeros(self.k))

    def modes(self) -> torch.Tensor:
        """The origin."""
        return torch.zeros(1, self.k)


class GMMPrior(Prior):
    """A K-component Gaussian mixture with diagonal covariances ("a big Gaussian mixture").

    Means start at seeded random positions ``N(0, spread²)``; with ``learnable`` the means,
    scales and weights are trained, else fixed.
    """

    name = "gmm"

    def __init__(self, k: int, *, components: int = 8, spread: float = 3.0, scale: float = 0.5,
                 learnable: bool = True, seed: int = 0) -> None:
        super().__init__(k, components=components, spread=spread, scale=scale,
                         learnable=learnable, seed=seed)
        if not isinstance(components, int) or not 1 <= components <= MAX_COMPONENTS:
            raise InputError(f"prior 'gmm': components must be an integer in 1..{MAX_COMPONENTS},"
                             f" got {components!r}")
        positive(spread, "spread", self.name)
        gen = torch.Generator().manual_seed(seed)
        self.means = nn.Parameter(spread * torch.randn(components, k, generator=gen),
                                  requires_grad=learnable)
        self.log_scales = nn.Parameter(
            torch.full((components, k), float(np.log(positive(scale, "scale", self.name)))),
            requires_grad=learnable)
        self.logits = nn.Parameter(torch.zeros(components), requires_grad=learnable)

    def forward(self) -> Distribution:
        """``MixtureSameFamily`` of diagonal Gaussians."""
        comp = Independent(Normal(self.means, self.log_scales.exp(), validate_args=False), 1,
                           validate_args=False)
        return MixtureSameFamily(Categorical(logits=self.logits, validate_args=False), comp,
                                 validate_args=False)

    @classmethod
    def suggest(cls, trial: Trial, k: int, narrow: dict[str, Any]) -> dict[str, Any]:
        """Search: number of components (conditional), spread, scale."""
        return {
            "components": suggest_int(trial, "gmm.components", 2, 32, narrow, "components"),
            "spread": suggest_float(trial, "gmm.spread", 1.0, 6.0, narrow, "spread"),
            "scale": suggest_float(trial, "gmm.scale", 0.1, 1.0, narrow, "scale", log=True),
        }


class HierarchicalGMMPrior(Prior):
    """A tree-structured Gaussian mixture: clusters of clusters, with a known density tree.

    Every tree node holds a learnable offset from its parent; a leaf's mean is the sum of the
    offsets on its path, so moving a node moves its whole subtree. Leaves share the tree shape
    given by ``branching`` (a balanced tree); leaf weights and per-leaf scales are learnable.
    """

    name = "hierarchical_gmm"

    def __init__(self, k: int, *, branching: list[int] | None = None, separation: float = 6.0,
                 decay: float = 0.4, scale: float = 0.5, learnable: bool = True,
                 seed: int = 0) -> None:
        from flowtopo.data import HierarchicalMixture, balanced_shape

        branching = list(branching or [2, 2])
        super().__init__(k, branching=branching, separation=separation, decay=decay, scale=scale,
                         learnable=learnable, seed=seed)
        if not branching or any(not isinstance(b, int) or b < 1 for b in branching):
            raise InputError(f"prior 'hierarchical_gmm': branching must be a list of integers "
                             f">= 1, got {branching!r}")
        mix = HierarchicalMixture.build(balanced_shape(branching), k, separation=separation,
                                        decay=decay, sigma=positive(scale, "scale", self.name),
                                        seed=seed)
        tree = mix.tree
        n_nodes = tree.number_of_nodes()
        offsets = np.zeros((n_nodes, k))
        for parent, child in tree.edges:
            offsets[child] = tree.nodes[child]["center"] - tree.nodes[parent]["center"]
        leaves = [n for n in tree if tree.out_degree(n) == 0]
        path = np.zeros((len(leaves), n_nodes))
        for i, leaf in enumerate(leaves):
            path[i, [*nx.ancestors(tree, leaf), leaf]] = 1.0
        self._shape = nx.DiGraph(tree.edges)
        self._leaves = leaves
        self.register_buffer("path", torch.as_tensor(path, dtype=torch.float32))
        self.offsets = nn.Parameter(torch.as_tensor(offsets, dtype=torch.float32),
                                    requires_grad=learnable)
        self.log_scales = nn.Parameter(torch.full((len(leaves),), float(np.log(scale))),
                                       requires_grad=learnable)
        self.logits = nn.Parameter(torch.zeros(len(leaves)), requires_grad=learnable)

    def leaf_means(self) -> torch.Tensor:
        """(L, k) leaf means: the sum of the offsets along each root-to-leaf path."""
        return self.path @ self.offsets

    def forward(self) -> Distribution:
        """A ``MixtureSameFamily`` of isotropic Gaussians at the leaves."""
        scales = self.log_scales.exp()[:, None].expand(-1, self.k)
        comp = Independent(Normal(self.leaf_means(), scales, validate_args=False), 1,
                           validate_args=False)
        return MixtureSameFamily(Categorical(logits=self.logits, validate_args=False), comp,
                                 validate_args=False)

    @classmethod
    def suggest(cls, trial: Trial, k: int, narrow: dict[str, Any]) -> dict[str, Any]:
        """Search: depth and branching (conditional on depth), separation, scale."""
        depth = suggest_int(trial, "hierarchical_gmm.depth", 1, 3, narrow, "depth")
        branching = [
            suggest_int(trial, f"hierarchical_gmm.branching{d}", 2, 4, narrow, "branching")
            for d in range(depth)
        ]
        return {
            "branching": branching,
            "separation": suggest_float(trial, "hierarchical_gmm.separation", 3.0, 10.0, narrow,
                                        "separation"),
            "scale": suggest_float(trial, "hierarchical_gmm.scale", 0.2, 1.0, narrow, "scale",
                                   log=True),
        }

    def true_tree(self) -> nx.DiGraph:
        """The generation tree, with masses from the current weights and current centres.

        It is the density tree when siblings are well separated relative to the leaf scales.
        """
        w = torch.softmax(self.logits.detach(), 0).cpu().numpy()
        off = self.offsets.detach().cpu().numpy().astype(np.float64)
        t = nx.DiGraph()
        t.add_node(0, center=off[0], mass=0.0)
        for parent, child in nx.bfs_edges(self._shape, 0):
            t.add_node(child, center=t.nodes[parent]["center"] + off[child], mass=0.0)
            t.add_edge(parent, child)
        for i, leaf in enumerate(self._leaves):
            for a in [*nx.ancestors(t, leaf), leaf]:
                t.nodes[a]["mass"] += float(w[i])
        return t

    def modes(self) -> torch.Tensor:
        """(L, k) leaf means (the modes when the leaves are separated)."""
        return self.leaf_means().detach()


class UniformBoxPrior(_DtypeAnchor):
    """A box ``[-a, a]^k`` with logistic-smoothed edges (positive, differentiable density)."""

    name = "uniform_box"

    def __init__(self, k: int, *, half_width: float = 2.0, softness: float = 0.1) -> None:
        super().__init__(k, half_width=half_width, softness=softness)
        positive(half_width, "half_width", self.name)
        positive(softness, "softness", self.name)

    def forward(self) -> Distribution:
        """`SmoothedBox`."""
        t = self._anchor
        return SmoothedBox(t.new_tensor(self.params["half_width"]),
                           t.new_tensor(self.params["softness"]), self.k)

    @classmethod
    def suggest(cls, trial: Trial, k: int, narrow: dict[str, Any]) -> dict[str, Any]:
        """Search: half width and edge softness."""
        return {
            "half_width": suggest_float(trial, "uniform_box.half_width", 1.0, 4.0, narrow,
                                        "half_width"),
            "softness": suggest_float(trial, "uniform_box.softness", 0.05, 0.5, narrow,
                                      "softness", log=True),
        }

    def true_tree(self) -> nx.DiGraph:
        """One (flat-topped) cluster."""
        return single_node_tree(torch.zeros(self.k))


class _ShellPrior(_DtypeAnchor):
    """Shared code of `RingPrior` and `SpherePrior`."""

    def __init__(self, k: int, *, radius: float = 2.0, width: float = 0.3) -> None:
        super().__init__(k, radius=radius, width=width)
        positive(radius, "radius", self.name)
        positive(width, "width", self.name)

    def _m(self) -> int:
        raise NotImplementedError

    def forward(self) -> Distribution:
        """`Shell`."""
        return Shell(self.params["radius"], self.params["width"], self._m(), self.k, self.dtype,
                     self.device)

    @classmethod
    def suggest(cls, trial: Trial, k: int, narrow: dict[str, Any]) -> dict[str, Any]:
        """Search: radius and width."""
        return {
            "radius": suggest_float(trial, f"{cls.name}.radius", 1.0, 4.0, narrow, "radius"),
            "width": suggest_float(trial, f"{cls.name}.width", 0.1, 0.6, narrow, "width",
                                   log=True),
        }

    def true_tree(self) -> nx.DiGraph:
        """One cluster (with a hole: 1-dim homology is what tells it from a blob)."""
        return single_node_tree(torch.zeros(self.k))


class RingPrior(_ShellPrior):
    """A ring of radius r and width w in the first two dims, times ``N(0, w²)`` in the others."""

    name = "ring"
    min_k = 2

    def _m(self) -> int:
        return 2


class SpherePrior(_ShellPrior):
    """A thickened (k-1)-sphere: a radial Gaussian shell of radius r and width w in R^k.

    For k = 1 it is two bumps at ±r (the 0-sphere).
    """

    name = "sphere"

    def _m(self) -> int:
        return self.k


class TorusPrior(_DtypeAnchor):
    """A thickened torus surface (major radius R, tube radius r, width w) in the first 3 dims."""

    name = "torus"
    min_k = 3

    def __init__(self, k: int, *, major: float = 3.0, minor: float = 1.0,
                 width: float = 0.2) -> None:
        super().__init__(k, major=major, minor=minor, width=width)
        for what, v in (("major", major), ("minor", minor), ("width", width)):
            positive(v, what, self.name)
        if major < minor + 8 * width:
            raise InputError(f"prior 'torus': need major >= minor + 8*width for an exact "
                             f"normaliser, got major={major}, minor={minor}, width={width}")

    def forward(self) -> Distribution:
        """`Torus`."""
        p = self.params
        return Torus(p["major"], p["minor"], p["width"], self.k, self.dtype, self.device)

    @classmethod
    def suggest(cls, trial: Trial, k: int, narrow: dict[str, Any]) -> dict[str, Any]:
        """Search: tube radius and width; the major radius keeps the normaliser exact."""
        minor = suggest_float(trial, "torus.minor", 0.5, 1.5, narrow, "minor")
        width = suggest_float(trial, "torus.width", 0.1, 0.3, narrow, "width")
        return {"major": minor + 8 * width + 0.5, "minor": minor, "width": width}

    def true_tree(self) -> nx.DiGraph:
        """One cluster (two independent loops and a void)."""
        return single_node_tree(torch.zeros(self.k))


class SuperpositionPrior(Prior):
    """A learnable-weight mixture of members of different families (e.g. 2 blobs + a ring).

    ``members`` is a list of ``{name, params}``; each member gets a learnable ``offset``
    (its location) so members of shape families (rings, boxes) can sit apart.
    """

    name = "superposition"

    def __init__(self, k: int, *, members: list[dict[str, Any]] | None = None,
                 offsets: list[list[float]] | None = None) -> None:
        members = members or [
            {"name": "gaussian", "params": {"scale": 0.5}},
            {"name": "gaussian", "params": {"scale": 0.5}},
            {"name": "sphere", "params": {"radius": 1.5, "width": 0.2}},
        ]
        super().__init__(k, members=members, offsets=offsets)
        if not members:
            raise InputError("prior 'superposition': members must be a non-empty list")
        self.members = nn.ModuleList(
            [build_prior({"name": m.get("name"), "k": k, "params": m.get("params", {})})
             for m in members])
        if offsets is None:
            angles = np.linspace(0, 2 * np.pi, len(members), endpoint=False)
            offsets = [[4.0 * np.cos(a), 4.0 * np.sin(a), *[0.0] * (k - 2)][:k] if k > 1
                       else [4.0 * (i - (len(members) - 1) / 2)] for i, a in enumerate(angles)]
        off = torch.as_tensor(np.asarray(offsets, dtype=np.float32))
        if off.shape != (len(members), k):
            raise InputError(f"prior 'superposition': offsets must have shape "
                             f"({len(members)}, {k}), got {tuple(off.shape)}")
        self.offsets = nn.Parameter(off)
        self.logits = nn.Parameter(torch.zeros(len(members)))

    def forward(self) -> Distribution:
        """`Superposition` of the shifted members."""
        from torch.distributions import AffineTransform, TransformedDistribution

        dists = [TransformedDistribution(m(), [AffineTransform(o, 1.0, event_dim=1)],
                                         validate_args=False)
                 for m, o in zip(self.members, self.offsets, strict=True)]
        return Superposition(dists, self.logits, self.k)

    @classmethod
    def suggest(cls, trial: Trial, k: int, narrow: dict[str, Any]) -> dict[str, Any]:
        """Search: number of blobs and of shells (conditional), their scales."""
        blobs = suggest_int(trial, "superposition.blobs", 1, 3, narrow, "blobs")
        shells = suggest_int(trial, "superposition.shells", 1, 2, narrow, "shells")
        scale = suggest_float(trial, "superposition.scale", 0.2, 1.0, narrow, "scale", log=True)
        radius = suggest_float(trial, "superposition.radius", 1.0, 2.0, narrow, "radius")
        members = [{"name": "gaussian", "params": {"scale": scale}}] * blobs + [
            {"name": "sphere", "params": {"radius": radius, "width": 0.2}}] * shells
        return {"members": members}


class FlowPrior(Prior):
    """A learned prior: a neural spline flow (zuko NSF) over ``N(0, I_k)``; exact log_prob.

    The adversarial auto-encoder then learns the distribution it is constrained to.
    Reference: Durkan et al., "Neural Spline Flows", NeurIPS 2019.
    """

    name = "flow_prior"

    def __init__(self, k: int, *, transforms: int = 3, hidden: int = 32) -> None:
        import zuko

        super().__init__(k, transforms=transforms, hidden=hidden)
        if not isinstance(transforms, int) or transforms < 1:
            raise InputError(f"prior 'flow_prior': transforms must be an integer >= 1, got "
                             f"{transforms!r}")
        if not isinstance(hidden, int) or hidden < 1:
            raise InputError(f"prior 'flow_prior': hidden must be an integer >= 1, got "
                             f"{hidden!r}")
        self.flow = zuko.flows.NSF(features=k, transforms=transforms,
                                   hidden_features=[hidden, hidden])

    def forward(self) -> Distribution:
        """Zuko's ``NormalizingFlow`` distribution."""
        return self.flow()

    @classmethod
    def suggest(cls, trial: Trial, k: int, narrow: dict[str, Any]) -> dict[str, Any]:
        """Search: number of transforms and hidden width."""
        return {
            "transforms": suggest_int(trial, "flow_prior.transforms", 1, 4, narrow, "transforms"),
            "hidden": suggest_choice(trial, "flow_prior.hidden", [16, 32, 64], narrow, "hidden"),
        }


PRIORS: dict[str, type[Prior]] = {
    cls.name: cls
    for cls in (GaussianPrior, GMMPrior, HierarchicalGMMPrior, UniformBoxPrior, RingPrior,
                TorusPrior, SpherePrior, SuperpositionPrior, FlowPrior)
}


def build_prior(spec: dict[str, Any]) -> Prior:
    """Build a prior from ``{name, k, params}`` (the output of `Prior.to_dict`).

    Raises:
        InputError: unknown family (the message lists the valid ones) or bad parameters.

    """
    name = spec.get("name")
    if name not in PRIORS:
        raise InputError(f"unknown prior family {name!r}; valid: {', '.join(PRIORS)}")
    cls = PRIORS[name]
    params = dict(spec.get("params") or {})
    check_keywords(f"prior {name!r}", cls, params, fixed=("k",))
    return cls(int(spec["k"]), **params)


def suggest_prior(trial: Trial, k: int, families: list[str],
                  narrow: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Define-by-run space over families: choose ``prior`` then that family's parameters.

    Families whose ``min_k`` exceeds ``k`` are left out.

    Returns:
        ``{name, k, params}`` for `build_prior`.

    """
    unknown = [f for f in families if f not in PRIORS]
    if unknown:
        raise InputError(f"unknown prior family {unknown[0]!r}; valid: {', '.join(PRIORS)}")
    valid = [f for f in families if PRIORS[f].min_k <= k]
    if not valid:
        raise InputError(f"none of the prior families {families} works for k={k}")
    name = trial.suggest_categorical("prior", valid)
    params = PRIORS[name].suggest(trial, k, (narrow or {}).get(name, {}))
    return {"name": name, "k": k, "params": params}
