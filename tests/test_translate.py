"""Translation between two networks' representations: the data, the map family, the fit checks,
the `Translation` object and its CLI."""

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from flowtopo.cli import app
from flowtopo.data import load_dataset, warped_pair
from flowtopo.errors import InputError
from flowtopo.matching import (
    POOR_CONFIRMATION,
    POOR_FIT_C2ST,
    TRANSFORMS,
    LatentSpace,
    align,
    c2st_fit_check,
    fit_map,
    leaf_agreement,
)
from flowtopo.matching._affine_shape import affine_shape_candidates, affine_shape_residual
from flowtopo.matching._cues import CUE_SETS, climb, consensus, cue_candidates, leaf_cues
from flowtopo.matching._transforms import PiecewiseAffine, fit_piecewise
from flowtopo.matching._tree_method import (
    CONSENSUS_MARGIN,
    SHAPE_DECISIVE,
    SHAPE_MARGIN,
    _pick,
    leaf_round_trip,
)
from flowtopo.representations import NetworkSpec, RepresentationPair, representation_pair
from flowtopo.topology import density_tree
from flowtopo.translate import TranslateConfig, Translation, check_embeddings, fit_translation

runner = CliRunner()


# ---------------------------------------------------------------- representation pairs


@pytest.fixture(scope="module")
def pair() -> RepresentationPair:
    return representation_pair("digits", "mlp:32:relu", "mlp:48-24:tanh", seed_source=0,
                               seed_target=1, epochs=15)


def test_representation_pair_is_unpaired_for_fitting_and_paired_for_testing(pair):
    assert pair.source.shape[1] == 32 and pair.target.shape[1] == 24
    ds = load_dataset("digits")
    assert len(pair.source) + len(pair.target) == len(ds.x_train)  # the two halves of train
    assert len(pair.test_source) == len(pair.test_target) == len(pair.labels_test) == len(
        ds.x_test)
    assert np.array_equal(pair.labels_test, ds.y_test)
    assert pair.info["source"]["test_accuracy"] > 0.8 < pair.info["target"]["test_accuracy"]
    # the two halves hold different inputs: no source row reappears among the target's inputs
    again = representation_pair("digits", "mlp:32:relu", "mlp:32:relu", seed_source=0,
                                seed_target=0, epochs=15)
    assert np.allclose(again.source, pair.source)  # deterministic by seed
    assert not any(np.isclose(row, again.target, atol=1e-9).all(1).any()
                   for row in again.source[:50])


def test_two_seeds_of_one_architecture_give_different_representations():
    a = representation_pair("wine", "mlp:16:tanh", "mlp:16:tanh", seed_source=0, seed_target=1,
                            epochs=5)
    assert not np.allclose(a.test_source, a.test_target)


def test_representation_pair_save_load_round_trip(pair, tmp_path):
    back = RepresentationPair.load(pair.save(tmp_path / "p"))
    for name in RepresentationPair.FILES:
        assert np.array_equal(getattr(back, name), getattr(pair, name))
    assert back.info == json.loads(json.dumps(pair.info))


@pytest.mark.parametrize("spec,err", [
    ("mlp64relu", "KIND:WIDTHS:ACTIVATION"), ("rnn:8:relu", "unknown kind"),
    ("mlp:8:swish", "unknown activation"), ("mlp:8-x:relu", "integers"),
    ("mlp:0:relu", ">= 1"),
])
def test_bad_network_specs_are_refused(spec, err):
    with pytest.raises(InputError, match=err):
        NetworkSpec.parse(spec)


def test_a_cnn_needs_image_shaped_data():
    with pytest.raises(InputError, match="image-shaped"):
        representation_pair("wine", "cnn:4:relu", "mlp:8:relu", epochs=1)
    cnn = representation_pair("digits", "cnn:4:relu", "mlp:8:relu", epochs=2)
    assert cnn.source.shape[1] == 32  # the dense layer after the convolutions


# ---------------------------------------------------------------- the map family (contract)


def _affine_pairs(rng, kind):
    x = rng.normal(size=(400, 3))
    a = rng.normal(size=(3, 3))
    if kind == "orthogonal":
        a = 1.7 * np.linalg.qr(a)[0]
    b = np.zeros(3) if kind == "linear" else rng.normal(size=3)
    return x, x @ a.T + b, a, b


