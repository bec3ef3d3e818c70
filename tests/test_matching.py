import numpy as np
import pytest
import torch
from scipy.stats import special_ortho_group

from flowtopo import LatentSpace, align
from flowtopo.data import warped_pair
from flowtopo.errors import InputError
from flowtopo.matching import (
    METHODS,
    POOR_FIT_KL,
    NotIdentifiable,
    align_many,
    fit_map,
)
from flowtopo.model_alignment import align_models
from flowtopo.paired_scores import translation_scores

SHAPES = {2: [[3, 1], [2, [1, 1]]], 3: [[3, 1], [2, [1, 1]]], 4: [[3, 1], [2, [1, 1]]],
          5: [[3, 1], [2, [1, 1]], [1, [2, 1]]], 6: [[3, 1], [2, [1, 1]], [1, [2, 1]]]}


def problem(k, seed=0, warp=0.1, shape=None, n=6000):
    """Source/target latents of one mixture related by a random affine map + a mild warp."""
    p = warped_pair(shape or SHAPES[k], k, seed=seed, warp=warp, n=n)
    return (LatentSpace(p.source, p.source_log_prob), LatentSpace(p.target, p.target_log_prob),
            p.test_source, p.test_target, p.test_labels)


@pytest.mark.parametrize("k", [2, 3, 4, 5, 6])
def test_tree_matching_reaches_the_oracle(k):
    src, tgt, zs, zt, labels = problem(k)
    ours = translation_scores(zs, zt, align(src, tgt, method="tree").transform, labels)
    oracle = translation_scores(
        zs, zt, align(src, tgt, method="oracle", pairs=(zs, zt)).transform, labels)
    assert ours["r2"] >= 0.98 * oracle["r2"]
    assert ours["label_transfer"] >= 0.98
    assert ours["top1"] >= 0.9 * oracle["top1"]


def test_likelihood_polish_is_what_makes_2d_retrieval_work():
    """In 2-D the OT refinement alone leaves too much sampling noise for top-1 retrieval."""
    src, tgt, zs, zt, _ = problem(2, seed=5)
    oracle = translation_scores(
        zs, zt, align(src, tgt, method="oracle", pairs=(zs, zt)).transform)["top1"]
    res = align(src, tgt, method="tree")
    rough = align(src, tgt, method="tree", polish=False)
    assert res.info["polish"]["sides"] == "two-sided"
    assert res.info["polish"]["after"] < res.info["polish"]["before"]
    assert rough.info["polish"] is None
    assert translation_scores(zs, zt, rough.transform)["top1"] < 0.9 * oracle
    assert translation_scores(zs, zt, res.transform)["top1"] >= 0.9 * oracle


@pytest.mark.parametrize("transform", ["linear", "orthogonal"])
def test_polish_keeps_the_transform_family(transform):
    src, tgt, *_ = problem(3, seed=1, warp=0.0, n=3000)
    res = align(src, tgt, method="tree", transform=transform)
    assert res.info["polish"] is not None
    if transform == "linear":
        assert np.allclose(res.offset, 0)
    else:
        s = np.linalg.svd(res.matrix, compute_uv=False)
        assert np.allclose(s, s[0], rtol=1e-8)


def test_polish_needs_an_exact_density():
    src, tgt, *_ = problem(2, n=3000)
    res = align(src.points, tgt.points, method="tree")
    assert res.info["polish"] is None and res.info["fit_criterion"] == "sliced_w2"


def test_identity_baseline_is_far_from_the_oracle():
    src, tgt, zs, zt, _ = problem(3)
    assert translation_scores(zs, zt, align(src, tgt, method="identity").transform)["r2"] < 0.5


def test_symmetric_tree_is_flagged_ambiguous_and_resolved_by_fit():
    src, tgt, zs, zt, _ = problem(3, shape=[[1, [1, 1]], [1, [1, 1]]], warp=0.0)
    res = align(src, tgt, method="tree")
    assert res.ambiguous and len(res.candidates) > 1
    fits = [c.fit for c in res.candidates]
    assert fits == sorted(fits) and fits[0] < fits[-1]
    assert translation_scores(zs, zt, res.transform)["r2"] > 0.99


def test_isotropic_gaussian_is_not_identifiable():
    rng = np.random.default_rng(0)
    with pytest.raises(NotIdentifiable, match="not identifiable"):
        align(rng.normal(size=(3000, 3)), rng.normal(size=(3000, 3)) @ special_ortho_group.rvs(
            3, random_state=1).T, method="tree")


def test_too_few_clusters_for_the_dimension_is_a_clear_error():
    src, tgt, *_ = problem(6, shape=[[1, 1], 1])
    with pytest.raises(NotIdentifiable, match="needs 7 matched clusters"):
        align(src, tgt, method="tree")


