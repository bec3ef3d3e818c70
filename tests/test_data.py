import gzip
import struct

import numpy as np
import pytest
from sklearn.mixture import GaussianMixture

from flowtopo.data import (
    DATASETS,
    HierarchicalMixture,
    Standardizer,
    load_dataset,
    read_idx,
)
from flowtopo.errors import InputError

SYNTHETIC = ["hierarchical", "trefoil", "linked_rings", "rings", "moons", "pinwheel"]


@pytest.mark.parametrize("name", [*SYNTHETIC, "digits", "wine"])
def test_every_builtin_dataset_contract(name):
    ds = load_dataset(name)
    assert ds.x_train.dtype == np.float32 and ds.x_test.dtype == np.float32
    assert ds.x_train.ndim == 2 and ds.x_train.shape[1] == ds.x_test.shape[1] == ds.dim
    assert np.isfinite(ds.x_train).all() and np.isfinite(ds.x_test).all()
    assert ds.y_train is not None and len(ds.y_train) == len(ds.x_train)
    # the standardiser maps raw data to the splits and back
    assert np.allclose(ds.standardizer.transform(ds.standardizer.inverse(ds.x_test)), ds.x_test,
                       atol=1e-4)


def test_registry_is_complete():
    assert set(DATASETS) >= {*SYNTHETIC, "digits", "wine", "mnist", "fashion_mnist"}


def test_standardizer_fits_train_only():
    ds = load_dataset("wine", seed=3)
    assert np.allclose(ds.x_train.mean(0), 0, atol=1e-4)
    assert np.allclose(ds.x_train.std(0), 1, atol=1e-3)
    # the test split is transformed with the training statistics, so it is not exactly centred
    assert not np.allclose(ds.x_test.mean(0), 0, atol=1e-3)
    s = Standardizer.from_dict(ds.standardizer.to_dict())
    assert np.array_equal(s.mean, ds.standardizer.mean)


def test_hierarchical_density_normalises_on_a_grid_in_2d():
    ds = load_dataset("hierarchical", dim=2, k=1, n=500, separation=6.0, sigma=0.6)
    g = np.linspace(-25, 25, 1001)
    gx, gy = np.meshgrid(g, g)
    pts = np.stack([gx.ravel(), gy.ravel()], 1)
    mass = np.exp(ds.raw_log_density(pts)).sum() * (g[1] - g[0]) ** 2
    assert abs(mass - 1.0) < 1e-3


def _gmm_log_prob(gm: GaussianMixture, x: np.ndarray) -> np.ndarray:
    return gm.score_samples(x)


def test_hierarchical_density_normalises_and_matches_samples_in_6d(rng):
    """E_q[p/q] = 1 checks normalisation; E_p[q/p] = 1 checks that p is the sampler's density."""
    ds = load_dataset("hierarchical", n=40000, dim=6, k=2, test_fraction=0.5, seed=5)
    gen = ds.info["generator"]
    x_raw = ds.standardizer.inverse(ds.x_train).astype(np.float64)
    gm = GaussianMixture(12, covariance_type="full", random_state=0).fit(x_raw)
    wide = GaussianMixture(12, covariance_type="full")
    wide.weights_, wide.means_ = gm.weights_, gm.means_
    wide.covariances_ = gm.covariances_ * 1.3**2
    wide.precisions_cholesky_ = np.linalg.cholesky(np.linalg.inv(wide.covariances_))
    xq = wide.sample(200000)[0]
    est = np.mean(np.exp(gen.log_prob(xq) - _gmm_log_prob(wide, xq)))
    assert abs(est - 1.0) < 0.03, est
    narrow = GaussianMixture(12, covariance_type="full")
    narrow.weights_, narrow.means_ = gm.weights_, gm.means_
    narrow.covariances_ = gm.covariances_ * 0.7**2
    narrow.precisions_cholesky_ = np.linalg.cholesky(np.linalg.inv(narrow.covariances_))
    xp = np.concatenate([gen.sample(100000, rng)[0]])
    est2 = np.mean(np.exp(_gmm_log_prob(narrow, xp) - gen.log_prob(xp)))
    assert abs(est2 - 1.0) < 0.03, est2