@pytest.mark.parametrize("kind", [t for t in TRANSFORMS if t != "nonlinear"])
def test_every_map_family_recovers_a_map_of_its_own_family(kind, rng):
    x, y, a, b = _affine_pairs(rng, kind)
    a_hat, b_hat = fit_map(kind, x, y)
    assert np.allclose(a_hat, a, atol=1e-8) and np.allclose(b_hat, b, atol=1e-8)
    if kind == "piecewise":  # every piece of an exactly affine relation is that map
        pw = fit_piecewise(x, y, (x[:, 0] > 0).astype(int), a_hat, b_hat)
        assert np.allclose(pw(x), y, atol=1e-6)


def test_piecewise_carries_two_pieces_that_no_affine_map_can(rng):
    x = np.r_[rng.normal(size=(500, 2)) * 0.3 + [-4, 0], rng.normal(size=(500, 2)) * 0.3 + [4, 0]]
    piece = np.r_[np.zeros(500, int), np.ones(500, int)]
    rot = np.array([[0.0, -1.0], [1.0, 0.0]])
    y = np.where(piece[:, None] == 0, x @ rot.T + [0, 5], -x + [1, 1])
    a, b = fit_map("affine", x, y)
    pw = fit_piecewise(x, y, piece, a, b, shrink=1e-3)
    affine_err = np.mean((x @ a.T + b - y) ** 2)
    piece_err = np.mean((pw(x) - y) ** 2)
    assert piece_err < 0.01 * affine_err and piece_err < 1e-3
    back = PiecewiseAffine.from_dict(json.loads(json.dumps(pw.to_dict())))
    assert np.allclose(back(x), pw(x))
    # far from every piece the global affine map takes over
    far = np.array([[0.0, 40.0]])
    assert np.allclose(pw.responsibilities(far)[0, -1], 1.0, atol=1e-6)


def test_align_accepts_the_piecewise_family_for_every_method():
    wp = warped_pair([[1, 1], [1, 1, 1]], 2, seed=0, n=1500, n_test=300)
    res = align(wp.source, wp.target, method="tree", transform="piecewise", seed=0)
    assert res.piecewise is not None and res.transform_kind == "piecewise"
    mapped = res.transform(wp.test_source)
    assert np.mean((mapped - wp.test_target) ** 2) < 0.05 * np.var(wp.test_target) * 2
    oracle = align(wp.source, wp.target, method="oracle", transform="piecewise",
                   pairs=(wp.test_source, wp.test_target))
    assert oracle.transform(wp.test_source).shape == wp.test_target.shape


# ---------------------------------------------------------------- the fit check (contract)


@pytest.fixture(scope="module")
def synthetic():
    return warped_pair([[1, 1], [1, 1, 1]], 3, seed=0, n=3000, n_test=1000)


def test_a_right_map_passes_the_two_sample_check(synthetic):
    check = c2st_fit_check(synthetic.true_map(synthetic.source), synthetic.target)
    assert abs(check.excess) < 0.05 and not check.poor
    assert 0.4 < check.null_mean < 0.6


@pytest.mark.parametrize("wrong", ["identity", "shifted", "clusters piled up"])
def test_a_wrong_map_is_flagged_by_the_two_sample_check(synthetic, wrong):
    src, tgt = synthetic.source, synthetic.target
    mapped = synthetic.true_map(src)
    if wrong == "identity":
        mapped = src
    elif wrong == "shifted":
        mapped = mapped + 2.0 * tgt.std(0)
    else:  # the right map on half the points, the others piled onto the first half's place
        far = src[:, 0] > np.median(src[:, 0])
        mapped[far] += mapped[~far].mean(0) - mapped[far].mean(0)
    check = c2st_fit_check(mapped, tgt)
    assert check.poor and check.excess > POOR_FIT_C2ST


@pytest.mark.parametrize("method", ["identity", "oracle"])
def test_every_point_cloud_alignment_carries_a_fit_check(synthetic, method):
    opts = {"pairs": (synthetic.test_source, synthetic.test_target)} if method == "oracle" else {}
    res = align(synthetic.source, synthetic.target, method=method, **opts)
    assert res.fit_kl is None and res.fit_check is not None  # no densities: still checked
    assert res.poor_fit == (method == "identity")
    assert (res.fit_reason is None) == (method == "oracle")


# ---------------------------------------------------------------- cues and the round trip


