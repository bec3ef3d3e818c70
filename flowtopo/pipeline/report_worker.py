"""The report's pictures drawn in a second process, started before the report's queries.

A model section (`flowtopo.pipeline.report._model_section`: load the checkpoint, encode the
held-out data, build the density tree, draw three pictures) needs torch, scipy.stats and the
topology layer: about 2 s of imports on the 2-core machine, then about 1 s per model.
`ModelWorker` spawns one process that does those imports while the parent queries MLflow and
downloads the checkpoints (the worker imports no MLflow); it then draws the sections it is
sent, and then the experiment's two pictures (the training curves, the family comparison),
sent as soon as the parent has read what they show: the parent never imports matplotlib, and
the worker draws them with its fonts already loaded. At 1,000 runs the worker took
`flowtopo report` to 0.70x its time (side by side; 9.0-11.3 s against 12.0-17.8 s, as fast as
the shared machine ran at the time); the two pictures in it (the curves drawn as one line per
family, `report_plots._polyline`) and the console script's exit without collections
(`flowtopo.cli.exit_without_collecting`) took it to 0.85x again (side by side; 10.1 s median
against 11.9 s: docs/benchmarks.md).

Written by hand (one process, one pipe): ``multiprocessing.Pool`` restarts a worker that dies
while starting without end (a hang, e.g. when the parent runs a script from stdin, which a
spawned process cannot re-import), and ``concurrent.futures.ProcessPoolExecutor`` cannot be
terminated on Python 3.11 (an error would wait for the worker's imports).

Whatever happens to the worker, the report is drawn: if it cannot start, dies, stops answering
(`WAIT_S`), or fails with anything but an `InputError`, the parent does what it has not
answered itself
(a bug then shows its traceback there). An `InputError` the worker meets (a checkpoint that
does not load) is raised in the parent, as it would have been there.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

from flowtopo.errors import InputError

Section = dict[str, Any]

JOBS = ("sections", "loss_curves", "families")
"""What the worker does, by name (`_job`): the model sections (`_model_section` per model),
the training curves (`plot_loss_curves`) and the family comparison (`plot_families`)."""

WAIT_S = (120.0, 120.0)
"""How long `ModelWorker` waits for one answer: the first number, plus the second per model
for the sections (a section takes ~1 s on the 2-core machine; a large held-out set, longer).
A worker that has not answered by then is killed and the parent does the rest itself."""


def _job(name: str, args: tuple[Any, ...]) -> Any:
    """Do job ``name`` (one of `JOBS`) here, in whichever process calls it."""
    if name == "sections":
        from flowtopo.pipeline.report import _model_section

        return [_model_section(*a) for a in args[0]]
    from flowtopo.pipeline.report_plots import plot_families, plot_loss_curves

    return {"loss_curves": plot_loss_curves, "families": plot_families}[name](*args)


class ModelWorker:
    """One spawned process that draws the report's pictures; a context manager.

    Jobs (`submit`) are answered in the order they were sent (`result`).
    """

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
        self._jobs: list[tuple[str, tuple[Any, ...]]] = []
        self._answers: list[tuple[bool, Any]] = []  # the worker's, in the jobs' order
        self._sections = -1  # the sections' job, once `draw` sent it

    def submit(self, name: str, *args: Any) -> int:
        """Send the worker job ``name`` (one of `JOBS`) with ``args``; its ticket for `result`."""
        if name not in JOBS:
            raise ValueError(f"unknown report job {name!r} (one of {', '.join(JOBS)})")
        self._jobs.append((name, args))
        if self._proc is not None:
            try:
                self._conn.send((name, args))
            except OSError:  # the worker is gone: `result` does the jobs here
                self._stop()
        return len(self._jobs) - 1

    def result(self, ticket: int, wait_s: float | None = None) -> Any:
        """What job ``ticket`` returned (done here if the worker cannot).

        Args:
            ticket: `submit`'s.
            wait_s: how long to wait for each answer (default: from `WAIT_S`); past it the
                worker is killed and its jobs not answered yet are done here.

        Raises:
            InputError: a checkpoint that does not load (the worker's or this process's).

        """
        while len(self._answers) <= ticket and self._proc is not None:
            name, args = self._jobs[len(self._answers)]
            wait = wait_s if wait_s is not None else WAIT_S[0] + WAIT_S[1] * (
                len(args[0]) if name == "sections" else 0)
            try:
                answer = self._conn.recv() if self._conn.poll(wait) else None
            except (EOFError, OSError):  # the worker is gone (its own error is on stderr)
                answer = None
            if answer is None:  # gone or hung: killed (SIGKILL stops even a stopped process)
                self._stop()
            else:
                self._answers.append(answer)
        if ticket < len(self._answers):
            ok, value = self._answers[ticket]
            if not ok:
                raise value
            return value
        return _job(*self._jobs[ticket])

    def draw(self, models: list[tuple[str, str, Path, Path, Path]]) -> None:
        """Send the worker `_model_section`'s arguments, one tuple per model (once).

        `sections` collects what it drew.
        """
        self._sections = self.submit("sections", list(models))

    def sections(self, wait_s: float | None = None) -> list[Section]:
        """The sections `draw` asked for, in its order (drawn here if the worker cannot).

        Args:
            wait_s: how long to wait for the worker (default: from `WAIT_S`); past it the
                worker is killed and the sections are drawn here.

        Raises:
            InputError: a checkpoint that does not load (the worker's or this process's).

        """
        if self._sections < 0:
            self.draw([])
        return self.result(self._sections, wait_s)

    def _stop(self) -> None:
        if self._proc is not None:
            if self._proc.is_alive():
                self._proc.kill()
            self._proc.join()
            self._proc = None

    def close(self) -> None:
        """Stop the worker (at once, whatever it is doing); later jobs are done here."""
        if self._proc is not None:
            self._proc.terminate()
            self._proc.join()
            self._proc = None
        self._conn.close()

    def __enter__(self) -> ModelWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _serve(conn: Any) -> None:
    """The worker: import, then do each job it is sent, in order, until the pipe closes."""
    import scipy.stats  # noqa: F401  (the datasets' first call pays for it otherwise)
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)  # one core: the other is the parent's
    threadpool_limits(1)
    import flowtopo.checkpoint
    import flowtopo.pipeline.report_plots
    import flowtopo.plotting
    import flowtopo.topology.plot  # noqa: F401
    from flowtopo.pipeline.report import _model_section  # noqa: F401

    while True:
        try:
            name, args = conn.recv()
        except EOFError:  # the parent is done (or failed before it had anything to draw)
            return
        try:
            conn.send((True, _job(name, args)))
        except InputError as err:
            conn.send((False, err))
