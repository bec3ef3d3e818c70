"""Optuna's exhaustive grid sampler, for ask-and-tell use (Ray Tune's `OptunaSearch`).

`optuna.samplers.BruteForceSampler.after_trial` exists only to call ``study.stop()`` once the
grid is exhausted (it rebuilds the tree of tried parameters after every trial to find out).
Optuna allows ``stop`` only inside ``study.optimize``; Ray drives the study by ask and tell, so
the call raised and Ray logged it as a warning after the last trial ("`Study.stop` is supposed
to be invoked inside an objective function or a callback"). There is nothing to stop under ask
and tell: Ray ends the search after its number of trials (`flowtopo.sweep.space.trial_budget`
caps it at the grid's size), and Optuna stores each trial before ``after_trial`` runs. So this
subclass's ``after_trial`` does nothing. Imported lazily (it imports optuna); module level so
that ``Tuner.restore`` can unpickle it.
"""
from __future__ import annotations

from collections.abc import Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState


class ExhaustiveGridSampler(optuna.samplers.BruteForceSampler):
    """`BruteForceSampler` without its end-of-grid ``study.stop()`` (module docstring)."""

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        """Nothing to do under ask and tell (module docstring)."""
