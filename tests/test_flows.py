"""One contract test suite over every registered flow (and its main configurations), float64."""

import copy
import functools

import numpy as np
import pytest
import torch

from flowtopo.checkpoint import load_checkpoint, save_checkpoint
from flowtopo.data import Standardizer
from flowtopo.errors import InputError
from flowtopo.flows import FLOWS, build_flow
from flowtopo.model import FlowAE

TIGHT = {"method": "dopri5", "rtol": 1e-10, "atol": 1e-12}
CONFIGS = {
    "coupling": {"name": "coupling", "params": {"layers": 3, "hidden": 16}},
    "coupling-relu-norot": {"name": "coupling",
                            "params": {"layers": 2, "activation": "relu", "rotations": False}},
    "coupling-sigmoid-tanh": {"name": "coupling",
                              "params": {"layers": 2, "hidden": 16, "activation": "sigmoid_tanh"}},
    "continuous-masked": {"name": "continuous", "params": {"field": "masked", **TIGHT}},
    "continuous-gradient": {"name": "continuous", "params": {"field": "gradient", **TIGHT}},
    "continuous-rk4": {"name": "continuous",
                       "params": {"field": "masked", "method": "rk4", "step_size": 0.05}},
    "continuous-adjoint": {"name": "continuous", "params": {"field": "masked", "adjoint": True,
                                                            **TIGHT}},
    "continuous-default": {"name": "continuous", "params": {}},
    "continuous-split": {"name": "continuous", "params": {"field": "masked", "method": "split",
                                                          "step_size": 0.25}},
    "continuous-bipartite": {"name": "continuous", "params": {"field": "bipartite", **TIGHT}},
    "continuous-leapfrog": {"name": "continuous", "params": {"field": "bipartite",
                                                             "method": "split",
                                                             "step_size": 0.25}},
}


def test_every_registered_flow_is_covered():
    assert {c["name"] for c in CONFIGS.values()} == set(FLOWS)


def make_model(cfg, dim=5, k=2, seed=0):
    torch.manual_seed(seed)
    model = FlowAE.from_config({"dim": dim, "k": k, "noise_std": 0.3, "flow": cfg,
                                "prior": {"name": "gmm", "params": {"components": 3}}}).double()
    with torch.no_grad():  # leave the identity start: random weights everywhere
        for p in model.flow.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model


@pytest.fixture(params=list(CONFIGS), ids=list(CONFIGS))
def model(request):
    return make_model(CONFIGS[request.param])


def test_invertibility(model):
    x = torch.randn(64, 5, dtype=torch.float64)
    z, noise = model.encode(x)
    assert z.shape == (64, 2) and noise.shape == (64, 3)
    assert torch.allclose(model.decode(z, noise), x, atol=1e-5)
    assert not torch.allclose(model.flow(x), x, atol=1e-3)  # it is not the identity


def test_log_det_is_zero_by_autograd(model):
    for x in torch.randn(4, 5, dtype=torch.float64):
        jac = torch.autograd.functional.jacobian(lambda v: model.flow(v[None])[0], x)
        _, logabsdet = torch.linalg.slogdet(jac)  # odd permutations flip the sign: |det| = 1
        assert abs(float(logabsdet)) < 1e-6


def test_gradients_reach_every_parameter(model):
    x = torch.randn(32, 5, dtype=torch.float64)
    loss = -model.log_prob(x).mean() + (model.reconstruct(x) - x).pow(2).mean()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_save_load_round_trip(model, tmp_path):
    std = Standardizer.fit(torch.randn(10, 5).numpy())
    save_checkpoint(tmp_path / "ckpt", model.float(), std, {"note": "x"})
    ck = load_checkpoint(tmp_path / "ckpt")
    x = torch.randn(16, 5)
    assert torch.allclose(ck.model.log_prob(x), model.log_prob(x), atol=1e-5)
    assert ck.config["note"] == "x" and ck.model.config() == model.config()
    assert torch.equal(torch.as_tensor(ck.standardizer.scale), torch.as_tensor(std.scale))


def test_train_and_eval_modes_agree(model):
    x = torch.randn(16, 5, dtype=torch.float64)
    a = model.train().log_prob(x)
    b = model.eval().log_prob(x)
    assert torch.allclose(a, b)
    assert model.flow.name in repr(model.flow)


