import json

import networkx as nx
import numpy as np
import pytest
import torch
from scipy.stats import special_ortho_group
from typer.testing import CliRunner

from flowtopo.cli import app
from flowtopo.data import HierarchicalMixture
from flowtopo.errors import InputError
from flowtopo.priors import build_prior
from flowtopo.topology import (
    DensityTree,
    annotate_homology,
    compare_with_truth,
    density_tree,
    loops,
)

SHAPES = {
    "balanced": [[1, 1], [1, 1]],
    "unbalanced": [[1, 1, 1], 1],
    "three-levels": [[[1, 1], 1], [1, 1]],
    "unequal-masses": [[3, 1], [2, 2, 2]],
}
CASES = [(s, k) for s in SHAPES for k in (2, 3, 5)]


def sample(shape, k, n=5000, seed=0):
    mix = HierarchicalMixture.build(SHAPES[shape], k, seed=seed)
    u, labels = mix.sample(n, np.random.default_rng(seed + 100))
    return mix, u, labels


@pytest.mark.parametrize("shape,k", CASES, ids=[f"{s}-k{k}" for s, k in CASES])
def test_recovers_known_trees_from_the_exact_density(shape, k):
    mix, u, _ = sample(shape, k)
    tree = density_tree(u, mix.log_prob)
    agree = compare_with_truth(tree, mix.tree)
    assert agree.n_leaves == agree.n_true_leaves
    assert agree.nesting
    assert agree.max_mass_error < 0.03


@pytest.mark.parametrize("shape,k", CASES, ids=[f"{s}-k{k}" for s, k in CASES])
def test_leaves_and_masses_from_a_knn_estimate(shape, k):
    mix, u, _ = sample(shape, k, seed=1)
    agree = compare_with_truth(density_tree(u), mix.tree)
    assert agree.n_leaves == agree.n_true_leaves
    assert agree.max_mass_error < 0.03


def test_with_values_only_the_leaves_and_masses_still_hold():
    mix, u, _ = sample("three-levels", 3, seed=2)
    agree = compare_with_truth(density_tree(u, mix.log_prob(u)), mix.tree)
    assert agree.n_leaves == 5 and agree.max_mass_error < 0.03


def test_basin_labels_agree_with_the_generating_components():
    from sklearn.metrics import adjusted_rand_score

    mix, u, labels = sample("unequal-masses", 3)
    tree = density_tree(u, mix.log_prob)
    assert adjusted_rand_score(labels, tree.labels) > 0.98


@pytest.mark.parametrize("shape", list(SHAPES))
def test_invariant_under_rotation_and_translation(shape):
    mix, u, _ = sample(shape, 3, seed=3)
    rot = special_ortho_group.rvs(3, random_state=0)
    shift = np.array([5.0, -3.0, 2.0])
    a = density_tree(u, mix.log_prob)
    b = density_tree(u @ rot.T + shift, lambda v: mix.log_prob((v - shift) @ rot))
    assert np.array_equal(a.labels, b.labels)
    ma = sorted(round(n.mass, 6) for n in a.nodes.values())
    mb = sorted(round(n.mass, 6) for n in b.nodes.values())
    assert ma == mb
    assert sorted(len(s) for s in a.leaf_sets()) == sorted(len(s) for s in b.leaf_sets())


def test_stable_under_resampling():
    mix = HierarchicalMixture.build(SHAPES["three-levels"], 3, seed=4)
    trees = [density_tree(mix.sample(4000, np.random.default_rng(s))[0], mix.log_prob)
             for s in range(3)]
    for t in trees:
        agree = compare_with_truth(t, mix.tree)
        assert agree.ok and agree.max_mass_error < 0.03


def test_disconnected_pieces_without_bridges_join_at_the_lowest_level():
    mix, u, _ = sample("balanced", 2)
    tree = density_tree(u, mix.log_prob, bridge=False)
    assert tree.disconnected and not tree.params["bridged"]
    assert len(tree.leaves()) == 4 and tree.leaf_sets() == set()  # flat: nesting is lost
    assert tree.root.level == pytest.approx(min(mix.log_prob(u)))


