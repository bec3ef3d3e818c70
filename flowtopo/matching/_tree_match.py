"""Unordered rooted tree matching with deletions (recursive optimal assignment of children).

``M(u, v) = c(u, v) + min_σ Σ M(child pairs) + deletion costs`` where the children of u and v are
assigned by the Hungarian algorithm on a square matrix padded with deletion costs
(``delete × subtree mass``). Node cost ``c`` uses quantities that do not change under affine
maps of the latent space: masses, persistences (log-density differences) and peak heights
relative to the root's peak. Ordered tree edit distances (zss, apted) would need a canonical
child order, and general unordered edit distance is NP-hard; this top-down matching is
polynomial. Reference: Zhang, "A constrained edit distance between unordered labeled trees",
Algorithmica 1996.

Near-ties between assignments (symmetric sibling subtrees) are enumerated as alternatives.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from flowtopo.topology import DensityTree


@dataclass
class TreeMatching:
    """One matching: its cost and the matched (source id, target id) node pairs."""

    cost: float
    pairs: list[tuple[int, int]] = field(default_factory=list)


class TreeMatcher:
    """Matches two `DensityTree` s. Call `best` or `candidates`.

    Args:
        source: tree of the source space.
        target: tree of the target space.
        w_mass: weight of |mass_u - mass_v|.
        w_persistence: weight of the relative persistence difference.
        w_peak: weight of the difference of peak heights below the root's peak (nats, scaled).
        delete: cost per unit of unmatched mass.
        tie: assignments within this cost of the best are alternatives (symmetry).
        max_candidates: cap on enumerated alternatives.

    """

    def __init__(self, source: DensityTree, target: DensityTree, *, w_mass: float = 1.0,
                 w_persistence: float = 0.2, w_peak: float = 0.02, delete: float = 1.0,
                 tie: float = 0.03, max_candidates: int = 64) -> None:
        self.s, self.t = source, target
        self.w = (w_mass, w_persistence, w_peak)
        self.delete, self.tie, self.cap = delete, tie, max_candidates
        self._memo: dict[tuple[int, int], float] = {}
        self._alts: dict[tuple[int, int], list[list[tuple[int, int]]]] = {}

    def node_cost(self, u: int, v: int) -> float:
        """Cost of matching node u (source) with v (target)."""
        a, b = self.s.nodes[u], self.t.nodes[v]
        wm, wp, wk = self.w
        pers = abs(a.persistence - b.persistence) / (a.persistence + b.persistence + 1.0)
        peak = abs((self.s.root.peak - a.peak) - (self.t.root.peak - b.peak))
        return wm * abs(a.mass - b.mass) + wp * pers + wk * min(peak, 50.0) / 50.0

    def cost(self, u: int, v: int) -> float:
        """Optimal cost of matching the subtrees of u and v (memoised)."""
        key = (u, v)
        if key in self._memo:
            return self._memo[key]
        cu, cv = self.s.nodes[u].children, self.t.nodes[v].children
        total = self.node_cost(u, v)
        alts: list[list[tuple[int, int]]] = [[]]
        if cu or cv:
            del_u = [self.delete * self.s.nodes[c].mass for c in cu]
            del_v = [self.delete * self.t.nodes[d].mass for d in cv]
            if cu and cv:
                sub = np.array([[self.cost(c, d) for d in cv] for c in cu])
            else:
                sub = np.zeros((len(cu), len(cv)))
            best, alts = self._assign(cu, cv, sub, del_u, del_v)
            total += best
        self._memo[key] = total
        self._alts[key] = alts
        return total

    def _assign(self, cu: list[int], cv: list[int], sub: np.ndarray, del_u: list[float],
                del_v: list[float]) -> tuple[float, list[list[tuple[int, int]]]]:
        a, b = len(cu), len(cv)
        big = np.zeros((a + b, a + b))
        big[:a, :b] = sub
        big[:a, b:] = np.where(np.eye(a) > 0, np.array(del_u)[:, None], 1e9)
        big[a:, :b] = np.where(np.eye(b) > 0, np.array(del_v)[None, :], 1e9)
        ri, ci = linear_sum_assignment(big)
        best = float(big[ri, ci].sum())
        best_pairs = [(cu[i], cv[j]) for i, j in zip(ri, ci, strict=True) if i < a and j < b]
        alts = [best_pairs]
        if 1 < a == b <= 5:  # enumerate full assignments of small sibling sets for near-ties
            for perm in itertools.permutations(range(b)):
                c = float(sub[np.arange(a), perm].sum())
                pairs = [(cu[i], cv[perm[i]]) for i in range(a)]
                if c <= best + self.tie and sorted(pairs) != sorted(best_pairs):
                    alts.append(pairs)
        return best, alts

    def _expand(self, u: int, v: int) -> list[TreeMatching]:
        out: list[TreeMatching] = []
        for alt in self._alts[(u, v)]:
            combos: list[TreeMatching] = [TreeMatching(0.0, [(u, v)])]
            for c, d in alt:
                subs = self._expand(c, d)
                combos = [TreeMatching(x.cost, x.pairs + y.pairs) for x in combos
                          for y in subs][: self.cap]
            out.extend(combos)
        return out[: self.cap]

    def candidates(self) -> list[TreeMatching]:
        """The optimal matching and its near-tied alternatives; each with the root cost."""
        total = self.cost(0, 0)
        found = self._expand(0, 0)
        unique: dict[tuple[tuple[int, int], ...], TreeMatching] = {}
        for m in found:
            unique.setdefault(tuple(sorted(m.pairs)), TreeMatching(total, m.pairs))
        return list(unique.values())

    def best(self) -> TreeMatching:
        """The optimal matching."""
        return self.candidates()[0]
