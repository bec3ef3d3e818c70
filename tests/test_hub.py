"""Matching many models through a hub: composition, its refusals (issue 18, item 2)."""

import numpy as np
import pytest

from flowtopo.errors import InputError
from flowtopo.pipeline.hub import STRATEGIES, check_strategy, compose_through_hub


def models(n=4, k=3, seed=0):
    """Latents of n models related to the hub's by known affine maps; their legs to the hub."""
    rng = np.random.default_rng(seed)
    h = rng.normal(size=(200, k))
    z = {"hub": h}
    legs = {}
    for i in range(1, n):
        p, q = rng.normal(size=(k, k)) + 2 * np.eye(k), rng.normal(size=k)
        z[f"m{i}"] = h @ p.T + q
        inv = np.linalg.inv(p)  # the exact map m_i -> hub
        legs[f"m{i}"] = (inv, -inv @ q)
    return z, legs


def test_every_pair_is_composed_through_the_hub_and_maps_exactly_when_the_legs_are_exact():
    z, legs = models()
    composed = compose_through_hub(legs, "hub")
    names = list(z)
    expected = {(a, b) for a in names for b in names if a != b and b != "hub"}
    assert set(composed) == expected  # n (n - 1) - (n - 1) pairs from n - 1 alignments
    for (a, b), cm in composed.items():
        assert np.allclose(cm.transform(z[a]), z[b]), (a, b)
        assert cm.via == "hub" and len(cm.legs) == (1 if a == "hub" else 2)


def test_composition_carries_a_legs_error_into_the_pair_instead_of_guessing():
    z, legs = models()
    legs["m2"] = (np.zeros((3, 3)), np.zeros(3))  # a collapsed map cannot be inverted
    composed = compose_through_hub(legs, "hub")
    bad = {pair: cm for pair, cm in composed.items() if isinstance(cm, InputError)}
    assert set(bad) == {(a, "m2") for a in ("hub", "m1", "m3")} | {("m2", "m1"), ("m2", "m3")}
    assert all("m2 -> hub: the map is singular" in str(e) for e in bad.values())
    assert np.allclose(composed[("m1", "m3")].transform(z["m1"]), z["m3"])  # the rest stands
    legs["m2"] = (np.ones((2, 3)), np.zeros(2))
    with pytest.raises(InputError, match="2x3 map has no inverse"):
        raise next(cm for cm in compose_through_hub(legs, "hub").values()
                   if isinstance(cm, InputError))


@pytest.mark.parametrize(("strategy", "transform", "cross", "message"), [
    ("star", "affine", False, "unknown strategy 'star'; valid: all-pairs, hub"),
    ("hub", "piecewise", False, "needs --transform affine"),
    ("hub", "affine", True, "--source/--target is a single pair"),
])
def test_strategies_the_options_cannot_support_are_one_line(strategy, transform, cross,
                                                            message):
    with pytest.raises(InputError, match=message):
        check_strategy(strategy, transform, cross)
    assert "all-pairs" in STRATEGIES
    check_strategy("all-pairs", "piecewise", True)  # all-pairs takes every option