def test_every_flow_computes_the_same_on_any_device(model, device):
    x = torch.randn(64, 5, dtype=torch.float64)
    with torch.no_grad():
        ref_z, ref_noise = model.encode(x)
        ref_logp = model.log_prob(x)
    moved = copy.deepcopy(model).to(device)
    xd = x.to(device)
    z, noise = moved.encode(xd)
    assert z.device.type == device.type
    assert torch.allclose(z.detach().cpu(), ref_z, atol=1e-6)
    assert torch.allclose(noise.detach().cpu(), ref_noise, atol=1e-6)
    assert torch.allclose(moved.log_prob(xd).detach().cpu(), ref_logp, atol=1e-6)
    assert torch.allclose(moved.decode(z, noise).detach().cpu(), x, atol=1e-5)
    loss = -moved.log_prob(xd).mean() + (moved.reconstruct(xd) - xd).pow(2).mean()
    loss.backward()
    for name, p in moved.named_parameters():
        assert p.grad is not None and p.grad.device.type == device.type, name
        assert torch.isfinite(p.grad).all(), name
    assert moved.latents(x.numpy()).shape == (64, 2)  # numpy in, numpy out, from any device


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_latents_are_the_codes_as_float64_numpy_in_any_chunking(dtype):
    model = make_model(CONFIGS["coupling"]).to(dtype)
    x = np.random.default_rng(0).normal(size=(300, 5))  # float64 input for either model
    z = model.latents(x, chunk=64)
    with torch.no_grad():
        expected = model.encode(torch.as_tensor(x, dtype=dtype))[0].double().numpy()
    assert z.dtype == np.float64 and z.shape == (300, 2)
    assert np.allclose(z, expected, atol=1e-6) and np.allclose(z, model.latents(x), atol=1e-6)
    assert model.latents(x[:0]).shape == (0, 2)
    with pytest.raises(InputError, match=r"shape \(n, 5\)"):
        model.latents(x[:, :3])


def test_log_prob_is_exact_change_of_variables():
    """With D = k the model density is the prior pushed through the flow: check by quadrature."""
    model = make_model(CONFIGS["coupling"], dim=2, k=1)
    g = torch.linspace(-12, 12, 801, dtype=torch.float64)
    pts = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        mass = model.log_prob(pts).exp().sum() * (g[1] - g[0]) ** 2
    assert abs(float(mass) - 1.0) < 2e-3


def test_adaptive_solver_preserves_volume_up_to_its_tolerance():
    errors, nfes = [], []
    for tol in (1e-3, 1e-9):
        model = make_model({"name": "continuous", "params": {"field": "masked", "method": "dopri5",
                                                             "rtol": tol, "atol": tol}})
        x = torch.randn(3, 5, dtype=torch.float64)
        errs = []
        for xi in x:
            jac = torch.autograd.functional.jacobian(lambda v, m=model: m.flow(v[None])[0], xi)
            errs.append(abs(float(torch.linalg.slogdet(jac)[1])))
        model.flow(x)
        errors.append(max(errs))
        nfes.append(model.flow.nfe)
    assert errors[1] < 1e-7 and errors[1] < errors[0]
    assert nfes[1] > nfes[0] > 0


@pytest.mark.parametrize("name", ["continuous-masked", "continuous-bipartite"])
def test_structured_fields_have_zero_divergence_exactly(name):
    model = make_model(CONFIGS[name])
    field = model.flow.func.field
    x = torch.randn(5, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: field(torch.tensor(0.3).double(),
                                                             v[None])[0], x)
    assert torch.allclose(torch.diagonal(jac), torch.zeros(5, dtype=torch.float64))
    assert jac.abs().sum() > 0


