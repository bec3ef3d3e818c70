"""Training a `FlowAE`: plain PyTorch, device-agnostic.

Per batch (all likelihood terms in nats per data dimension):

- ``mle``: the exact ``-log p(x)`` (prior + noise terms), plus ``recon_weight`` × reconstruction.
- ``adversarial`` / ``mmd`` / ``swd``: ``recon_weight`` × reconstruction from z with resampled
  noise, ``noise_weight`` × ``-log N(n; 0, σ²I)``, ``reg_weight`` × the distribution-matching term
  on z, and ``prior_weight`` × ``-log p_prior(z.detach())`` so learnable priors fit the codes.

A discriminator is trained in every mode (alternating updates), so the adversarial losses are
recorded for every run; only the ``adversarial`` regulariser feeds its generator loss back.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowtopo.errors import InputError
from flowtopo.model import FlowAE
from flowtopo.prior_fit import c2st_accuracy, noise_kl
from flowtopo.regularizers import SAMPLE_REGULARIZERS, Discriminator
from flowtopo.train_config import TrainConfig, c2st_gap


class TrainingDiverged(InputError):
    """A loss became NaN/inf: the configuration (learning rate, data) needs changing."""


@dataclass
class TrainState:
    """Everything `train` needs to go on from the end of an epoch as if never interrupted.

    Written every ``state_every`` epochs (`train`'s ``on_state``), read back by ``resume``:
    the model, discriminator and both optimizers, the data-order and sampling generators, the
    history so far and the best epoch's weights. `save` / `load` use one ``torch.save`` file
    of tensors and plain values, read with ``weights_only=True``.
    """

    epoch: int
    model: dict[str, Any]
    discriminator: dict[str, Any]
    optimizer: dict[str, Any]
    disc_optimizer: dict[str, Any]
    generator: torch.Tensor
    rng: dict[str, Any]
    history: list[dict[str, float]]
    best_val: float
    best_epoch: int
    best_model: dict[str, Any]

    def save(self, path: str | Path) -> Path:
        """Write the state to the file ``path``."""
        torch.save(asdict(self), path)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> TrainState:
        """Read a state written by `save` (``weights_only=True``: no pickled objects).

        Raises:
            InputError: an unreadable file or one that is not a training state.

        """
        try:
            doc = torch.load(path, map_location="cpu", weights_only=True)
            return cls(**doc)
        except Exception as err:  # torch raises UnpicklingError/RuntimeError/EOFError
            first = (str(err).splitlines() or [""])[0]
            raise InputError(f"{path}: not a flowtopo training state ({type(err).__name__}: "
                             f"{first})") from None


def _rng_state(device: torch.device) -> dict[str, Any]:
    """The global generators sampling draws from (the prior's samples): CPU, and CUDA."""
    out: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    return out


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


@dataclass
class TrainResult:
    """The trained model (best epoch's weights) and what happened."""

    model: FlowAE
    discriminator: Discriminator
    history: list[dict[str, float]]
    best_epoch: int
    best: dict[str, float]
    test: dict[str, float] = field(default_factory=dict)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; other names as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)


@torch.no_grad()
def evaluate(model: FlowAE, disc: Discriminator, x: torch.Tensor, seed: int = 0
             ) -> dict[str, float]:
    """Held-out metrics of ``model`` on ``x`` (n, D).

    Returns:
        val_nll (nats/dim), val_bpd, val_recon (resampled noise), val_recon_zero (noise = 0),
        val_noise_kl, val_adv_loss (the generator's held-out adversarial loss ``-log D(z)``:
        lower is better, log 2 when the discriminator cannot tell), val_disc_loss (the
        discriminator's held-out BCE, codes vs fresh prior samples), val_c2st (kNN two-sample
        accuracy, 0.5 = indistinguishable), val_c2st_gap (|val_c2st - 0.5|: what a search
        minimises), nfe.

    """
    model.eval()
    z, noise = model.encode(x)
    nfe = model.flow.nfe
    logp = model.prior().log_prob(z) + model.noise_log_prob(noise)
    nll = float(-logp.mean()) / model.dim
    prior_z = model.prior().sample((len(x),)).to(z)
    rec = model.decode(z, sample=True)
    rec0 = model.decode(z, sample=False)
    c2st = c2st_accuracy(z.double().cpu().numpy(), prior_z.double().cpu().numpy(), seed=seed)
    return {
        "val_nll": nll,
        "val_bpd": nll / math.log(2),
        "val_recon": float((rec - x).pow(2).mean()),
        "val_recon_zero": float((rec0 - x).pow(2).mean()),
        "val_noise_kl": noise_kl(noise.double().cpu().numpy(), model.noise_std),
        "val_adv_loss": float(disc.generator_loss(z)),
        "val_disc_loss": float(disc.loss(prior_z, z)),
        "val_c2st": c2st,
        "val_c2st_gap": c2st_gap(c2st),
        "nfe": float(nfe),
    }


_WATCHED = ("the discriminator loss", "the training loss")


def _raise_if_diverged(finite: torch.Tensor, epoch: int, cfg: TrainConfig) -> None:
    """Raise `TrainingDiverged` if a watched loss became NaN/inf: one host read per epoch.

    ``finite`` (2,) bool holds, for each of ``_WATCHED``, whether that loss stayed finite in
    every step of the epoch (accumulated on the device: no sync per step).
    """
    bad = [what for what, ok in zip(_WATCHED, finite.tolist(), strict=True) if not ok]
    if bad:
        raise TrainingDiverged(f"training diverged: {' and '.join(bad)} became NaN or inf in "
                               f"epoch {epoch}; lower lr (now {cfg.lr}) or check the data for "
                               "outliers")


def _epoch(model: FlowAE, disc: Discriminator, opt: torch.optim.Optimizer,
           opt_d: torch.optim.Optimizer, x_tr: torch.Tensor, gen: torch.Generator,
           cfg: TrainConfig, epoch: int) -> dict[str, float]:
    """One pass over ``x_tr`` (n, D) in shuffled batches; the epoch's mean training losses."""
    device, dim = x_tr.device, model.dim
    model.train()
    sums: dict[str, torch.Tensor] = {}  # summed on the device: no host sync per batch
    finite = torch.ones(2, dtype=torch.bool, device=device)  # _WATCHED, read once an epoch
    order = torch.randperm(len(x_tr), generator=gen).to(device)
    for idx in (order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)):
        xb = x_tr[idx]
        z, noise = model.encode(xb)
        with torch.no_grad():
            z_prior = model.prior().sample((len(xb),)).to(z)
        for _ in range(cfg.disc_steps):
            d_loss = disc.loss(z_prior, z.detach())
            finite[0] &= torch.isfinite(d_loss.detach())
            opt_d.zero_grad()
            d_loss.backward()
            opt_d.step()
        g_loss = disc.generator_loss(z)
        # recon_weight 0 (e.g. pure maximum likelihood): no decoder pass at all, it would
        # cost about as much as the encoder and feed nothing back.
        recon = ((model.decode(z, sample=True) - xb).pow(2).mean() if cfg.recon_weight > 0
                 else None)
        latent_nll = -model.prior().log_prob(z).mean() / dim
        noise_nll = -model.noise_log_prob(noise).mean() / dim
        if cfg.regularizer == "mle":
            loss = latent_nll + noise_nll
        else:
            if cfg.regularizer == "adversarial":
                reg = g_loss
            else:
                reg = SAMPLE_REGULARIZERS[cfg.regularizer](z, z_prior)
            fit = -model.prior().log_prob(z.detach()).mean() / dim
            loss = (cfg.noise_weight * noise_nll + cfg.reg_weight * reg
                    + cfg.prior_weight * fit)
        if recon is not None:
            loss = loss + cfg.recon_weight * recon
        finite[1] &= torch.isfinite(loss.detach())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        for key, v in (("train_loss", loss), ("train_recon", recon),
                       ("adv_d_loss", d_loss), ("adv_g_loss", g_loss)):
            if v is None:  # not computed (recon_weight 0); val_recon is still measured
                continue
            sums[key] = sums.get(key, 0.0) + v.detach() * len(xb)
    _raise_if_diverged(finite, epoch, cfg)
    return {key: float(v) / len(x_tr) for key, v in sums.items()}