def test_cue_consensus_ranks_the_true_leaf_correspondence_first(synthetic):
    ts = density_tree(synthetic.source, synthetic.source_log_prob)
    tt = density_tree(synthetic.target, synthetic.target_log_prob)
    cs, ct = leaf_cues(ts, synthetic.source), leaf_cues(tt, synthetic.target)
    # the truth: the target leaf whose centroid is nearest the mapped source centroid
    mapped = synthetic.true_map(np.array([ts.nodes[u].centroid for u in cs.leaves]))
    tc = np.array([tt.nodes[v].centroid for v in ct.leaves])
    truth = sorted((u, ct.leaves[int(np.argmin(np.linalg.norm(tc - m, axis=1)))])
                   for u, m in zip(cs.leaves, mapped, strict=True))
    cands = cue_candidates(cs, ct, restarts=8)
    near_top = [sorted(p) for c, p in cands if c >= cands[0][0] - CONSENSUS_MARGIN]
    assert truth in near_top  # the fit decides among these (select="fit")
    assert consensus(cs, ct, truth) > 0.9 > consensus(cs, ct, [(u, v) for (u, _), (_, v) in zip(
        truth, truth[1:] + truth[:1], strict=True)])


def test_the_consensus_ranks_exactly_as_scipy_does(rng):
    """`_average_ranks` (the consensus's ranking, written for speed) is scipy's rankdata to
    the bit, ties included, so the alignments it scores are unchanged."""
    from scipy.stats import rankdata

    from flowtopo.matching._cues import _average_ranks, _spearman

    for m in [1, 2, 3, 7, 28, 120]:
        for levels in [2, 5, None]:  # many ties, some, none
            x = (rng.integers(0, levels, m).astype(float) if levels
                 else rng.standard_normal(m))
            assert np.array_equal(_average_ranks(x), rankdata(x)), x
    a, b = rng.standard_normal(28), rng.integers(0, 4, 28).astype(float)
    ra, rb = rankdata(a) - rankdata(a).mean(), rankdata(b) - rankdata(b).mean()
    assert _spearman(a, b) == float(ra @ rb / np.sqrt((ra @ ra) * (rb @ rb)))


@pytest.mark.parametrize("cues", list(CUE_SETS))
def test_climbing_improves_the_consensus_and_random_climbs_find_the_identity(synthetic, cues):
    ts = density_tree(synthetic.source, synthetic.source_log_prob)
    cs = leaf_cues(ts, synthetic.source, cues)
    leaves = cs.leaves
    identity = list(zip(leaves, leaves, strict=True))
    swapped = [(leaves[0], leaves[1]), (leaves[1], leaves[0]), *identity[2:]]
    assert consensus(cs, cs, swapped) < 1
    score, pairs = climb(cs, cs, swapped)  # one swap away: a local move fixes it
    assert sorted(pairs) == sorted(identity) and score == pytest.approx(1)
    rotated = list(zip(leaves, leaves[1:] + leaves[:1], strict=True))  # every leaf wrong
    score, pairs = climb(cs, cs, rotated)
    assert score >= consensus(cs, cs, rotated) and len(pairs) == len(leaves)
    best = cue_candidates(cs, cs, restarts=2, random_climbs=16)[0]
    assert sorted(best[1]) == sorted(identity) and best[0] == pytest.approx(1)


def test_with_more_source_leaves_the_climb_chooses_which_stay_unmatched(synthetic):
    ts = density_tree(synthetic.source, synthetic.source_log_prob)
    cs = leaf_cues(ts, synthetic.source, "networks")
    leaves = cs.leaves
    assert len(leaves) >= 5
    # the target: the same leaves but the first. Random starts pair the sources in order, so
    # the last would always stay unmatched: the climb must move sources too
    ct = dataclasses.replace(cs, leaves=leaves[1:], matrices={
        name: m[1:, 1:] for name, m in cs.matrices.items()})
    score, pairs = cue_candidates(cs, ct, restarts=0, random_climbs=16)[0]  # climbs alone
    assert sorted(pairs) == sorted((u, u) for u in leaves[1:]) and score == pytest.approx(1)


def _blobs(centers, sizes, scale, rng):
    x = np.concatenate([c + scale * rng.standard_normal((n, 2)) for c, n in
                        zip(centers, sizes, strict=True)])
    return x, np.repeat(np.arange(len(sizes)), sizes)