@pytest.mark.parametrize(
    "spec, dim, message",
    [
        ({"name": "maf"}, 4, "valid: coupling, continuous"),
        ({"name": "continuous", "params": {"method": "rk4"}}, 4, "step_size"),
        ({"name": "continuous", "params": {"method": "leap"}}, 4, "unknown method"),
        ({"name": "continuous", "params": {"field": "curl"}}, 4, "unknown field"),
        ({"name": "continuous", "params": {"method": "split", "field": "gradient",
                                           "step_size": 0.1}}, 4, "needs field 'masked' or"),
        ({"name": "coupling", "params": {"activation": "swish2"}}, 4, "unknown activation"),
        ({"name": "coupling", "params": {"layers": 0}}, 4, "layers"),
        ({"name": "coupling", "params": {"colour": 1}}, 4,
         "bad parameters: unknown 'colour'; valid: layers, hidden"),
        ({"name": "coupling"}, 1, "D >= 2"),
    ],
)
def test_bad_flow_specs(spec, dim, message):
    with pytest.raises(InputError, match=message):
        build_flow(spec, dim)


@pytest.mark.parametrize("name", list(FLOWS))
def test_a_type_error_inside_a_flow_is_a_bug_not_bad_parameters(name, monkeypatch):
    @functools.wraps(FLOWS[name].__init__)  # the same signature: only the body is broken
    def broken(self, *args, **kwargs):
        raise TypeError("a bug inside the constructor")

    monkeypatch.setattr(FLOWS[name], "__init__", broken)
    with pytest.raises(TypeError, match="a bug inside"):
        build_flow({"name": name}, 4)


@pytest.mark.parametrize("field", ["masked", "bipartite"])
def test_split_integrator_is_second_order_and_exactly_volume_preserving(field):
    """The splitting follows the same ODE as dopri5, with error ~ h^2; its log|det| is 0 at any
    step size (unlike adaptive RK, exact only up to the tolerance)."""
    torch.manual_seed(0)
    ref = make_model({"name": "continuous", "params": {"field": field, **TIGHT}})
    x = torch.randn(64, 5, dtype=torch.float64)
    with torch.no_grad():
        exact = ref.flow(x)
    errors = []
    for step in (0.2, 0.1):
        split = make_model({"name": "continuous", "params": {
            "field": field, "method": "split", "step_size": step}})
        split.flow.load_state_dict(ref.flow.state_dict())
        with torch.no_grad():
            errors.append(float((split.flow(x) - exact).abs().max()))
        assert split.flow.nfe >= round(1 / step)
    assert errors[1] < errors[0] / 3  # halving h cuts the error ~4x
    coarse = make_model({"name": "continuous", "params": {"field": field, "method": "split",
                                                          "step_size": 1.0}})
    jac = torch.autograd.functional.jacobian(lambda v: coarse.flow(v[None])[0], x[0])
    assert abs(float(torch.linalg.slogdet(jac)[1])) < 1e-12


@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_tensor_a_flow_makes_takes_its_device_and_dtype(name):
    # The meta device has no data: a tensor made on the CPU (a CUDA bug) or a value read back
    # to the host (a GPU sync) fails here, so the GPU path is checked without a GPU.
    # torchdiffeq's odeint reads its time grid back by design (and adaptive solvers choose
    # their steps from values), so for those the field it integrates is checked instead.
    model = make_model(CONFIGS[name]).to("meta")
    x = torch.empty(8, 5, dtype=torch.float64, device="meta")
    p = CONFIGS[name]["params"]
    if CONFIGS[name]["name"] == "continuous" and p.get("method") != "split":
        field = model.flow.func.field
        if hasattr(field, "prepare"):
            field.prepare()
        outs = {"field": model.flow.func(torch.empty((), dtype=torch.float64, device="meta"), x)}
    else:
        z, noise = model.encode(x)
        outs = {"z": z, "noise": noise, "log_prob": model.log_prob(x),
                "decode": model.decode(z, noise), "reconstruct": model.reconstruct(x)}
    for what, t in outs.items():
        assert (t.device.type, t.dtype, t.shape[0]) == ("meta", torch.float64, 8), what


def test_the_continuous_default_is_the_exact_leapfrog_scheme():
    flow = build_flow({"name": "continuous"}, 4)
    p = flow.params
    assert (p["field"], p["method"], p["step_size"]) == ("bipartite", "split", 0.25)
    x = torch.randn(3, 4, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: flow.double()(v[None])[0], x[0])
    assert abs(float(torch.linalg.slogdet(jac)[1])) < 1e-12  # exact, not up to a tolerance


