import os

import numpy as np
import pytest
import torch
from _cli import run_cli
from torch.utils._python_dispatch import TorchDispatchMode

# Small thread pools keep the 2-core CI machine responsive; Ray and MLflow stay local.
os.environ.setdefault("OMP_NUM_THREADS", "2")

# `make test` runs the suite in two processes (pytest-xdist, one test file per process at a time):
# one torch thread each, so the two share the 2 cores instead of four threads fighting over them.
_XDIST_WORKER = "PYTEST_XDIST_WORKER" in os.environ
if _XDIST_WORKER:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

# The files that take longest, longest first (per-file sums of `--durations=0` on 2 cores, see
# README). xdist hands a process the next file when it runs out (`--dist loadfile` with
# `--no-loadscope-reorder`), so starting with the long ones keeps both busy to the end. A file not
# named here keeps its place after them; the order changes only when tests run, never what runs.
SLOWEST_FIRST = ("test_sweep.py", "test_cluster.py", "test_translate.py", "test_matching.py",
                 "test_pipeline.py", "test_demo.py", "test_sweep_jobs.py", "test_train.py")


def pytest_collection_modifyitems(config, items) -> None:
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    # list.sort is stable: the order within a file, and of the files not named, is kept.
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


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
