import os

import numpy as np
import pytest
import torch

# Small thread pools keep the 2-core CI machine responsive; Ray and MLflow stay local.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


# Every device this machine has. On a GPU machine the same tests also run on CUDA
# (benchmarks/gpu_check.sh selects them with -k cuda); a CPU machine has no CUDA case to run.
DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    return torch.device(request.param)
