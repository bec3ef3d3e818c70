"""The Optuna define-by-run search space, and turning a trial's parameters into a TrainSpec.

`define_space` is a module-level function (bound to the sweep with functools.partial) so that
``Tuner.restore`` can unpickle it.
"""

from __future__ import annotations

import warnings
from typing import Any

from flowtopo.priors import PRIORS, suggest_float, suggest_prior
from flowtopo.sweep.spec import SEARCHABLE_MODEL, SEARCHABLE_TRAIN, SweepSpec
from flowtopo.train import TrainConfig
from flowtopo.train_spec import DatasetSpec, ModelSpec, Named, TrainSpec


def _suggest(trial: Any, spec: SweepSpec) -> dict[str, Any]:
    k = int(spec.model.get("k", 2))
    prior = suggest_prior(trial, k, list(spec.search.priors), spec.search.priors)
    low, high = spec.search.lr
    lr = low if low == high else trial.suggest_float("lr", low, high, log=True)
    batch = trial.suggest_categorical("batch_size", list(spec.search.batch_size))
    flow_params = {p: trial.suggest_categorical(f"flow.{p}", list(choices))
                   for p, choices in spec.search.flow.items()}
    train = {p: suggest_float(trial, f"train.{p}", 0.0, 1.0, spec.search.train, p,
                              log=SEARCHABLE_TRAIN[p]) for p in spec.search.train}
    model = {p: suggest_float(trial, f"model.{p}", 0.0, 1.0, spec.search.model, p,
                              log=SEARCHABLE_MODEL[p]) for p in spec.search.model}
    return {"prior": prior, "lr": lr, "batch_size": batch, "flow": flow_params,
            "train": train, "model": model}


def define_space(trial: Any, spec: dict[str, Any]) -> dict[str, Any]:
    """Optuna define-by-run space: family, then its parameters, lr, batch size, flow choices.

    Returns the one constant a search trial's config holds beside what Optuna suggested: the
    seed of the search phase (0). The sweep spec and where to record reach the trainable
    through ``tune.with_parameters`` (`flowtopo.sweep.runner.trainable_for`), never the
    config: trial folders, result.json and MLflow params hold only what was searched.
    """
    _suggest(trial, SweepSpec.model_validate(spec))
    return {"seed": 0}


def resolve(params: dict[str, Any], spec: SweepSpec, seed: int, out: str,
            device: str = "cpu") -> TrainSpec:
    """The `TrainSpec` of a trial, from its suggested ``params`` (flat Optuna names)."""
    import optuna

    chosen = _suggest(optuna.trial.FixedTrial(params), spec)
    model = {**spec.model, **chosen["model"]}
    flow = Named.model_validate(model.pop("flow", {"name": "coupling"}))
    flow.params = {**flow.params, **chosen["flow"]}
    prior = chosen["prior"]
    return TrainSpec(
        dataset=DatasetSpec.model_validate(spec.dataset.model_dump()),
        model=ModelSpec(**model, flow=flow, prior=Named(name=prior["name"],
                                                         params=prior["params"])),
        train=TrainConfig(**spec.train, **chosen["train"], lr=chosen["lr"],
                          batch_size=chosen["batch_size"], regularizer=spec.regularizer,
                          seed=seed, device=device),
        out=out,
    )


def check_grid(spec: SweepSpec) -> int:
    """For ``sampler: grid``, the number of grid points; else 0.

    Raises:
        InputError: the grid is infinite (a continuous parameter was left as a range).

    """
    import optuna

    from flowtopo.errors import InputError

    if spec.sampler != "grid":
        return 0
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():  # BruteForceSampler is flagged experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(sampler=optuna.samplers.BruteForceSampler(seed=0))
    try:
        study.optimize(lambda t: (_suggest(t, spec), 0.0)[1], n_trials=10_000)
    except ValueError as err:
        raise InputError(f"sampler grid needs a finite space: {err} Give each continuous "
                         "parameter one value (e.g. lr: [0.003, 0.003], gmm: {spread: 3.0})"
                         ) from None
    return len(study.trials)


def trial_budget(spec: SweepSpec) -> int:
    """Trials of the search phase: ``num_samples``, capped at the grid's size for ``grid``.

    Past its last point a grid has nothing new to offer (the brute-force sampler would repeat
    points), and under Ray's ask and tell nothing stops the study at the end of the grid.

    Raises:
        InputError: the grid is infinite (`check_grid`).

    """
    n_grid = check_grid(spec)
    return min(spec.num_samples, n_grid) if n_grid else spec.num_samples


def sample_configs(spec: SweepSpec, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Dry run: ``n`` configurations drawn from the space by Optuna's random sampler."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append(_suggest(trial, spec))
        study.tell(trial, 0.0)
    return out


class _Seen(dict):
    """A family's narrowing dict that records which keys the family's ``suggest`` read."""

    def __init__(self, items: dict[str, Any]) -> None:
        super().__init__(items)
        self.seen: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        """``dict.get``, recorded."""
        self.seen.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> Any:
        self.seen.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.seen.add(str(key))
        return super().__contains__(key)


def check_trials(spec: SweepSpec, seed: int = 0) -> int:
    """Build what a trial of every family would build, without training: fail before Ray.

    Loads the dataset (its name and options), resolves one configuration per prior family
    (every narrowing key must be one the family reads), validates its training config (batch
    size, learning rate) and builds its model (``k`` <= D, flow and prior parameters).

    Returns:
        The number of families checked.

    Raises:
        InputError: the first problem, in one line.

    """
    import optuna
    from pydantic import ValidationError

    from flowtopo.data import load_dataset
    from flowtopo.errors import InputError
    from flowtopo.train_job import build_model

    ds = load_dataset(spec.dataset.name, **spec.dataset.options)
    k = int(spec.model.get("k", 2))
    priors = {f: _Seen(dict(v or {})) for f, v in spec.search.priors.items()}
    probe = spec.model_copy(update={"search": spec.search.model_copy(update={"priors": priors})})
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    families = [f for f in priors if f in PRIORS and PRIORS[f].min_k <= k]
    for fam in families or list(priors):
        study.enqueue_trial({"prior": fam})
        trial = study.ask()
        _suggest(trial, probe)
        unread = sorted(set(priors[fam]) - priors[fam].seen)
        if unread:
            raise InputError(f"search.priors.{fam}: unknown key {', '.join(map(repr, unread))} "
                             f"(the family never reads it)")
        try:
            ts = resolve(trial.params, spec, seed, "unused", "cpu")
        except ValidationError as err:
            e = err.errors()[0]
            where = ".".join(str(p) for p in e["loc"])
            raise InputError(f"a {fam} trial's config: {where}: {e['msg']}") from None
        build_model(ts.model, ds.dim, seed)
        study.tell(trial, 0.0)
    _check_every_choice(spec, ds.dim)
    return len(families)


def _check_every_choice(spec: SweepSpec, dim: int) -> None:
    """Each flow choice and batch size on its own (a random draw would miss the bad one)."""
    from pydantic import ValidationError

    from flowtopo.errors import InputError
    from flowtopo.flows import build_flow

    flow = Named.model_validate(spec.model.get("flow", {"name": "coupling"}))
    for p, choices in spec.search.flow.items():
        for value in choices:
            build_flow({"name": flow.name, "params": {**flow.params, p: value}}, dim)
    for b in spec.search.batch_size:
        try:
            TrainConfig.model_validate({**spec.train, "batch_size": b})
        except ValidationError as err:
            raise InputError(f"search.batch_size {b!r}: {err.errors()[0]['msg']}") from None
