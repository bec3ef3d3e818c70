"""A Ray Tune callback that shows trials, the best value so far and failures with rich.

The counts live in a `SweepDisplay` (the command's bar), never in the callback: Tune pickles
its callbacks with the experiment and `flowtopo sweep resume` restores them, so a callback
unpickled while a display is shown (`showing`) updates that one, and the bar of a resumed
sweep counts on across the restored search and its seeds phase.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from ray.tune import Callback


class SweepDisplay:
    """A rich ``Progress`` task counting finished and failed trials and the best value."""

    def __init__(self, progress: Any, task: Any, metric: str, mode: str) -> None:
        self.progress, self.task, self.metric, self.mode = progress, task, metric, mode
        self.done = self.failed = 0
        self.best: float | None = None

    def finished(self, value: float | None) -> None:
        """A trial finished with ``value`` of the metric (None: it reported none)."""
        self.done += 1
        if value is not None:
            better = self.best is None or (value < self.best if self.mode == "min"
                                           else value > self.best)
            self.best = float(value) if better else self.best
        self._show()

    def failed_one(self) -> None:
        """A trial raised."""
        self.failed += 1
        self._show()

    def _show(self) -> None:
        best = "-" if self.best is None else f"{self.best:.4f}"
        self.progress.update(self.task, completed=self.done + self.failed,
                             info=f"best {self.metric} {best}  failed {self.failed}")


_SHOWN: list[SweepDisplay] = []  # the display of the command running now, if any


@contextlib.contextmanager
def showing(display: SweepDisplay) -> Iterator[SweepDisplay]:
    """While active, `RichProgress` callbacks restored from a pickle update ``display``."""
    _SHOWN.append(display)
    try:
        yield display
    finally:
        _SHOWN.remove(display)


class RichProgress(Callback):
    """Updates a `SweepDisplay` as trials finish or fail (runs on the driver)."""

    def __init__(self, display: SweepDisplay | None) -> None:
        self.display = display

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles its callbacks with the experiment state: leave the display out."""
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restored (a resume): show on the display of the command that restores."""
        self.display = _SHOWN[-1] if _SHOWN else None

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """A trial finished: count it and update the best value."""
        if self.display is not None:
            self.display.finished((trial.last_result or {}).get(self.display.metric))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """A trial raised: count the failure."""
        if self.display is not None:
            self.display.failed_one()
