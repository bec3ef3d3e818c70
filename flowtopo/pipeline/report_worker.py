"""The report's model sections drawn in a second process, started before the report's queries.

A model section (`flowtopo.pipeline.report._model_section`: load the checkpoint, encode the
held-out data, build the density tree, draw three pictures) needs torch, scipy.stats and the
topology layer: about 2 s of imports on the 2-core machine, then about 1 s per model.
`ModelWorker` spawns one process that does those imports while the parent queries MLflow,
downloads the checkpoints (the worker imports no MLflow) and draws the training curves; it then
draws the sections it is sent. At 1,000 runs this takes `flowtopo report` to 0.70x its time
(side by side; 9.0-11.3 s against 12.0-17.8 s, as fast as the shared machine ran at the time:
benchmarks/sweep.py, docs/benchmarks.md).

Written by hand (one process, one pipe): ``multiprocessing.Pool`` restarts a worker that dies
while starting without end (a hang, e.g. when the parent runs a script from stdin, which a
spawned process cannot re-import), and ``concurrent.futures.ProcessPoolExecutor`` cannot be
terminated on Python 3.11 (an error would wait for the worker's imports).

Whatever happens to the worker, the report is drawn: if it cannot start, dies, stops answering
(`WAIT_S`), or fails with anything but an `InputError`, the parent draws the sections itself
(a bug then shows its traceback there). An `InputError` the worker meets (a checkpoint that
does not load) is raised in the parent, as it would have been there.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

from flowtopo.errors import InputError

Section = dict[str, Any]

WAIT_S = (120.0, 120.0)
"""How long `ModelWorker.sections` waits for the worker: the first number plus the second per
model (a section takes ~1 s on the 2-core machine; a large held-out set, longer). A worker
that has not answered by then is killed and the parent draws the sections."""


class ModelWorker:
    """One spawned process that draws the report's model sections; a context manager."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc: Any = ctx.Process(target=_serve, args=(child,), daemon=True,
                                      name="flowtopo-report-models")
        try:
            self._proc.start()
        except (AssertionError, OSError):  # a daemonic parent may not have children; no fork
            self._proc = None
        child.close()
        self._todo: list[tuple[Any, ...]] = []

    def draw(self, models: list[tuple[str, str, Path, Path, Path]]) -> None:
        """Send the worker `_model_section`'s arguments, one tuple per model (once).

        `sections` collects what it drew.
        """
        self._todo = list(models)
        if self._proc is not None:
            try:
                self._conn.send(self._todo)
            except OSError:  # the worker is gone
                self._proc = None

    def sections(self, wait_s: float | None = None) -> list[Section]:
        """The sections `draw` asked for, in its order (drawn here if the worker cannot).

        Args:
            wait_s: how long to wait for the worker (default: from `WAIT_S`); past it the
                worker is killed and the sections are drawn here.

        Raises:
            InputError: a checkpoint that does not load (the worker's or this process's).

        """
        if wait_s is None:
            wait_s = WAIT_S[0] + WAIT_S[1] * len(self._todo)
        if self._proc is not None:
            try:
                answered = self._conn.poll(wait_s)
                ok, value = self._conn.recv() if answered else (None, None)
            except (EOFError, OSError):  # the worker is gone (its own error is on stderr)
                ok, value = None, None
            if ok is None and self._proc.is_alive():  # hung: killed (SIGKILL stops even a
                self._proc.kill()  # stopped process), its sections drawn below
                self._proc.join()
                self._proc = None
            if ok:
                return value
            if ok is False:
                raise value
        from flowtopo.pipeline.report import _model_section

        return [_model_section(*args) for args in self._todo]

    def close(self) -> None:
        """Stop the worker (at once, whatever it is doing)."""
        if self._proc is not None:
            self._proc.terminate()
            self._proc.join()
        self._conn.close()

    def __enter__(self) -> ModelWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _serve(conn: Any) -> None:
    """The worker: import, then draw the sections of the one request it gets."""
    import scipy.stats  # noqa: F401  (the datasets' first call pays for it otherwise)
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)  # one core: the other is the parent's
    threadpool_limits(1)
    import flowtopo.checkpoint
    import flowtopo.pipeline.report_plots
    import flowtopo.topology.plot  # noqa: F401
    from flowtopo.pipeline.report import _model_section

    try:
        todo = conn.recv()
    except EOFError:  # the parent failed before it had anything to draw
        return
    try:
        conn.send((True, [_model_section(*args) for args in todo]))
    except InputError as err:
        conn.send((False, err))