def test_standardised_density_accounts_for_the_jacobian():
    a = load_dataset("hierarchical", standardize=False, seed=2)
    b = load_dataset("hierarchical", standardize=True, seed=2)
    x_raw = a.x_test
    lb = b.log_density(b.standardizer.transform(x_raw))
    assert np.allclose(lb, a.log_density(x_raw) + b.standardizer.log_abs_det, atol=1e-3)


@pytest.mark.parametrize(
    "shape",
    [[[1, 1], [1, 1]], [[1, 1, 1], 1], [[[1, 1], 1], [1, 1]], [[3, 1], [2, 2, 2]]],
    ids=["balanced", "unbalanced", "three-levels", "unequal-masses"],
)
def test_ground_truth_tree_matches_generation_parameters(shape, rng):
    mix = HierarchicalMixture.build(shape, k=3, seed=0)
    t = mix.tree

    def leaves(s):
        return [s] if not isinstance(s, list) else [x for c in s for x in leaves(c)]

    weights = np.array(leaves(shape), float)
    leaf_nodes = [n for n in t if t.out_degree(n) == 0]
    assert len(leaf_nodes) == len(weights)
    got = sorted(t.nodes[n]["mass"] for n in leaf_nodes)
    assert np.allclose(got, sorted(weights / weights.sum()))
    assert len(list(t.successors(0))) == len(shape)
    for n in t:
        kids = list(t.successors(n))
        if kids:
            assert np.isclose(t.nodes[n]["mass"], sum(t.nodes[c]["mass"] for c in kids))
    _, labels = mix.sample(20000, rng)
    freq = np.bincount(labels, minlength=len(weights)) / 20000
    assert np.max(np.abs(freq - mix.weights)) < 0.03
    # children of a node are closer to each other than to any cluster outside it
    centers = np.array([t.nodes[n]["center"] for n in leaf_nodes])
    d = np.linalg.norm(centers[:, None] - centers[None], axis=-1)
    assert d[np.triu_indices(len(centers), 1)].min() > 4 * mix.sigma


def test_user_files_round_trip(tmp_path, rng):
    x = rng.normal(size=(50, 3))
    y = rng.integers(0, 2, 50)
    np.save(tmp_path / "a.npy", x)
    np.savez(tmp_path / "b.npz", x=x, y=y)
    (tmp_path / "c.csv").write_text("f1,f2,f3,label\n" + "\n".join(
        ",".join(map(str, [*r, lab])) for r, lab in zip(x, y, strict=True)))
    for f in ["a.npy", "b.npz", "c.csv"]:
        ds = load_dataset(str(tmp_path / f), standardize=False, test_fraction=0.2)
        assert ds.x_train.shape[0] + ds.x_test.shape[0] == 50 and ds.dim == 3
        back = np.sort(np.concatenate([ds.x_train, ds.x_test])[:, 0])
        assert np.allclose(back, np.sort(x[:, 0]), atol=1e-5)
    assert load_dataset(str(tmp_path / "c.csv")).y_train is not None


@pytest.mark.parametrize(
    "content, message",
    [
        ("nan", "NaN"),
        ("words", "non-numeric"),
        ("few", "too few rows"),
        ("shape", "2-D"),
        ("missing", "no such file"),
        ("npzkey", "named 'x'"),
    ],
)
def test_bad_files_give_clear_errors(tmp_path, content, message):
    path = tmp_path / "data.npy"
    if content == "nan":
        a = np.ones((10, 2))
        a[3, 1] = np.nan
        np.save(path, a)
    elif content == "words":
        path = tmp_path / "data.csv"
        path.write_text("1,2\n3,x\n")
    elif content == "few":
        np.save(path, np.ones((2, 2)))
    elif content == "shape":
        np.save(path, np.ones((4, 2, 2)))
    elif content == "npzkey":
        path = tmp_path / "data.npz"
        np.savez(path, z=np.ones((10, 2)))
    with pytest.raises(InputError, match=message) as info:
        load_dataset(str(path))
    assert str(path) in str(info.value)