@pytest.mark.parametrize(
    "source, message",
    [
        (np.full((100, 2), np.nan), "NaN"),
        (np.zeros((5, 2)), "too few points"),
        (np.zeros(100), r"\(n, k\)"),
    ],
)
def test_bad_input(source, message):
    with pytest.raises(InputError, match=message):
        align(source, np.random.default_rng(0).normal(size=(100, 2)))


def test_unknown_method_and_transform():
    x = np.random.default_rng(0).normal(size=(100, 2))
    with pytest.raises(InputError, match="valid: tree"):
        align(x, x, method="magic")
    with pytest.raises(InputError, match="valid: affine"):
        align(x, x, transform="projective")


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_returns_a_usable_map(method):
    src, tgt, zs, zt, _ = problem(3, n=2000)
    opts = {"oracle": {"pairs": (zs, zt)}, "relative": {"anchors": (zs[:30], zt[:30])}}
    res = align(src, tgt, method=method, **opts.get(method, {}))
    out = res.transform(zs)
    assert out.shape == zt.shape and np.isfinite(out).all()
    assert res.matrix.shape == (3, 3) and res.offset.shape == (3,)
    assert res.supervised == METHODS[method].supervised == (method in ("oracle", "relative"))
    if method not in ("identity",):
        assert translation_scores(zs, zt, res.transform)["r2"] > 0.8, method


@pytest.mark.parametrize("method", list(METHODS))
def test_an_unknown_option_is_an_error_naming_the_valid_ones(method):
    x = np.random.default_rng(0).normal(size=(100, 2))
    with pytest.raises(InputError, match=rf"method '{method}' has no option 'pairz'.*valid: ") as e:
        align(x, x, method=method, pairz=1)
    assert all(o in str(e.value) for o in METHODS[method].options)


def test_a_misspelt_tree_option_is_refused_not_ignored():
    x = np.random.default_rng(0).normal(size=(100, 2))
    with pytest.raises(InputError, match=r"no option 'min_persistance'.*min_persistence"):
        align(x, x, method="tree", min_persistance=3)
    assert "min_persistence" in METHODS["tree"].options and "gw" not in METHODS["tree"].options
    assert METHODS["identity"].options == ()


def test_oracle_and_relative_need_their_supervision():
    x = np.random.default_rng(0).normal(size=(100, 2))
    with pytest.raises(InputError, match="pairs"):
        align(x, x, method="oracle")
    with pytest.raises(InputError, match="anchors"):
        align(x, x, method="relative")


def test_transform_families():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 3))
    q = special_ortho_group.rvs(3, random_state=0)
    y = 2.0 * x @ q.T + 1.0
    a, b = fit_map("orthogonal", x, y)
    assert np.allclose(a, 2.0 * q, atol=1e-8) and np.allclose(b, 1.0)
    a, b = fit_map("linear", x, x @ q.T)
    assert np.allclose(b, 0) and np.allclose(a, q)
    src, tgt, zs, zt, _ = problem(3, warp=0.6, n=3000)
    aff = align(src, tgt, method="oracle", pairs=(zs, zt))
    non = align(src, tgt, method="oracle", transform="nonlinear", pairs=(zs, zt))
    assert translation_scores(zs, zt, non.transform)["rel_mse"] < translation_scores(
        zs, zt, aff.transform)["rel_mse"]


def test_translation_scores_on_known_maps():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(500, 3))
    labels = (z[:, 0] > 0).astype(int)
    perfect = translation_scores(z, 2 * z, lambda v: 2 * v, labels)
    assert perfect["r2"] == pytest.approx(1.0) and perfect["top1"] == 1.0
    assert perfect["mrr"] == 1.0 and perfect["label_transfer"] >= 0.95  # kNN vote at the edge
    assert perfect["cka"] == pytest.approx(1.0)
    shuffled = translation_scores(z, z[rng.permutation(500)], lambda v: v)
    assert shuffled["r2"] < 0 and shuffled["top1"] < 0.05
    with pytest.raises(InputError, match="same n"):
        translation_scores(z, z[:10], lambda v: v)


def test_cycle_consistency_over_three_spaces():
    src, tgt, zs, zt, _ = problem(3, n=3000)
    q = special_ortho_group.rvs(3, random_state=7)
    third = LatentSpace(src.points @ q.T - 2.0, lambda y: src.log_density((y + 2.0) @ q))
    many = align_many({"a": src, "b": tgt, "c": third},
                      test={"a": zs, "b": zt, "c": zs @ q.T - 2.0})
    assert not many.failures and len(many.pairs) == 6
    assert len(many.cycles) == 6
    assert max(many.cycles.values()) < 0.01


