"""Training-step cost of the flows, measured side by side in one run.

1. Coupling FlowAE vs plain MLP auto-encoders. Targets (issue 18, item 3, restating issue 3's:
   the FlowAE's decoder is its encoder run backwards, so its full step does twice the
   arithmetic of an equal-parameter MLP auto-encoder's): the full step <= 1.3x an MLP
   auto-encoder with the same multiply-adds per sample, and the MLE step (no decoder) <= 1.25x
   one with the same parameter count, at batch 4096.
2. Divergence-free continuous flow (no trace term: log|det| = 0) vs an FFJORD-style CNF that
   needs a Hutchinson trace estimate of div f, same data, same solver and tolerance
   (target: >= 3x faster per step). NFE are printed. Beside it, the same masked field under
   the Strang splitting integrator (``method="split"``) and a bipartite field under leapfrog,
   each with its deviation from the same field's dopri5 map.
3. The opt-in ``"sigmoid_tanh"`` activation (`flowtopo.flows._base.SigmoidTanh`,
   ``2 sigmoid(2x) - 1`` on the CPU) against ``torch.tanh`` (the default ``"tanh"``) in the
   same models, on 1 thread (as sweep trials run) and on 2: which is faster depends on the CPU.
   Every model above (the MLP auto-encoders and the FFJORD field too) uses torch.tanh, so the
   ratios above compare architectures, not activation kernels.

``--activation relu`` or ``identity`` runs section 1 alone with that activation in every model
(a reading: how much of the ratios is the tanh kernel's).

Run: ``python -m benchmarks.flows [--batches 256 1024] [--dim 8] [--repeats 15] [--device cuda]
[--activation tanh]``.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable

import torch
from torch import nn
from torchdiffeq import odeint

from benchmarks._util import count_ops, header, time_interleaved
from flowtopo.flows._base import SigmoidTanh, swap_tanh
from flowtopo.model import FlowAE

CPU = torch.device("cpu")


def _sync(device: torch.device) -> Callable[[], None] | None:
    """Waits for queued GPU work, so a timed call includes its kernels."""
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters() if p.requires_grad)


class MLPAutoEncoder(nn.Module):
    """A plain MLP auto-encoder D -> k -> D with ``hidden`` units."""

    def __init__(self, dim: int, k: int, hidden: int) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden),
                                 nn.Tanh(), nn.Linear(hidden, k))
        self.dec = nn.Sequential(nn.Linear(k, hidden), nn.Tanh(), nn.Linear(hidden, hidden),
                                 nn.Tanh(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dec(self.enc(x))


class FFJORDField(nn.Module):
    """FFJORD dynamics: an unconstrained MLP field and a Hutchinson estimate of its divergence."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim + 1, hidden), nn.Tanh(), nn.Linear(hidden, hidden),
                                 nn.Tanh(), nn.Linear(hidden, dim))
        self.e: torch.Tensor | None = None
        self.nfe = 0

    def forward(self, t: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        self.nfe += 1
        x, _ = state
        with torch.enable_grad():
            x = x if x.requires_grad else x.requires_grad_(True)
            f = self.net(torch.cat([x, t.expand(x.shape[0], 1)], 1))
            (vjp,) = torch.autograd.grad(f, x, self.e, create_graph=True)
        return f, -(vjp * self.e).sum(1)


def linear_macs(m: nn.Module) -> int:
    """Multiply-adds per sample of one forward pass through ``m``'s linear layers."""
    return sum(layer.weight.numel() for layer in m.modules() if isinstance(layer, nn.Linear))


def coupling_rows(d: int, k: int, batches: list[int], repeats: int,
                  device: torch.device = CPU, activation: str = "tanh") -> None:
    flowae = FlowAE.from_config({"dim": d, "k": k, "noise_std": 0.5, "prior": {"name": "gmm"},
                                 "flow": {"name": "coupling", "params": {"layers": 4,
                                                                        "hidden": 64}}})
    target = n_params(flowae)
    h_same = next(h for h in range(8, 4096) if n_params(MLPAutoEncoder(d, k, h)) >= target)
    h_flops = next(h for h in range(8, 4096) if n_params(MLPAutoEncoder(d, k, h)) >= 2 * target)
    aes: dict[str, nn.Module] = {"same": MLPAutoEncoder(d, k, h_same),
                                 "flops": MLPAutoEncoder(d, k, h_flops)}
    if activation != "tanh":
        make = SECTION1_ACTIVATIONS[activation]
        flowae = swap_tanh(flowae, make)  # type: ignore[assignment]
        aes = {name: swap_tanh(ae, make) for name, ae in aes.items()}
    aes = {name: ae.to(device) for name, ae in aes.items()}
    flowae.to(device)
    print(f"\n## coupling FlowAE (4 blocks, hidden 64) vs MLP auto-encoders (D={d}, k={k})"
          + ("" if activation == "tanh" else f"; activation {activation} in every model "
             "instead of tanh"))
    print("FlowAE steps: `full` = encode, exact likelihood, decode from z with sampled noise, "
          "reconstruction (train.py's step without the discriminator); `MLE` = encode and exact "
          "likelihood only (regularizer mle with recon_weight 0, which runs no decoder). "
          "Timings interleaved call by call (same load on every contender), medians; Adam "
          "fused (one operator per step, as in flowtopo.train) for every model.")
    macs = linear_macs(flowae.flow)
    print(f"params: FlowAE {target}; MLP AE same params {n_params(aes['same'])} (hidden {h_same}); "
          f"MLP AE same FLOPs/sample {n_params(aes['flops'])} (hidden {h_flops}). Multiply-adds "
          f"per sample, forward: FlowAE full {2 * macs}, MLE {macs}; MLP same params "
          f"{linear_macs(aes['same'])}, same FLOPs {linear_macs(aes['flops'])}")
    print("| batch | FlowAE full ms | FlowAE MLE ms | MLP same-params ms | full / same-params "
          "| MLE / same-params (target <= 1.25x at 4096) | MLP same-FLOPs ms | full / "
          "same-FLOPs (target <= 1.3x at 4096) |")
    print("|---|---|---|---|---|---|---|---|")
    ops: dict[str, int] = {}
    for b in batches:
        x = torch.randn(b, d, device=device)
        opt_f = torch.optim.Adam(flowae.parameters(), 1e-3, fused=True)

        def step_full(x: torch.Tensor = x, opt: torch.optim.Optimizer = opt_f) -> None:
            z, n = flowae.encode(x)  # as in flowtopo.train: encode once, decode, likelihood
            nll = -(flowae.prior().log_prob(z) + flowae.noise_log_prob(n)).mean()
            loss = (flowae.decode(z) - x).pow(2).mean() + nll
            opt.zero_grad()
            loss.backward()
            opt.step()

        def step_mle(x: torch.Tensor = x, opt: torch.optim.Optimizer = opt_f) -> None:
            loss = -flowae.log_prob(x).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

        steps = {"full": step_full, "mle": step_mle}
        for name, ae in aes.items():
            opt_m = torch.optim.Adam(ae.parameters(), 1e-3, fused=True)

            def step_mlp(x: torch.Tensor = x, ae: nn.Module = ae,
                         opt: torch.optim.Optimizer = opt_m) -> None:
                loss = (ae(x) - x).pow(2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()

            steps[name] = step_mlp
        ms = time_interleaved(steps, repeats, sync=_sync(device))
        ops = {name: count_ops(fn) for name, fn in steps.items()}
        full, mle, same, flops = (ms[n] * 1e3 for n in ("full", "mle", "same", "flops"))
        def verdict(ratio: float, target: float, b: int = b) -> str:
            """PASS/FAIL at the batch size the targets name."""
            return f" {'PASS' if ratio <= target else 'FAIL'}" if b == 4096 else ""

        print(f"| {b} | {full:.2f} | {mle:.2f} | {same:.2f} | {full / same:.2f}x | "
              f"{mle / same:.2f}x{verdict(mle / same, 1.25)} | {flops:.2f} | "
              f"{full / flops:.2f}x{verdict(full / flops, 1.3)} |")
    print(f"ATen operators dispatched per step (forward, backward, Adam): FlowAE full "
          f"{ops['full']}, MLE {ops['mle']}; MLP same params {ops['same']}, same FLOPs "
          f"{ops['flops']}")


def with_sigmoid_tanh(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (same weights) whose ``nn.Tanh`` modules are `SigmoidTanh`."""
    return swap_tanh(model, SigmoidTanh)


# ``--activation``: section 1 with another activation in every model, to read how much of the
# ratios the activation's kernel makes (identity: none at all; the models stay well defined)
SECTION1_ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU,
                                                    "identity": nn.Identity}


def tanh_rows(d: int, k: int, batch: int, repeats: int) -> None:
    """Section 3: the opt-in sigmoid form of tanh against torch.tanh, CPU, 1 and 2 threads.

    The coupling FlowAE's full step and the same-FLOPs MLP auto-encoder's, each with both.
    """
    flowae = FlowAE.from_config({"dim": d, "k": k, "noise_std": 0.5, "prior": {"name": "gmm"},
                                 "flow": {"name": "coupling", "params": {"layers": 4,
                                                                        "hidden": 64}}})
    h_flops = next(h for h in range(8, 4096)
                   if n_params(MLPAutoEncoder(d, k, h)) >= 2 * n_params(flowae))
    models: dict[str, nn.Module] = {"FlowAE full": flowae, "MLP same-FLOPs": MLPAutoEncoder(
        d, k, h_flops)}
    x = torch.randn(batch, d)

    def step(model: nn.Module) -> Callable[[], None]:
        opt = torch.optim.Adam(model.parameters(), 1e-3, fused=True)

        def run() -> None:
            if isinstance(model, FlowAE):
                z, n = model.encode(x)
                nll = -(model.prior().log_prob(z) + model.noise_log_prob(n)).mean()
                loss = (model.decode(z) - x).pow(2).mean() + nll
            else:
                loss = (model(x) - x).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return run

    print(f"\n## `sigmoid_tanh` (opt-in) vs torch.tanh (the default), batch {batch}, D={d}, "
          f"k={k}; CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print("| threads | model | torch.tanh ms | sigmoid_tanh ms | ratio |")
    print("|---|---|---|---|---|")
    threads = torch.get_num_threads()
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            for name, model in models.items():
                ms = time_interleaved({"torch": step(model),
                                       "sigmoid": step(with_sigmoid_tanh(model))}, repeats)
                print(f"| {t} | {name} | {ms['torch'] * 1e3:.2f} | {ms['sigmoid'] * 1e3:.2f} "
                      f"| {ms['sigmoid'] / ms['torch']:.2f}x |")
    finally:
        torch.set_num_threads(threads)


def _continuous(d: int, k: int, **params: object) -> FlowAE:
    return FlowAE.from_config({"dim": d, "k": k, "noise_std": 0.5, "prior": {"name": "gmm"},
                               "flow": {"name": "continuous", "params": params}})


def ode_rows(d: int, k: int, batches: list[int], repeats: int, tol: float,
             split_step: float, device: torch.device = CPU) -> None:
    print(f"\n## divergence-free ODE flows vs FFJORD-style CNF (dopri5, rtol=atol={tol}, D={d})")
    print(f"masked field under dopri5 (as FFJORD), and under Strang splitting (step {split_step}); "
          f"bipartite field (same parameter count) under leapfrog (step {split_step}). The "
          "split schemes are exactly volume preserving at any step; `dev` = largest deviation "
          "of the split map from the same field's dopri5 map on the batch.")
    base = torch.distributions.Normal(0.0, 1.0)
    print("| batch | FFJORD ms (NFE) | masked dopri5 ms (NFE) | speed-up (target >= 3x) | "
          "masked split ms (NFE, dev) | speed-up | bipartite leapfrog ms (NFE, dev) | "
          "speed-up |")
    print("|---|---|---|---|---|---|---|---|")
    target = n_params(_continuous(d, k, field="masked", hidden=8).flow)
    hb = next(h for h in range(4, 512)
              if n_params(_continuous(d, k, field="bipartite", hidden=h).flow) >= target)
    for b in batches:
        torch.manual_seed(0)
        x = torch.randn(b, d, device=device)
        models = {
            "masked": _continuous(d, k, field="masked", hidden=8, method="dopri5", rtol=tol,
                                  atol=tol),
            "masked split": _continuous(d, k, field="masked", hidden=8, method="split",
                                        step_size=split_step),
            "bipartite dopri5": _continuous(d, k, field="bipartite", hidden=hb,
                                            method="dopri5", rtol=tol, atol=tol),
            "bipartite leapfrog": _continuous(d, k, field="bipartite", hidden=hb,
                                              method="split", step_size=split_step)}
        ffj = FFJORDField(d, 64).to(device)
        for m in models.values():
            m.to(device)
        for m in (models["masked"], models["bipartite dopri5"], ffj):  # a non-trivial start
            with torch.no_grad():
                for p in m.parameters():
                    p.add_(0.1 * torch.randn_like(p))
        models["masked split"].load_state_dict(models["masked"].state_dict())
        models["bipartite leapfrog"].load_state_dict(models["bipartite dopri5"].state_dict())
        with torch.no_grad():
            dev = {"masked split": float((models["masked split"].flow(x)
                                          - models["masked"].flow(x)).abs().max()),
                   "bipartite leapfrog": float((models["bipartite leapfrog"].flow(x)
                                                - models["bipartite dopri5"].flow(x)).abs().max())}
        nfe: dict[str, int] = {}

        def step_flow(name: str, model: FlowAE, opt: torch.optim.Optimizer,
                      x: torch.Tensor = x, nfe: dict[str, int] = nfe) -> None:
            loss = -model.log_prob(x).mean()
            nfe[name] = model.flow.nfe
            opt.zero_grad()
            loss.backward()
            opt.step()

        opt_j = torch.optim.Adam(ffj.parameters(), 1e-3, fused=True)

        def step_ffjord(x: torch.Tensor = x, ffj: FFJORDField = ffj,
                        opt: torch.optim.Optimizer = opt_j, nfe: dict[str, int] = nfe) -> None:
            ffj.e, ffj.nfe = torch.randn_like(x), 0
            t = torch.tensor([0.0, 1.0], device=x.device)
            z, dlogp = odeint(ffj, (x, x.new_zeros(len(x))), t, rtol=tol, atol=tol,
                              method="dopri5")
            nfe["ffjord"] = ffj.nfe
            loss = -(base.log_prob(z[-1]).sum(1) - dlogp[-1]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

        fns: dict[str, Callable[[], None]] = {"ffjord": step_ffjord}
        for name in ("masked", "masked split", "bipartite leapfrog"):
            opt = torch.optim.Adam(models[name].parameters(), 1e-3, fused=True)
            fns[name] = functools.partial(step_flow, name, models[name], opt)
        ms = time_interleaved(fns, repeats, 2, sync=_sync(device))
        tj = ms["ffjord"]
        cells = [f"{tj * 1e3:.1f} ({nfe['ffjord']})",
                 f"{ms['masked'] * 1e3:.1f} ({nfe['masked']})",
                 f"{tj / ms['masked']:.2f}x {'PASS' if tj / ms['masked'] >= 3 else 'FAIL'}"]
        for name in ("masked split", "bipartite leapfrog"):
            cells += [f"{ms[name] * 1e3:.1f} ({nfe[name]}, {dev[name]:.0e})",
                      f"{tj / ms[name]:.2f}x {'PASS' if tj / ms[name] >= 3 else 'FAIL'}"]
        print(f"| {b} | " + " | ".join(cells) + " |")
    print(f"params: masked {target}, bipartite {n_params(models['bipartite leapfrog'].flow)} "
          f"(hidden {hb}), FFJORD {n_params(ffj)}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, nargs="+", default=[256, 1024, 4096])
    ap.add_argument("--dim", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--tol", type=float, default=1e-5)
    ap.add_argument("--split-step", type=float, default=0.25)
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--activation", choices=sorted(SECTION1_ACTIVATIONS), default="tanh",
                    help="section 1 only, with this activation in every model; then only it")
    args = ap.parse_args()
    header("flows: training step time, measured side by side")
    torch.manual_seed(0)
    device = torch.device(args.device)
    if device.type == "cuda":
        print(f"device: {torch.cuda.get_device_name(device)}")
    coupling_rows(args.dim, 2, args.batches, args.repeats, device, args.activation)
    if args.activation != "tanh":  # a reading of section 1; the rest uses tanh
        return
    ode_rows(args.dim, 2, args.batches, max(3, args.repeats // 3), args.tol, args.split_step,
             device)
    if device.type == "cpu":
        tanh_rows(args.dim, 2, max(args.batches), 3 * args.repeats)


if __name__ == "__main__":
    main()
