"""A Ray Tune callback that shows trials, the best value so far and failures with rich."""

from __future__ import annotations

from typing import Any

from ray.tune import Callback


class RichProgress(Callback):
    """Updates a rich ``Progress`` task as trials finish or fail (runs on the driver)."""

    def __init__(self, progress: Any, task: Any, metric: str, mode: str) -> None:
        self.progress, self.task, self.metric, self.mode = progress, task, metric, mode
        self.done = self.failed = 0
        self.best: float | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles its callbacks with the experiment state: leave the display out."""
        return {**self.__dict__, "progress": None, "task": None}

    def _show(self) -> None:
        if self.progress is None:
            return
        best = "-" if self.best is None else f"{self.best:.4f}"
        self.progress.update(self.task, completed=self.done + self.failed,
                             info=f"best {self.metric} {best}  failed {self.failed}")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """A trial finished: count it and update the best value."""
        self.done += 1
        value = (trial.last_result or {}).get(self.metric)
        if value is not None:
            better = self.best is None or (value < self.best if self.mode == "min"
                                           else value > self.best)
            self.best = float(value) if better else self.best
        self._show()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """A trial raised: count the failure."""
        self.failed += 1
        self._show()