class _Session:
    """One `train` call's moving parts.

    The two networks, their optimizers, the data-order generator, the history and the best
    epoch so far.
    """

    def __init__(self, model: FlowAE, cfg: TrainConfig, device: torch.device,
                 dtype: torch.dtype, gen: torch.Generator) -> None:
        self.model, self.device, self.gen = model.to(device), device, gen
        self.disc = Discriminator(model.k, cfg.disc_hidden).to(device=device, dtype=dtype)
        # The fused kernel updates every tensor in one operator (CPU and CUDA): a small model's
        # optimizer step otherwise costs ~10 operators per parameter tensor.
        fused = device.type in ("cpu", "cuda")
        self.opt = torch.optim.Adam(model.parameters(), lr=cfg.lr,
                                    weight_decay=cfg.weight_decay, fused=fused)
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=cfg.disc_lr,
                                      betas=(0.5, 0.999), fused=fused)
        self.history: list[dict[str, float]] = []
        self.best_val, self.best_epoch = math.inf, 0
        self.best_state = copy.deepcopy(model.state_dict())

    def restore(self, state: TrainState) -> int:
        """Take up ``state`` (an interrupted call's); return the epoch to go on from."""
        self.model.load_state_dict(state.model)
        self.disc.load_state_dict(state.discriminator)
        self.opt.load_state_dict(state.optimizer)
        self.opt_d.load_state_dict(state.disc_optimizer)
        self.gen.set_state(state.generator)
        _set_rng_state(state.rng, self.device)
        self.history = [dict(h) for h in state.history]
        self.best_val, self.best_epoch = state.best_val, state.best_epoch
        self.best_state = {k: v.to(self.device) for k, v in state.best_model.items()}
        return state.epoch + 1

    def record(self, epoch: int, metrics: dict[str, float], monitor: str) -> bool:
        """Append the epoch's metrics; keep its weights if ``monitor`` improved (returned)."""
        metrics["epoch"] = float(epoch)
        self.history.append(metrics)
        improved = metrics[monitor] < self.best_val
        if improved:
            self.best_val, self.best_epoch = metrics[monitor], epoch
            self.best_state = copy.deepcopy(self.model.state_dict())
        return improved

    def state(self, epoch: int) -> TrainState:
        """A copy of everything needed to go on after ``epoch``."""
        return TrainState(
            epoch, copy.deepcopy(self.model.state_dict()), copy.deepcopy(self.disc.state_dict()),
            copy.deepcopy(self.opt.state_dict()), copy.deepcopy(self.opt_d.state_dict()),
            self.gen.get_state(), _rng_state(self.device), list(self.history), self.best_val,
            self.best_epoch, self.best_state)


