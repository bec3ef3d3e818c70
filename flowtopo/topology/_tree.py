"""`DensityTree`: the merge tree of a density's super-level sets, with per-node statistics."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np


@dataclass
class TreeNode:
    """One cluster of the tree.

    Attributes:
        id: node id (0 is the root).
        parent: parent id, None for the root.
        children: child ids (empty for leaves = modes).
        peak: highest log density in the cluster (its birth level).
        level: log-density level at which the children join (leaves: ``peak``).
        merge_level: level at which this cluster joins its parent (root: lowest level seen).
        persistence: ``peak - merge_level`` (leaves) or ``level - merge_level`` (inner nodes).
        mass: fraction of all points in the cluster's basin.
        members: (m,) indices of those points.
        centroid: (k,) mean of the members.
        covariance: (k, k) covariance of the members.
        depth: edges from the root.
        betti1: number of significant 1-dim holes (loops), when annotated, else None.

    """

    id: int
    parent: int | None
    children: list[int]
    peak: float
    level: float
    merge_level: float
    persistence: float
    mass: float
    members: np.ndarray
    centroid: np.ndarray
    covariance: np.ndarray
    depth: int
    betti1: int | None = None

    @property
    def is_leaf(self) -> bool:
        """True for modes."""
        return not self.children

    def to_dict(self, members: bool = False) -> dict[str, Any]:
        """JSON-ready form (member indices only when asked)."""
        d = {
            "id": self.id, "parent": self.parent, "children": list(self.children),
            "peak": self.peak, "level": self.level, "merge_level": self.merge_level,
            "persistence": self.persistence, "mass": self.mass, "depth": self.depth,
            "centroid": self.centroid.tolist(), "covariance": self.covariance.tolist(),
            "betti1": self.betti1, "size": len(self.members),
        }
        if members:
            d["members"] = self.members.tolist()
        return d


@dataclass
class DensityTree:
    """The merge tree of a density on a point cloud.

    Attributes:
        nodes: id -> `TreeNode`; node 0 is the root.
        labels: (n,) leaf id of each point's basin.
        diagram: (m, 2) 0-dim persistence pairs (birth = peak, death = merge level), for every
            local maximum of the kNN graph that died with persistence > 0, plus the global one.
        params: how the tree was built (k_neighbors, thresholds, density source).
        disconnected: True when the kNN graph fell apart; its pieces were then joined by
            bridges at the estimated gap level (``params["bridged"]``) or at the lowest level.

    """

    nodes: dict[int, TreeNode]
    labels: np.ndarray
    diagram: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)
    disconnected: bool = False

    @property
    def root(self) -> TreeNode:
        """The root cluster (all points)."""
        return self.nodes[0]

    def leaves(self) -> list[TreeNode]:
        """Modes, by decreasing mass."""
        return sorted((n for n in self.nodes.values() if n.is_leaf), key=lambda n: -n.mass)

    def internal(self) -> list[TreeNode]:
        """Non-leaf nodes, root first."""
        return sorted((n for n in self.nodes.values() if not n.is_leaf), key=lambda n: n.depth)

    def leaf_sets(self) -> set[frozenset[int]]:
        """For every non-root internal node, the set of leaf ids below it (its nesting)."""
        out = set()
        for node in self.internal():
            if node.id != 0:
                out.add(frozenset(self.leaves_below(node.id)))
        return out

    def leaves_below(self, node_id: int) -> list[int]:
        """Ids of the leaves in the subtree of ``node_id``."""
        node = self.nodes[node_id]
        if node.is_leaf:
            return [node_id]
        return [leaf for c in node.children for leaf in self.leaves_below(c)]

    def to_networkx(self) -> nx.DiGraph:
        """A DiGraph (edges parent -> child) whose node attributes are `TreeNode.to_dict`."""
        g = nx.DiGraph()
        for node in self.nodes.values():
            g.add_node(node.id, **node.to_dict())
        for node in self.nodes.values():
            for c in node.children:
                g.add_edge(node.id, c)
        return g

    def to_json(self, members: bool = False) -> str:
        """JSON text of the tree (nodes, diagram, params)."""
        return json.dumps({
            "nodes": [n.to_dict(members) for n in self.nodes.values()],
            "diagram": self.diagram.tolist(), "params": self.params,
            "disconnected": self.disconnected,
            **({"labels": self.labels.tolist()} if members else {}),
        }, default=float)

    @classmethod
    def from_json(cls, text: str) -> DensityTree:
        """Inverse of ``to_json(members=True)`` (without members, member arrays are empty)."""
        d = json.loads(text)
        nodes = {}
        for nd in d["nodes"]:
            nodes[nd["id"]] = TreeNode(
                id=nd["id"], parent=nd["parent"], children=nd["children"], peak=nd["peak"],
                level=nd["level"], merge_level=nd["merge_level"], persistence=nd["persistence"],
                mass=nd["mass"], members=np.asarray(nd.get("members", []), dtype=np.int64),
                centroid=np.asarray(nd["centroid"]), covariance=np.asarray(nd["covariance"]),
                depth=nd["depth"], betti1=nd["betti1"])
        return cls(nodes, np.asarray(d.get("labels", []), dtype=np.int64),
                   np.asarray(d["diagram"]).reshape(-1, 2), d["params"], d["disconnected"])

    def pretty(self) -> Any:
        """A ``rich.tree.Tree`` for the terminal."""
        from rich.tree import Tree

        def label(n: TreeNode) -> str:
            kind = "mode" if n.is_leaf else f"{len(n.children)} children"
            loops = f", loops {n.betti1}" if n.betti1 is not None else ""
            return (f"[bold]node {n.id}[/bold] ({kind}): mass {n.mass:.3f}, peak {n.peak:.2f}, "
                    f"merges at {n.merge_level:.2f}, persistence {n.persistence:.2f}{loops}")

        def add(t: Tree, node: TreeNode) -> None:
            for c in sorted(node.children, key=lambda c: -self.nodes[c].mass):
                add(t.add(label(self.nodes[c])), self.nodes[c])

        root = Tree(label(self.root))
        add(root, self.root)
        return root

    def __repr__(self) -> str:
        return (f"DensityTree({len(self.nodes)} nodes, {len(self.leaves())} modes, "
                f"n={len(self.labels)})")
