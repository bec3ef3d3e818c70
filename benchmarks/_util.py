"""Shared helpers of the benchmarks: timing and printing the command that made the numbers."""

from __future__ import annotations

import platform
import sys
import time
from collections.abc import Callable

import torch


def header(title: str) -> None:
    """Print the title, the exact command, and the machine."""
    print(f"# {title}")
    print(f"command: python -m {' '.join([sys.modules['__main__'].__spec__.name, *sys.argv[1:]])}")
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}, python {platform.python_version()}")


def time_it(fn: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    """Median seconds per call of ``fn`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]
