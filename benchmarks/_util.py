"""Shared helpers of the benchmarks: timing and printing the command that made the numbers."""

from __future__ import annotations

import atexit
import platform
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode


def header(title: str) -> None:
    """Print the title, the exact command, and the machine; at exit, the run's wall time.

    The wall time is what `make bench` spends in this benchmark (issue 18: all of them in
    under 20 minutes on 2 cores).
    """
    start = time.perf_counter()
    atexit.register(lambda: print(f"\nwall time: {time.perf_counter() - start:.0f} s"))
    print(f"# {title}")
    print(f"command: python -m {' '.join([sys.modules['__main__'].__spec__.name, *sys.argv[1:]])}")
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}, python {platform.python_version()}")


def one_thread() -> None:
    """A ``--jobs`` worker's initializer: one torch and one BLAS thread, warnings off.

    Two such processes share the machine's two cores.
    """
    import warnings

    from threadpoolctl import threadpool_limits

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    threadpool_limits(1)


def in_processes(fn: Callable[..., Any], tasks: Sequence[tuple[Any, ...]], jobs: int
                 ) -> Iterator[Any]:
    """``fn(*task)`` of each task, yielded in the tasks' order.

    ``jobs`` > 1: in that many spawned processes with `one_thread` (``fn`` must be a module-level
    function, its tasks picklable); else one after another in this process, on its threads.
    """
    if jobs <= 1:
        yield from (fn(*task) for task in tasks)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                             initializer=one_thread) as pool:
        yield from pool.map(fn, *zip(*tasks, strict=True))


def time_interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 3, *,
                     sync: Callable[[], object] | None = None) -> dict[str, float]:
    """Median seconds per call of each ``fns`` value, the calls taken in turn (a, b, c, a, ...).

    Interleaving puts every contender under the same machine load, so ratios stay fair on a
    shared or throttled machine where timing one function after the other would not.
    ``sync`` (e.g. ``torch.cuda.synchronize``) runs before each clock read, so asynchronous
    GPU work is counted in the call that queued it.
    """
    wait = sync or (lambda: None)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            wait()
            t = time.perf_counter()
            fn()
            wait()
            times[name].append(time.perf_counter() - t)
    return {name: sorted(ts)[len(ts) // 2] for name, ts in times.items()}


class _OpCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None
                           ) -> Any:
        self.n += 1
        return func(*args, **(kwargs or {}))


def count_ops(fn: Callable[[], object]) -> int:
    """ATen operators dispatched by one call of ``fn`` (forward, backward and optimizer alike).

    On a CPU, small models pay a roughly fixed cost per operator (dispatch, autograd
    bookkeeping, thread hand-off), so this count explains step times that FLOPs do not.
    """
    with _OpCounter() as counter:
        fn()
    return counter.n