def _split(x_train: np.ndarray, cfg: TrainConfig, dtype: torch.dtype, device: torch.device,
           gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(training rows, validation rows (at most ``eval_size``)), on ``device``, by ``gen``."""
    x_all = torch.as_tensor(np.asarray(x_train), dtype=dtype)
    perm = torch.randperm(len(x_all), generator=gen)
    n_val = max(2, int(cfg.val_fraction * len(x_all)))
    return x_all[perm[n_val:]].to(device), x_all[perm[:n_val]][: cfg.eval_size].to(device)


def train(model: FlowAE, x_train: np.ndarray, x_test: np.ndarray | None, cfg: TrainConfig,
          on_epoch: Callable[[int, dict[str, float]], None] | None = None, *,
          state_every: int = 0, on_state: Callable[[TrainState], None] | None = None,
          resume: TrainState | None = None) -> TrainResult:
    """Train ``model`` on ``x_train`` (n, D); early-stop on a validation split carved from it.

    Args:
        model: the flow auto-encoder (trained in place; best weights restored at the end).
        x_train: (n, D) standardised training data.
        x_test: (m, D) held-out data for the final test metrics, or None.
        cfg: hyper-parameters.
        on_epoch: called after each epoch with ``(epoch, metrics)`` (MLflow, Ray Tune, rich).
        state_every: every this many epochs (0: never) ``on_state`` receives the
            `TrainState`, just BEFORE that epoch's ``on_epoch`` (so one report can carry both).
        on_state: receives the state (e.g. writes a checkpoint a retried trial resumes from).
        resume: a state from an earlier, interrupted call with the same data and ``cfg``:
            training goes on from its epoch, and reproduces the uninterrupted run on a
            deterministic device.

    Raises:
        TrainingDiverged: a loss became NaN/inf.

    """
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    dtype = next(model.parameters()).dtype
    gen = torch.Generator().manual_seed(cfg.seed)
    x_tr, x_val = _split(x_train, cfg, dtype, device, gen)
    run = _Session(model, cfg, device, dtype, gen)
    first = 1 if resume is None else run.restore(resume)
    stopped = resume is not None and resume.epoch - resume.best_epoch >= cfg.patience
    for epoch in range(first, 1 if stopped else cfg.epochs + 1):
        metrics = _epoch(model, run.disc, run.opt, run.opt_d, x_tr, gen, cfg, epoch)
        metrics.update(evaluate(model, run.disc, x_val, seed=cfg.seed + epoch))
        improved = run.record(epoch, metrics, cfg.monitor)
        if on_state is not None and state_every > 0 and epoch % state_every == 0:
            on_state(run.state(epoch))
        if on_epoch is not None:
            on_epoch(epoch, metrics)
        if not improved and epoch - run.best_epoch >= cfg.patience:
            break
    model.load_state_dict(run.best_state)
    result = TrainResult(model.eval(), run.disc, run.history, run.best_epoch,
                         run.history[run.best_epoch - 1])
    if x_test is not None:
        xt = torch.as_tensor(np.asarray(x_test)[: max(cfg.eval_size, 1)], dtype=dtype).to(device)
        result.test = {f"test_{k.removeprefix('val_')}": v
                       for k, v in evaluate(model, run.disc, xt, seed=cfg.seed).items()}
    return result
