import os

import numpy as np
import pytest
import torch
from _cli import run_cli
from torch.utils._python_dispatch import TorchDispatchMode

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


class HostReads(TorchDispatchMode):
    """Counts reads of a tensor's value back to the host (a device sync on a GPU)."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += func is torch.ops.aten._local_scalar_dense.default
        return func(*args, **(kwargs or {}))


@pytest.fixture
def host_reads() -> type[HostReads]:
    """``with host_reads() as r: ...`` then ``r.n``: the host reads made inside."""
    return HostReads


@pytest.fixture(scope="session", autouse=True)
def _private_config_home(tmp_path_factory):
    """flowtopo's per-user files (the sweep signing key) in a folder of this test session.

    Set in the environment, so CLI subprocesses and Ray's driver see the same folder.
    """
    old = os.environ.get("FLOWTOPO_CONFIG_HOME")
    os.environ["FLOWTOPO_CONFIG_HOME"] = str(tmp_path_factory.mktemp("config-home"))
    yield
    if old is None:
        os.environ.pop("FLOWTOPO_CONFIG_HOME", None)
    else:
        os.environ["FLOWTOPO_CONFIG_HOME"] = old


@pytest.fixture(scope="session")
def cli():
    """`run_cli`: ``cli("sweep", "validate", path)`` -> returncode, stdout, stderr."""
    return run_cli