@pytest.mark.parametrize("corrupt,message", [
    (lambda d: (d / "model.pt").write_bytes(b""), "refused to load"),
    (lambda d: torch.save({"flow.nosuch": torch.zeros(3)}, d / "model.pt"),
     "weights do not fit the model"),
    (lambda d: torch.save(torch.zeros(3), d / "model.pt"), "not a state_dict of tensors"),
    (lambda d: (d / "config.json").write_text('{"dataset": "x"}'), "no 'model' section"),
    (lambda d: (d / "config.json").write_text("[1, 2"), "unreadable checkpoint config"),
])
def test_a_corrupt_checkpoint_is_one_clear_error(model, tmp_path, corrupt, message):
    std = Standardizer.fit(torch.randn(10, 5).numpy())
    d = save_checkpoint(tmp_path / "ckpt", model.float(), std)
    corrupt(d)
    with pytest.raises(InputError, match=message):
        load_checkpoint(d)


def _sigmoid_tanh_twin(module):
    """A copy of ``module`` (same weights) with `SigmoidTanh` where it has ``nn.Tanh``."""
    from flowtopo.flows._base import SigmoidTanh, swap_tanh

    return swap_tanh(module, SigmoidTanh)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2.5e-7), (torch.float64, 1e-15)])
def test_sigmoid_tanh_is_torch_tanh_on_the_cpu(dtype, tol):
    """The registry's "tanh" is torch's; "sigmoid_tanh" is `flows._base.SigmoidTanh`
    (2 sigmoid(2x) - 1 on the CPU, opt-in: faster on some CPUs, slower on others,
    benchmarks/flows.py): torch.tanh's values to rounding, its derivatives to any order, under
    vmap and jacrev too."""
    from flowtopo.flows import ACTIVATIONS
    from flowtopo.flows._base import SigmoidTanh

    assert ACTIVATIONS["tanh"] is torch.nn.Tanh and ACTIVATIONS["sigmoid_tanh"] is SigmoidTanh
    act = SigmoidTanh()
    x = torch.cat([torch.linspace(-60, 60, 100_001, dtype=dtype),
                   torch.tensor([0.0, 1e-30, -1e-30, float("inf"), -float("inf")], dtype=dtype)])
    assert (act(x) - torch.tanh(x)).abs().max() <= tol
    assert act(torch.tensor([float("nan")], dtype=dtype)).isnan().all()
    xg = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(act, (xg,)) and torch.autograd.gradgradcheck(act, (xg,))
    (g,) = torch.autograd.grad(act(xg).sum(), xg, create_graph=True)
    (gg,) = torch.autograd.grad(g.sum(), xg)
    y = torch.tanh(xg.detach())
    torch.testing.assert_close(g, 1 - y**2)
    torch.testing.assert_close(gg, -2 * y * (1 - y**2))
    v = torch.randn(4, 3, dtype=dtype)
    torch.testing.assert_close(torch.func.vmap(act)(v), torch.tanh(v), atol=tol, rtol=0)
    torch.testing.assert_close(torch.func.jacrev(act)(v[0]), torch.diag(1 - torch.tanh(v[0])**2),
                               atol=4 * tol, rtol=0)


@pytest.mark.parametrize("name", ["coupling", "continuous-leapfrog", "continuous-gradient"])
def test_flows_with_sigmoid_tanh_share_weights_and_maps(name):
    """`SigmoidTanh` has no parameters: a flow's state_dict is the one its ``nn.Tanh`` twin
    has (checkpoints load either way), and both compute the same map."""
    from flowtopo.flows._base import SigmoidTanh

    torch.manual_seed(0)
    flow = build_flow(CONFIGS[name], 4)
    for p in flow.parameters():  # away from the identity start (zero last layers)
        torch.nn.init.normal_(p, std=0.3)
    twin = _sigmoid_tanh_twin(flow)
    assert any(isinstance(m, SigmoidTanh) for m in twin.modules())
    assert not any(isinstance(m, torch.nn.Tanh) for m in twin.modules())
    twin.load_state_dict(flow.state_dict(), strict=True)
    flow.load_state_dict(twin.state_dict(), strict=True)
    x = torch.randn(64, 4)
    torch.testing.assert_close(flow(x), twin(x), atol=1e-5, rtol=0)
    torch.testing.assert_close(flow.inverse(flow(x)), x, atol=1e-4, rtol=0)