def test_a_mode_one_side_lacks_is_left_unmatched_not_merged_into_a_neighbour():
    rng = np.random.default_rng(0)
    centers = np.array([[0, 0], [6, 1], [2, 7], [9, 8], [-5, 5], [-4, -6.0]])
    src, lab_s = _blobs(centers, [300, 260, 220, 340, 280, 240], 0.6, rng)
    th = 0.7
    rot = 1.3 * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    tgt, lab_t = _blobs(centers[:5] @ rot.T + [3.0, -2.0], [310, 250, 230, 330, 270], 0.78,
                        rng)  # the last source mode has no counterpart

    def classes(res):
        ts, tt = res.source_tree, res.target_tree
        return sorted((int(np.bincount(lab_s[ts.nodes[u].members]).argmax()),
                       int(np.bincount(lab_t[tt.nodes[v].members]).argmax()))
                      for u, v in res.node_pairs if ts.nodes[u].is_leaf)

    opts = {"method": "tree", "select": "consensus", "min_persistence": 1.0, "seed": 0}
    coarse = align(src, tgt, **opts)  # six modes coarsened to five: two merged, then matched
    assert coarse.info["modes"] == [6, 5] and coarse.info["coarsened"]
    assert classes(coarse) != [(c, c) for c in range(5)] and coarse.poor_fit
    fine = align(src, tgt, across_scales=False, **opts)
    assert len(fine.source_tree.leaves()) == 6 and not fine.info["coarsened"]
    assert classes(fine) == [(c, c) for c in range(5)]
    assert not fine.poor_fit, fine.fit_reason


def test_select_fit_and_select_consensus_pick_different_winners():
    fits, agree, leaves = [0.1, 0.5, 0.05, 0.01], [0.85, 0.9, 0.7, 0.99], [5, 5, 5, 3]
    assert _pick(fits, agree, leaves, "fit") == 3  # best fit within the margin of the top
    assert _pick(fits, agree, leaves, "consensus") == 1  # top consensus among 5-leaf ones
    assert _pick([0.2, 0.1], [float("nan")] * 2, [2, 2], "consensus") == 1  # fit alone
    with pytest.raises(InputError, match="unknown select 'best'; valid: fit, consensus"):
        align(np.random.default_rng(0).normal(size=(200, 2)),
              np.random.default_rng(1).normal(size=(200, 2)), method="tree", select="best")


def test_affine_shape_is_blind_to_similarities_and_low_only_for_the_right_correspondence():
    rng = np.random.default_rng(0)
    cs = rng.normal(size=(8, 3))
    a = np.diag([4.0, 1.0, 0.2]) @ np.linalg.qr(rng.normal(size=(3, 3)))[0]  # anisotropic
    ct = cs @ a.T + 3.0 + 0.01 * rng.normal(size=(8, 3))
    truth = [(i, i) for i in range(8)]
    swapped = [(0, 1), (1, 0), *truth[2:]]
    r = affine_shape_residual(cs, ct, truth)
    assert r < 1e-3 and affine_shape_residual(cs, ct, swapped) > 10 * r
    # a similarity of either side (rotation, reflection, scale, translation) leaves it as it is
    q = 2.5 * np.linalg.qr(rng.normal(size=(3, 3)))[0] @ np.diag([1.0, -1.0, 1.0])
    assert affine_shape_residual(cs @ q.T - 7.0, ct, truth) == pytest.approx(r, rel=1e-6)
    assert affine_shape_residual(cs, ct @ q.T, swapped) == pytest.approx(
        affine_shape_residual(cs, ct, swapped), rel=1e-6)
    # the local search from random starts finds the truth among 8! assignments
    best, pairs = affine_shape_candidates(cs, ct, seed=0)[0]
    assert sorted(pairs) == truth and best == pytest.approx(r)


def test_select_consensus_lets_the_affine_shape_decide_among_near_tied_consensus():
    fits, leaves = [0.1, 0.2, 0.3, 0.4], [5, 5, 5, 4]
    agree = [0.80, 0.80 - SHAPE_MARGIN / 2, 0.80 - 2 * SHAPE_MARGIN, 0.95]
    shape = [0.10, 0.05, 0.01, 0.0]
    assert _pick(fits, agree, leaves, "consensus") == 0  # the top consensus of 5-leaf ones
    # within the margin the lower residual wins; outside it (or fewer leaves) it does not
    assert _pick(fits, agree, leaves, "consensus", shape) == 1
    # a candidate without a residual is never picked by it; all NaN: the consensus decides
    assert _pick(fits, agree, leaves, "consensus", [0.1, float("nan"), 0.05, 0.0]) == 0
    assert _pick(fits, agree, leaves, "consensus", [float("nan")] * 4) == 0


