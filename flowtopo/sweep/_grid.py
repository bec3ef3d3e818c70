"""Optuna's exhaustive grid sampler, for ask-and-tell use (Ray Tune's `OptunaSearch`).

`optuna.samplers.BruteForceSampler` calls ``study.stop()`` once the grid is exhausted, which
Optuna allows only inside ``study.optimize``. Ray drives the study by ask and tell, so that call
raises, and Ray logs the error as a warning after the last trial ("`Study.stop` is supposed to
be invoked inside an objective function or a callback"), although nothing is wrong: the trial
was recorded (Optuna stores it before ``after_trial`` returns) and Ray stops asking once it has
run ``num_samples`` trials. This subclass skips that one call. Imported lazily (it imports
optuna); module level so that ``Tuner.restore`` can unpickle it.
"""

from __future__ import annotations

from collections.abc import Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState


class ExhaustiveGridSampler(optuna.samplers.BruteForceSampler):
    """`BruteForceSampler` whose end-of-grid ``study.stop()`` is skipped outside optimize."""

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        """Optuna's hook after each trial (see the module docstring)."""
        try:
            super().after_trial(study, trial, state, values)
        except RuntimeError as err:
            if "Study.stop" not in str(err):
                raise