def test_node_attributes_are_consistent():
    mix, u, _ = sample("three-levels", 2)
    tree = density_tree(u, mix.log_prob)
    assert tree.root.mass == 1.0 and tree.root.parent is None
    for node in tree.nodes.values():
        if node.children:
            assert np.isclose(node.mass, sum(tree.nodes[c].mass for c in node.children))
            for c in node.children:
                assert tree.nodes[c].merge_level == node.level
                assert tree.nodes[c].depth == node.depth + 1
        assert np.allclose(node.centroid, u[node.members].mean(0))
        assert node.covariance.shape == (2, 2)
        assert node.persistence >= 0
    assert sorted(np.concatenate([leaf.members for leaf in tree.leaves()]).tolist()) == list(
        range(len(u)))


def test_networkx_json_pretty_and_diagram():
    mix, u, _ = sample("unbalanced", 2)
    tree = density_tree(u, mix.log_prob)
    g = tree.to_networkx()
    assert isinstance(g, nx.DiGraph) and nx.is_arborescence(g)
    assert g.number_of_nodes() == len(tree.nodes)
    back = DensityTree.from_json(tree.to_json(members=True))
    assert np.array_equal(back.labels, tree.labels)
    assert {n.id: n.mass for n in back.nodes.values()} == {
        n.id: n.mass for n in tree.nodes.values()}
    json.loads(tree.to_json())  # plain JSON
    from rich.console import Console

    console = Console(record=True, width=200)
    console.print(tree.pretty())
    assert console.export_text().count("(mode)") == 4
    births, deaths = tree.diagram[:, 0], tree.diagram[:, 1]
    assert (births >= deaths).all()
    assert ((births - deaths) >= tree.params["min_persistence"]).sum() >= 4


@pytest.mark.parametrize("k", [2, 3])
def test_prior_tree_agrees_with_the_sample_based_tree(k):
    torch.manual_seed(0)
    prior = build_prior({"name": "hierarchical_gmm", "k": k, "params": {"branching": [2, 3]}})
    with torch.no_grad():
        z = prior().sample((6000,)).numpy()
    agree = compare_with_truth(density_tree(z, prior.numpy_log_prob), prior.true_tree())
    assert agree.ok and agree.max_mass_error < 0.03


def test_homology_tells_a_ring_from_a_blob():
    torch.manual_seed(0)
    sup = build_prior({"name": "superposition", "k": 2, "params": {}})
    with torch.no_grad():
        z = sup().sample((3000,)).numpy()
    tree = annotate_homology(density_tree(z, sup.numpy_log_prob), z)
    by_loops = sorted(leaf.betti1 for leaf in tree.leaves())
    assert by_loops == [0, 0, 1]
    assert tree.root.betti1 == 1
    rng = np.random.default_rng(0)
    assert loops(rng.normal(size=(400, 4))) == 0
    t = rng.uniform(0, 2 * np.pi, 400)
    ring4 = np.stack([np.cos(t), np.sin(t), 0.05 * rng.normal(size=400),
                      0.05 * rng.normal(size=400)], 1)
    assert loops(ring4) == 1


@pytest.mark.parametrize(
    "points, log_density, message",
    [
        (np.array([[0.0, np.nan]] * 10), None, "NaN"),
        (np.zeros((3, 2)), None, "at least k \\+ 2"),
        (np.zeros((10, 2)), np.zeros(9), "10 points but 9"),
        (np.random.default_rng(0).normal(size=(10, 2)), np.full(10, np.inf), "NaN/inf"),
        (np.zeros(10), None, "must be \\(n, k\\)"),
    ],
)
def test_bad_input_is_a_clear_error(points, log_density, message):
    with pytest.raises(InputError, match=message):
        density_tree(points, log_density)


def test_topology_needs_no_torch():
    import subprocess
    import sys

    code = ("import sys, numpy as np; from flowtopo.topology import density_tree; "
            "t = density_tree(np.random.default_rng(0).normal(size=(200, 2))); "
            "print('torch' in sys.modules, len(t.leaves()) >= 1)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]


def test_topology_plot_cli(tmp_path):
    out, js = tmp_path / "t.png", tmp_path / "t.json"
    res = CliRunner().invoke(app, ["topology", "plot", "--prior", "superposition", "--loops",
                                   "--out", str(out), "--json-out", str(js)],
                             terminal_width=200)
    assert res.exit_code == 0, res.output
    assert out.read_bytes()[:4] == b"\x89PNG" and out.stat().st_size > 10000
    assert len(json.loads(js.read_text())["nodes"]) == 5
    res = CliRunner().invoke(app, ["topology", "plot", "--out", str(out)])
    assert res.exit_code == 2
    assert "give exactly one of --prior FAMILY or --dataset NAME" in res.output
