"""Random rotations for the generators, importing ``scipy.stats`` only when one is drawn.

``scipy.stats`` takes ~0.7 s to import; `flowtopo.data` is imported by every command that
loads a checkpoint or ranks runs, most of which draw no rotation.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def random_rotation(dim: int, random_state: Any) -> np.ndarray:
    """A (dim, dim) rotation drawn uniformly from SO(dim) (`scipy.stats.special_ortho_group`).

    Args:
        dim: >= 2.
        random_state: a seed or a ``numpy.random.Generator``, passed on as is.

    """
    from scipy.stats import special_ortho_group

    return np.asarray(special_ortho_group.rvs(dim, random_state=random_state))