def test_align_models_uses_disjoint_halves_and_exact_densities():
    from flowtopo.model import FlowAE

    torch.manual_seed(0)
    model = FlowAE.from_config({"dim": 4, "k": 2, "noise_std": 0.3,
                                "flow": {"name": "coupling", "params": {"layers": 2}},
                                "prior": {"name": "hierarchical_gmm",
                                          "params": {"branching": [2, 2]}}})
    with torch.no_grad():
        for p in model.flow.parameters():
            p.add_(0.1 * torch.randn_like(p))
        x = model.sample(6000).numpy()
        x_test = model.sample(1000)
        z_test = model.encode(x_test)[0].double().numpy()
    res = align_models(model, model, x)
    scores = translation_scores(z_test, z_test, res.transform)
    assert scores["r2"] > 0.99
    assert res.source_tree.params["density"] == "exact"
    rows_a, rows_b = res.info["source_rows"], res.info["target_rows"]
    assert not set(rows_a) & set(rows_b) and len(rows_a) + len(rows_b) == len(x)
    # the rows say which inputs built which tree: the source tree's root holds exactly them
    assert len(res.source_tree.labels) == len(rows_a)
    with torch.no_grad():
        z_a = model.encode(torch.as_tensor(x[rows_a]))[0].double().numpy()
    for leaf in res.source_tree.leaves():
        assert np.allclose(z_a[leaf.members].mean(0), leaf.centroid, atol=1e-5)


def test_polish_gradient_matches_finite_differences():
    from flowtopo.matching._ml_polish import finite_difference_score, objective_and_gradient

    src, tgt, *_ = problem(3, n=500)
    rng = np.random.default_rng(0)
    a, b = np.eye(3) + 0.1 * rng.normal(size=(3, 3)), rng.normal(size=3)
    args = (src.points, tgt.points, finite_difference_score(tgt.log_density),
            finite_difference_score(src.log_density))
    _, ga, gb = objective_and_gradient(*args, a, b)
    h = 1e-6
    for i, j in [(0, 0), (1, 2), (2, 1)]:
        e = np.zeros((3, 3))
        e[i, j] = h
        fd = (objective_and_gradient(*args, a + e, b)[0]
              - objective_and_gradient(*args, a - e, b)[0]) / (2 * h)
        assert ga[i, j] == pytest.approx(fd, rel=1e-4, abs=1e-6)
    e = np.array([0.0, h, 0.0])
    fd = (objective_and_gradient(*args, a, b + e)[0]
          - objective_and_gradient(*args, a, b - e)[0]) / (2 * h)
    assert gb[1] == pytest.approx(fd, rel=1e-4, abs=1e-6)


def test_polish_uses_the_priors_exact_gradient_and_agrees_with_finite_differences():
    from flowtopo.matching._ml_polish import ml_polish
    from flowtopo.priors import build_prior

    torch.manual_seed(0)
    prior = build_prior({"name": "gmm", "k": 3, "params": {"components": 4}}).double()
    rng = np.random.default_rng(0)
    with torch.no_grad():
        zs, zt = prior().sample((3000,)).numpy(), prior().sample((3000,)).numpy()
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    a_true, b_true = 1.3 * q, np.array([0.5, -1.0, 2.0])
    target = LatentSpace(zt @ a_true.T + b_true,
                         log_density=lambda y: prior.numpy_log_prob(
                             (y - b_true) @ np.linalg.inv(a_true).T) - np.log(1.3 ** 3))
    exact = LatentSpace(zs, prior=prior)
    assert exact.score is not None  # taken from the prior
    values_only = LatentSpace(zs, log_density=prior.numpy_log_prob)
    assert values_only.score is None
    start = a_true + 0.05 * rng.normal(size=(3, 3)), b_true + 0.05
    kw = {"max_points": 2000, "seed": 0}  # the same points on both runs
    with_grad = ml_polish(exact, target, "affine", *start, **kw)
    with_fd = ml_polish(values_only, target, "affine", *start, **kw)
    assert with_grad is not None and with_fd is not None
    assert np.allclose(with_grad.matrix, with_fd.matrix, atol=1e-3)
    assert np.abs(with_grad.matrix - a_true).max() < np.abs(start[0] - a_true).max() / 2


def test_fit_kl_passes_right_maps_and_flags_mismatched_spaces():
    src, tgt, zs, zt, _ = problem(3, n=3000)
    res = align(src, tgt, method="tree")
    assert res.fit_kl is not None and abs(res.fit_kl) < 0.05 and not res.poor_fit
    wrong = align(src, tgt, method="oracle", pairs=(zs, zt[::-1]))  # pairs shuffled
    assert wrong.fit_kl > POOR_FIT_KL and wrong.poor_fit
    # different data behind the two spaces: every cluster finds a partner, the map is still
    # wrong, and the fit check says so
    other = problem(3, shape=[[3, 1], [2, 1]], n=3000)[1]
    mismatched = align(src, other, method="tree")
    assert mismatched.poor_fit, mismatched.fit_kl
    assert align(src.points, tgt.points, method="tree").fit_kl is None  # no densities