def test_a_decisively_lower_affine_shape_wins_within_the_consensus_margin():
    """A residual `SHAPE_DECISIVE` times below every other plausible one outweighs the
    consensus anywhere within `CONSENSUS_MARGIN` of the top; a smaller gap, a candidate beyond
    that margin, or one residual with nothing to compare it to does not."""
    fits, leaves = [0.1, 0.2, 0.3, 0.4], [5, 5, 5, 4]
    agree = [0.80, 0.80 - CONSENSUS_MARGIN / 2, 0.80 - 2 * CONSENSUS_MARGIN, 0.95]
    low = 0.05 / SHAPE_DECISIVE
    assert _pick(fits, agree, leaves, "consensus", [0.05, low, 0.05, 0.0]) == 1
    assert _pick(fits, agree, leaves, "consensus", [0.05, 2 * low, 0.05, 0.0]) == 0
    assert _pick(fits, agree, leaves, "consensus", [0.05, 0.05, low / 100, 0.0]) == 0
    assert _pick(fits, agree, leaves, "consensus", [float("nan"), low, float("nan"), 0]) == 0
    # the same assignment found twice is one candidate, not a rival of itself
    twice = [0.80, 0.80 - CONSENSUS_MARGIN / 2, 0.80 - CONSENSUS_MARGIN / 2, 0.95]
    assert _pick(fits, twice, leaves, "consensus", [0.05, low, low, 0.0]) == 1


