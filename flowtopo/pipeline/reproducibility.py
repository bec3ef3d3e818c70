"""Is a model's density tree the data's, or its seed's? Reproducibility across seeds.

The premise of tree matching is that the tree of a latent density reflects the data, so two
models of the same data (seeds) must give the same tree on the same inputs. Two measures, both
oracle-free:

- ``leaf_ari``: the adjusted Rand index between the two models' leaf labels of the SAME inputs
  (each model's density tree on its own latents of those inputs; scikit-learn
  ``adjusted_rand_score``). 1 = the same partition into modes; 0 = unrelated.
- ``sym_kl``: ``KL(p_a || p_b) + KL(p_b || p_a)`` between the two models' EXACT data densities,
  in nats per data dimension, Monte Carlo over samples drawn from each model (a FlowAE's
  density is exact, so no estimator enters but the sample mean).

`flowtopo.pipeline.best.rank_families` ranks prior families by fit AND by these.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from flowtopo.errors import InputError


@dataclass
class Reproducibility:
    """Agreement of two models of the same data (module docstring)."""

    leaf_ari: float
    sym_kl: float
    modes: tuple[int, int]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def tree_reproducibility(model_a: Any, model_b: Any, x: np.ndarray, *, n_samples: int = 2000,
                         min_persistence: float = 2.0, seed: int = 0) -> Reproducibility:
    """`Reproducibility` of two trained `flowtopo.model.FlowAE` s on the inputs ``x`` (n, D).

    Raises:
        InputError: the models do not take inputs of ``x``'s width, or too few inputs.

    """
    import torch
    from sklearn.metrics import adjusted_rand_score

    from flowtopo.topology import density_tree

    x = np.asarray(x)
    if len(x) < 20:
        raise InputError(f"reproducibility needs at least 20 inputs, got {len(x)}")
    labels, modes = [], []
    for m in (model_a, model_b):
        m.eval()
        if m.dim != x.shape[1]:
            raise InputError(f"model of dimension {m.dim} cannot encode inputs of width "
                             f"{x.shape[1]}")
        tree = density_tree(m.latents(x), m.prior.numpy_log_prob,
                            min_persistence=min_persistence)
        labels.append(tree.labels)
        modes.append(len(tree.leaves()))
    torch.manual_seed(seed)
    kl = 0.0
    with torch.no_grad():
        for p, q in ((model_a, model_b), (model_b, model_a)):
            xs = p.sample(n_samples)
            kl += float((p.log_prob(xs) - q.log_prob(xs.to(next(q.parameters())))).mean())
    return Reproducibility(float(adjusted_rand_score(*labels)), kl / model_a.dim,
                           (modes[0], modes[1]))


def pairwise_reproducibility(models: dict[str, Any], x: np.ndarray, *, seed: int = 0
                             ) -> dict[str, dict[str, float]]:
    """For each model, its mean ``leaf_ari`` and ``sym_kl`` against every other of ``models``.

    Returns {} with fewer than two models.
    """
    out: dict[str, list[Reproducibility]] = {name: [] for name in models}
    for a, b in itertools.combinations(models, 2):
        r = tree_reproducibility(models[a], models[b], x, seed=seed)
        out[a].append(r)
        out[b].append(r)
    return {name: {"repro_leaf_ari": float(np.mean([r.leaf_ari for r in rs])),
                   "repro_sym_kl": float(np.mean([r.sym_kl for r in rs]))}
            for name, rs in out.items() if rs}
