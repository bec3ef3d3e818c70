import os

import numpy as np
import pytest

# Small thread pools keep the 2-core CI machine responsive; Ray and MLflow stay local.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