def _sibling_modes(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The translation benchmark's hierarchical base (8 classes in 3 families whose sibling
    directions are regular simplices): (800, 3) source, (800, 3) target (an anisotropic affine
    image of other draws), (1600,) classes of both."""
    from flowtopo.data._hierarchy import HierarchicalMixture

    hm = HierarchicalMixture.build([[1, 1], [1, 1, 1], [1, 1, 1]], 3, sigma=0.9, seed=seed)
    rng = np.random.default_rng(seed)
    lab = rng.choice(len(hm.weights), 1600, p=hm.weights)
    x = hm.means[lab] + hm.sigma * rng.standard_normal((1600, 3))
    a = (np.linalg.qr(rng.standard_normal((3, 3)))[0] @ np.diag([2.5, 1, 0.4])
         @ np.linalg.qr(rng.standard_normal((3, 3)))[0])
    return x[:800], x[800:] @ a.T + 1.0, lab


def test_sibling_modes_that_the_order_of_distances_confuses_are_told_apart_by_affine_shape(
        monkeypatch):
    """With the affine shape cue every leaf finds its class and the fit passes; the rank cues
    alone pick a wrong correspondence, and every wrong one is flagged.

    Which sibling pairs the rank cues alone confuse sits near ties that the BLAS kernel's last
    bits decide (OpenBLAS picks its kernel by CPU; ``OPENBLAS_CORETYPE`` overrides it): seed 2,
    which this test once used alone, comes out right under the Haswell kernel and wrong under
    Sandybridge's. With the shape cue seeds 3 and 7 are right under the Haswell, Zen,
    Sandybridge and SkylakeX kernels (this test passes under each, ``OPENBLAS_CORETYPE``), and
    without it at least one of them is wrong under each; so the test asks for a wrong map
    without the cue on at least one of them, and a flag on every wrong one. Under SkylakeX,
    seed 7's right correspondence (residual 2e-4, every other candidate's 0.05 or more) has a
    consensus 0.04 below a wrong one's: it wins only because a decisively lower residual
    (`SHAPE_DECISIVE`) counts beyond `SHAPE_MARGIN`.
    """
    import flowtopo.matching._affine_shape as shape_module

    wrong = []
    for seed in (3, 7):
        src, tgt, lab = _sibling_modes(seed)

        def right_mass(res, lab=lab):
            ts, tt = res.source_tree, res.target_tree
            major = [lambda n, t=t, y=y: int(np.bincount(y[t.nodes[n].members]).argmax())
                     for t, y in ((ts, lab[:800]), (tt, lab[800:]))]
            return sum(ts.nodes[u].mass for u, v in res.node_pairs
                       if ts.nodes[u].is_leaf and major[0](u) == major[1](v))

        opts = {"method": "tree", "select": "consensus", "min_persistence": 1.0, "seed": seed}
        monkeypatch.undo()
        res = align(src, tgt, **opts)
        assert len(res.source_tree.leaves()) == len(res.target_tree.leaves()) == 8
        assert right_mass(res) == pytest.approx(1.0) and not res.poor_fit, (seed, res.fit_reason)
        assert 0 <= res.info["affine_shape"] < 0.01  # the winner's residual, recorded
        monkeypatch.setattr(shape_module, "AFFINE_SHAPE_DOF", 99)  # the rank cues alone
        alone = align(src, tgt, **opts)
        assert alone.info["affine_shape"] is None  # not measured: too few degrees of freedom
        if right_mass(alone) < 1 - 1e-9:
            assert alone.poor_fit, (seed, right_mass(alone))
            wrong.append(seed)
    assert wrong, "the rank cues alone got every correspondence right on both seeds"


def test_leaf_round_trip_measures_agreement_of_the_two_directions(synthetic):
    ts = density_tree(synthetic.source, synthetic.source_log_prob)
    leaves = [n.id for n in ts.leaves()]
    fwd = [(0, 0)] + [(u, 100 + i) for i, u in enumerate(leaves)]
    assert leaf_round_trip(ts, fwd, [(v, u) for u, v in fwd]) == 1.0
    swapped = [(100, leaves[1]), (101, leaves[0])] + [(100 + i, u) for i, u in
                                                       enumerate(leaves) if i > 1]
    share = ts.nodes[leaves[0]].mass + ts.nodes[leaves[1]].mass
    assert leaf_round_trip(ts, fwd, swapped) == pytest.approx(1 - share / sum(
        ts.nodes[u].mass for u in leaves))


def test_a_tree_alignment_of_a_right_pair_round_trips_and_passes(synthetic):
    s = LatentSpace(synthetic.source, synthetic.source_log_prob)
    t = LatentSpace(synthetic.target, synthetic.target_log_prob)
    res = align(s, t, method="tree", seed=0)
    assert res.round_trip == 1.0 and not res.poor_fit, res.fit_reason


# ---------------------------------------------------------------- Translation


FAST = TranslateConfig(k=3, pca=8, min_persistence=0.5)
FLOWAE = TranslateConfig(encoder="flowae", k=3, pca=8, epochs=20, density="knn",
                         min_persistence=0.5)


@pytest.fixture(scope="module", params=["pca", "flowae"])
def translation(pair, request):
    return fit_translation(pair.source, pair.target, FAST if request.param == "pca" else FLOWAE)


def test_translation_maps_embeddings_into_the_target_space(translation, pair):
    y = translation.transform(pair.test_source)
    assert y.shape == pair.test_target.shape and np.isfinite(y).all()
    z = translation.transform_latents(translation.source.encode(pair.test_source))
    assert z.shape == (len(pair.test_source), 3)
    summ = translation.summary()
    assert summ["source_dim"] == 32 and summ["target_dim"] == 24
    assert summ["poor_fit"] == translation.poor_fit == (translation.fit_reason is not None)
    assert summ["fit_check"] is not None and summ["round_trip"] is not None
    assert len(translation.leaf_correspondence) >= 4  # k + 1 modes fix a 3-dim map


def test_the_latent_dim_search_keeps_the_best_confirmed_map(pair, tmp_path):
    from flowtopo.translate import CONFIRMATION_TIE, K_SEARCH

    tr = fit_translation(pair.source, pair.target, TranslateConfig(min_persistence=0.5))
    tried = tr.search
    assert sorted({t["k"] for t in tried}, reverse=True) == list(K_SEARCH)  # every k
    assert [t["k"] for t in tried] == sorted((t["k"] for t in tried), reverse=True)
    for k in K_SEARCH:  # at each k the coarsened trees, and all modes when they differ
        at_k = [t.get("coarsened") for t in tried if t["k"] == k]
        assert at_k in ([None], [False], [True], [True, False])
    assert all(t["reason"] for t in tried if not t["passed"])
    passed = [t for t in tried if t["passed"]]
    if passed:  # the best confirmed of the maps that pass (near ties: the largest k)
        top = max(t["confirmation"] for t in passed)
        best = max(t["k"] for t in passed if t["confirmation"] >= top - CONFIRMATION_TIE)
        assert tr.config.k == tr.source.k == best and not tr.poor_fit
        assert len(passed) >= 2
        assert all(t["confirmation"] >= POOR_CONFIRMATION for t in passed)
    else:  # none passed: the largest identifiable k, flagged
        assert tr.poor_fit and tr.fit_reason
    assert tr.summary()["k_search"] == tried
    back = Translation.load(tr.save(tmp_path / "tr"))
    assert back.alignment.confirmation == tr.alignment.confirmation
    assert back.poor_fit == tr.poor_fit and back.fit_reason == tr.fit_reason


@pytest.fixture(scope="module")
def right_tree_map(synthetic):
    s = LatentSpace(synthetic.source, synthetic.source_log_prob)
    t = LatentSpace(synthetic.target, synthetic.target_log_prob)
    return align(s, t, method="tree", seed=0)


def _swap_two_largest(res):
    """``res`` with the targets of its two largest matched source leaves exchanged."""
    ts = res.source_tree
    leaf = [(u, v) for u, v in res.node_pairs if ts.nodes[u].is_leaf]
    leaf.sort(key=lambda p: -ts.nodes[p[0]].mass)
    (u1, v1), (u2, v2) = leaf[:2]
    pairs = [(u, v2 if u == u1 else v1 if u == u2 else v) for u, v in res.node_pairs]
    share = (len(ts.nodes[u1].members) + len(ts.nodes[u2].members)) / sum(
        len(ts.nodes[u].members) for u, _ in leaf)
    return dataclasses.replace(res, node_pairs=pairs, confirmation=None), share


def test_leaf_agreement_is_the_mass_two_alignments_send_to_the_same_place(right_tree_map,
                                                                          synthetic):
    n_s, n_t = len(synthetic.source), len(synthetic.target)
    assert leaf_agreement(right_tree_map, right_tree_map, n_s, n_t) == 1.0
    swapped, share = _swap_two_largest(right_tree_map)
    assert share > 0.3
    assert leaf_agreement(right_tree_map, swapped, n_s, n_t) == pytest.approx(1 - share)
    assert leaf_agreement(swapped, right_tree_map, n_s, n_t) == pytest.approx(1 - share)


def test_a_map_no_other_latent_dim_confirms_is_flagged(right_tree_map, synthetic):
    from flowtopo.translate import confirm

    n_s, n_t = len(synthetic.source), len(synthetic.target)
    assert not right_tree_map.poor_fit
    swapped, share = _swap_two_largest(right_tree_map)
    found = [Translation(None, None, dataclasses.replace(a, confirmation=None),
                         FAST.model_copy(update={"k": k}))
             for a, k in ((right_tree_map, 8), (right_tree_map, 6), (swapped, 4))]
    confirm(found, n_s, n_t)
    assert [tr.alignment.confirmation for tr in found] == pytest.approx([1, 1, 1 - share])
    assert not found[0].poor_fit and not found[1].poor_fit
    assert found[2].poor_fit and "not reproduced at another latent dim" in found[2].fit_reason
    alone = [Translation(None, None, dataclasses.replace(right_tree_map, confirmation=None),
                         FAST)]
    confirm(alone, n_s, n_t)
    assert alone[0].alignment.confirmation == 0.0 and alone[0].poor_fit
    assert "no map at another latent dim passes" in alone[0].fit_reason


def test_of_the_maps_that_pass_the_best_confirmed_is_kept_not_the_largest_k(right_tree_map,
                                                                           synthetic):
    from flowtopo.translate import CONFIRMATION_TIE, choose, confirm

    n_s, n_t = len(synthetic.source), len(synthetic.target)
    ts = right_tree_map.source_tree
    leaf = sorted(((u, v) for u, v in right_tree_map.node_pairs if ts.nodes[u].is_leaf),
                  key=lambda p: ts.nodes[p[0]].mass)
    (small, _), (_, elsewhere) = leaf[0], leaf[-1]  # the smallest leaf sent to the largest's
    wrong = dataclasses.replace(right_tree_map, node_pairs=[
        (u, elsewhere if u == small else v) for u, v in right_tree_map.node_pairs])
    share = len(ts.nodes[small].members) / sum(len(ts.nodes[u].members) for u, _ in leaf)
    assert 0 < share <= 1 - POOR_CONFIRMATION  # a wrong map that its checks still pass

    def at(res, k):
        return Translation(None, None, dataclasses.replace(res, confirmation=None),
                           FAST.model_copy(update={"k": k}))

    found = [at(wrong, 8), at(right_tree_map, 6), at(right_tree_map, 4)]
    confirm(found, n_s, n_t)
    assert [tr.poor_fit for tr in found] == [False, False, False]
    assert found[0].alignment.confirmation == pytest.approx(1 - share)
    assert choose(found) is found[1]  # confirmed at 1.0, over k = 8's 1 - share
    tied = [at(right_tree_map, 8), at(right_tree_map, 6)]
    confirm(tied, n_s, n_t)
    assert choose(tied) is tied[0]  # equal confirmation: the larger k
    tied[0].alignment.confirmation = 0.96 - CONFIRMATION_TIE / 2  # within the tie: still k = 8
    tied[1].alignment.confirmation = 0.96
    assert choose(tied) is tied[0]
    tied[0].alignment.confirmation = 0.96 - 2 * CONFIRMATION_TIE  # clearly worse: k = 6
    assert not tied[0].poor_fit and choose(tied) is tied[1]
    alone = [at(right_tree_map, 6), at(right_tree_map, 6)]  # one k: nothing to confirm it
    confirm(alone, n_s, n_t)
    assert [tr.alignment.confirmation for tr in alone] == [0.0, 0.0]
    assert choose(alone) is alone[0] and alone[0].poor_fit  # none passes: the first, flagged


def test_translation_save_load_round_trip(translation, pair, tmp_path):
    back = Translation.load(translation.save(tmp_path / "tr"))
    assert np.allclose(back.transform(pair.test_source), translation.transform(pair.test_source),
                       atol=1e-5)
    assert back.poor_fit == translation.poor_fit and back.fit_kl == translation.fit_kl
    assert back.leaf_correspondence == translation.leaf_correspondence


def test_translation_refuses_bad_embeddings(translation, pair):
    with pytest.raises(InputError, match=r"shape \(n, 32\)"):
        translation.transform(pair.test_target)
    bad = pair.test_source.copy()
    bad[3, 1] = np.nan
    with pytest.raises(InputError, match="NaN"):
        translation.transform(bad)
    with pytest.raises(InputError, match="rows"):
        check_embeddings(pair.source[:10], "source")
    with pytest.raises(InputError, match="real numbers"):
        check_embeddings(pair.source.astype(complex), "source")
    with pytest.raises(InputError, match="k=9"):
        fit_translation(pair.source, pair.target, TranslateConfig(k=9, pca=8))



def test_only_a_flowae_side_has_an_exact_density(translation, pair):
    if translation.source.model is None:  # the linear encoder: points only
        with pytest.raises(InputError, match="no exact density"):
            translation.source.space(pair.source, exact=True)
    else:
        space = translation.source.space(pair.source, exact=True)
        assert callable(space.log_density)
        assert np.isfinite(space.log_density(space.points[:10])).all()


# ---------------------------------------------------------------- CLI end to end


def test_cli_pair_fit_apply_end_to_end(tmp_path):
    d = tmp_path / "pair"
    res = runner.invoke(app, ["data", "pair", "digits", "--out", str(d), "--source",
                              "mlp:32:relu", "--target", "mlp:24:tanh", "--epochs", "15"],
                        terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "test accuracy" in res.output
    res = runner.invoke(app, ["translate", "fit", "--source", str(d / "source.npy"), "--target",
                              str(d / "target.npy"), "--out", str(tmp_path / "tr"), "--k", "3",
                              "--pca", "8", "--min-persistence", "0.5", "--json"])
    assert res.exit_code == 0, res.output
    summ = json.loads(res.stdout[res.stdout.index("{"):])
    assert summ["source_dim"] == 32 and summ["target_dim"] == 24 and "poor_fit" in summ
    out = tmp_path / "hat.npy"
    res = runner.invoke(app, ["translate", "apply", str(tmp_path / "tr"),
                              str(d / "test_source.npy"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert np.load(out).shape == np.load(d / "test_target.npy").shape
    again = subprocess.run([sys.executable, "-m", "flowtopo.cli", "translate", "apply",
                            str(tmp_path / "tr"), str(d / "test_source.npy"), "--out", str(out)],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("problem", ["mismatched dims", "nan", "few rows", "complex"])
def test_cli_translate_bad_input_is_one_line_exit_2(tmp_path, pair, problem, cli):
    src, tgt = pair.source, pair.target
    if problem == "nan":
        src = src.copy()
        src[0, 0] = np.nan
    elif problem == "few rows":
        src = src[:20]
    elif problem == "complex":
        src = src.astype(complex)
    np.save(tmp_path / "s.npy", src)
    np.save(tmp_path / "t.npy", tgt)
    if problem == "mismatched dims":  # apply a fitted translation to the wrong side's rows
        folder = tmp_path / "tr"
        fit_translation(pair.source, pair.target, FAST).save(folder)
        args = ["translate", "apply", str(folder), str(tmp_path / "t.npy"), "--out",
                str(tmp_path / "o.npy")]
    else:
        args = ["translate", "fit", "--source", str(tmp_path / "s.npy"), "--target",
                str(tmp_path / "t.npy"), "--out", str(tmp_path / "o")]
    res = cli(*args)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