def test_unknown_dataset_and_option_list_valid_choices():
    with pytest.raises(InputError, match="valid: hierarchical"):
        load_dataset("imagenet")
    with pytest.raises(InputError, match=r"unknown option.*bogus.*valid"):
        load_dataset("hierarchical", bogus=1)


def _write_idx(path, arr, gz):
    code = {np.uint8: 0x08}[arr.dtype.type]
    head = bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">i", d) for d in arr.shape)
    data = head + arr.tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_reader_and_mnist_loader(tmp_path, rng, gz):
    imgs = rng.integers(0, 256, size=(12, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=12).astype(np.uint8)
    sfx = ".gz" if gz else ""
    _write_idx(tmp_path / f"train-images-idx3-ubyte{sfx}", imgs, gz)
    _write_idx(tmp_path / f"train-labels-idx1-ubyte{sfx}", labels, gz)
    _write_idx(tmp_path / f"t10k-images-idx3-ubyte{sfx}", imgs[:4], gz)
    _write_idx(tmp_path / f"t10k-labels-idx1-ubyte{sfx}", labels[:4], gz)
    assert np.array_equal(read_idx(tmp_path / f"train-images-idx3-ubyte{sfx}"), imgs)
    ds = load_dataset("mnist", path=str(tmp_path))
    assert ds.dim == 784 and len(ds.x_train) + len(ds.x_test) == 16
    assert ds.x_train.max() <= 1.0


def test_mnist_missing_files_say_where_to_put_them(tmp_path):
    with pytest.raises(InputError, match=f"not found in {tmp_path}.*never downloads"):
        load_dataset("mnist", path=str(tmp_path))
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x01\x02junk")
    with pytest.raises(InputError, match="bad magic"):
        read_idx(tmp_path / "train-images-idx3-ubyte")


def test_warped_pair_target_density_is_the_exact_pushforward():
    from flowtopo.data import warped_pair

    p = warped_pair([[2, 1], 1], 3, seed=2, warp=0.3, n=500, n_test=20)
    u, eps = p.test_source, 1e-6
    for i in range(5):
        jac = np.stack([(p.true_map(u[i:i + 1] + eps * e) - p.true_map(u[i:i + 1] - eps * e))[0]
                        / (2 * eps) for e in np.eye(3)], axis=1)
        expected = p.source_log_prob(u[i:i + 1])[0] - np.log(abs(np.linalg.det(jac)))
        assert p.target_log_prob(p.true_map(u[i:i + 1]))[0] == pytest.approx(expected, abs=1e-6)
    assert np.allclose(p.test_target, p.true_map(p.test_source))
    assert p.source.shape == p.target.shape == (500, 3)


def _idx_bytes(code, dims, body=b""):
    return bytes([0, 0, code, len(dims)]) + b"".join(struct.pack(">i", d) for d in dims) + body


# malformed inputs of the data layer: each is one InputError naming what is wrong
MALFORMED_IDX = {
    "ndim-255": (bytes([0, 0, 0x08, 255]) + b"\x00" * 16, "declares 255 dimensions"),
    "negative-dim": (_idx_bytes(0x08, (3, -2)), "non-positive size"),
    "cut-header": (bytes([0, 0, 0x08, 3]) + b"\x00\x00", "header cut short"),
    "too-short": (_idx_bytes(0x08, (2, 3), b"\x00" * 5), "header says 6 bytes of data, found 5"),
    "too-long": (_idx_bytes(0x08, (2, 3), b"\x00" * 7), "header says 6 bytes of data, found more"),
    # 100 GB declared by a file of a few hundred bytes: refused before anything is allocated
    "gzip-bomb": (gzip.compress(_idx_bytes(0x08, (100000, 1000, 1000), b"\x00" * 300000)),
                  "declares 100000000000 bytes"),
    "bad-gzip": (b"\x1f\x8b" + b"garbage" * 10, "cannot read"),
}


@pytest.mark.parametrize("case", list(MALFORMED_IDX))
def test_a_malformed_idx_file_is_one_clear_error(tmp_path, case):
    import tracemalloc

    raw, message = MALFORMED_IDX[case]
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(raw)
    tracemalloc.start()
    with pytest.raises(InputError, match=message):
        read_idx(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 50 * 2**20  # never the declared size


@pytest.mark.parametrize("options,message", [
    ({"n": -5}, "option n=-5 must be an integer >= 1"),
    ({"dim": "six"}, "option dim='six' must be of type int"),
    ({"n": 2.5}, "option n=2.5 must be of type int"),
    ({"sigma": float("nan")}, "option sigma=nan must be a finite number >= 0"),
    ({"test_fraction": 1.5}, r"option test_fraction=1.5 must be between 0 and 1"),
    ({"shape": [[1, "x"]]}, "option shape=.* must be nested lists"),
    ({"shape": [[1, -2]]}, "option shape=.* must be nested lists"),
    ({"standardize": "no"}, "option standardize='no' must be of type bool"),
])
def test_bad_dataset_option_values_are_one_clear_error(options, message):
    with pytest.raises(InputError, match=f"dataset 'hierarchical': {message}"):
        load_dataset("hierarchical", **options)


def test_good_dataset_options_still_load():
    ds = load_dataset("hierarchical", n=300, dim=4, shape=[[1, 2], [1, 1]], sigma=0.4)
    assert ds.dim == 4 and len(ds.x_train) + len(ds.x_test) == 300


@pytest.mark.parametrize("make,message", [
    (lambda: {"x": np.ones((50, 3), dtype=complex)}, "values are complex"),
    (lambda: {"x": np.random.default_rng(0).normal(size=(60, 3)),
              "y": np.random.default_rng(1).normal(size=60)}, "fractional values"),
    (lambda: {"x": np.zeros((60, 3)), "y": np.r_[np.zeros(59), np.nan]}, "1 NaN/inf labels"),
    (lambda: {"x": np.zeros((60, 3)), "y": np.array(["a"] * 60)}, "integer classes, got dtype"),
])
def test_user_files_with_complex_data_or_non_class_labels_are_refused(tmp_path, make, message):
    path = tmp_path / "data.npz"
    np.savez(path, **make())
    with pytest.raises(InputError, match=message):
        load_dataset(str(path))


def test_whole_number_float_labels_are_classes(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, x=np.random.default_rng(0).normal(size=(60, 3)),
             y=np.tile([0.0, 1.0, 2.0], 20))
    ds = load_dataset(str(path))
    assert ds.y_train.dtype == np.int64 and set(ds.y_train) <= {0, 1, 2}


def test_numpy_scalars_are_accepted_as_the_numbers_they_hold():
    ds = load_dataset("hierarchical", n=np.int64(200), sigma=np.float32(0.3))
    assert len(ds.x_train) + len(ds.x_test) == 200


@pytest.mark.parametrize("k", [1, 2, 5])
def test_mixture_log_prob_is_the_mixture_density_near_and_far(k):
    """log_prob expands |u - m|² and writes out the log-sum-exp (3.5x faster: the matching
    polish calls it ~300 times an alignment); it must stay the mixture's log density, also far
    out where every component underflows."""
    from scipy.special import logsumexp
    from scipy.stats import multivariate_normal

    mix = HierarchicalMixture.build([[3, 1], [2, [1, 1]], [1, [2, 1]]], k=k, seed=k)
    rng = np.random.default_rng(k)
    u = np.concatenate([mix.sample(500, rng)[0], 40.0 * rng.normal(size=(50, k))])
    comps = np.stack([multivariate_normal(m, mix.sigma**2 * np.eye(k)).logpdf(u).reshape(-1)
                      for m in mix.means], 1)
    want = logsumexp(comps + np.log(mix.weights), axis=1)
    got = mix.log_prob(u)
    assert np.all(np.isfinite(got)) and got.shape == (550,)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-8)
