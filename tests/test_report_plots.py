"""The report's pictures say what a researcher reads them for (issue 16, item 8)."""

import math

import numpy as np
import pytest

from flowtopo.pipeline.report_plots import PANELS, families_figure, loss_curves_figure


def histories():
    steps = range(1, 21)
    out = []
    for fam, scale in (("gmm", 1.0), ("gaussian", 2.0)):
        out.append({"family": fam, "best_epoch": 12, "metrics": {
            "adv_g_loss": [(e, scale * 0.8 + 1 / e) for e in steps],
            "val_adv_loss": [(e, scale * 0.8 + 1.2 / e) for e in steps],
            "adv_d_loss": [(e, 0.6) for e in steps],
            "val_disc_loss": [(e, 0.62) for e in steps],
            "val_nll": [(e, 3.0 - 0.05 * e) for e in steps],
            "train_recon": [(e, 10.0 ** (1 - 0.2 * e)) for e in steps],  # 10 -> 1e-3
            "val_recon": [(e, 1.1 * 10.0 ** (1 - 0.2 * e)) for e in steps],
            "val_c2st": [(e, 0.9 - 0.015 * e) for e in steps]}})
    return out


def panel(fig, title):
    return next(ax for ax in fig.axes if ax.get_title() == title)


def test_training_curves_show_train_and_validation_references_best_epochs_and_log_axes():
    fig = loss_curves_figure(histories())
    assert [ax.get_title() for ax in fig.axes] == [p[0] for p in PANELS]
    adv = panel(fig, "adversarial loss -log D(z)")
    styles = {line.get_linestyle() for line in adv.lines if len(line.get_xdata()) > 1}
    assert {"-", "--"} <= styles  # train solid, validation dashed
    refs = [line for line in adv.lines if set(np.atleast_1d(line.get_ydata())) == {math.log(2)}]
    assert refs, "no reference line at log 2"
    c2st = panel(fig, "two-sample accuracy")
    assert any(set(np.atleast_1d(line.get_ydata())) == {0.5} for line in c2st.lines)
    # one best-epoch dot per run on the validation curve, at epoch 12
    dots = [x for line in adv.lines if line.get_marker() == "o" for x in line.get_xdata()]
    assert dots == [12, 12]
    # recon spans four decades: log axis; the NLL does not
    assert panel(fig, "reconstruction MSE").get_yscale() == "log"
    assert panel(fig, "NLL (nats/dim)").get_yscale() == "linear"
    for ax in fig.axes:  # a legend on every panel: families, train/validation, references
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert {"gmm", "gaussian", "validation", "best epoch"} <= set(labels)
    assert "log 2: the discriminator cannot tell" in [
        t.get_text() for t in adv.get_legend().get_texts()]


def test_the_curves_are_one_line_per_family_and_style_broken_between_runs():
    """Before: one artist per run and curve, and the legend's "best" place tested each of
    them (2 s of the report's 10 s at 60 runs); every run is still drawn, and its dot."""
    runs = histories() + [dict(h, best_epoch=5) for h in histories()]  # 2 runs per family
    adv = panel(loss_curves_figure(runs), "adversarial loss -log D(z)")
    curves = [line for line in adv.lines if line.get_marker() in ("None", "", None)
              and len(line.get_xdata()) > 1 and len(set(line.get_ydata())) > 1]
    assert sorted((line.get_color(), line.get_linestyle()) for line in curves) == sorted(
        {(line.get_color(), line.get_linestyle()) for line in curves})  # one per pair
    assert len(curves) == 4  # 2 families x (train, validation)
    for line in curves:  # two runs each, apart by one NaN
        y = np.asarray(line.get_ydata(), float)
        assert np.isnan(y).sum() == 1 and len(y) == 2 * 20 + 1
    dots = [line for line in adv.lines if line.get_marker() == "o"]
    xs = sorted(x for d in dots for x in d.get_xdata())
    assert xs == [5, 5, 12, 12]  # each run's best epoch


def test_the_family_comparison_has_legends_and_reference_lines():
    rows = [{"group": g, "best_adv_loss": v, "best_nll": 2.0 + v, "best_c2st": 0.5 + v / 10}
            for g, v in (("gmm", 0.7), ("gmm", 0.75), ("torus", 0.9))]
    fig = families_figure(rows)
    for ax in fig.axes:
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert {"gmm", "torus"} <= set(labels)
    c2st = fig.axes[2]
    assert any(set(np.atleast_1d(line.get_ydata())) == {0.5} for line in c2st.lines)


def test_the_same_label_has_the_same_colour_in_two_models_trees():
    from flowtopo.topology import density_tree
    from flowtopo.topology.plot import label_colours

    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])

    def model(sizes, shift):  # another model: other masses, other places, other leaf order
        y = np.concatenate([np.full(n, c) for c, n in enumerate(sizes)])
        x = centres[y] @ np.array([[0.0, 1.0], [-1.0, 0.0]]) * shift + rng.normal(size=(len(y), 2))
        return density_tree(x), y

    (t1, y1), (t2, y2) = model([300, 200, 100], 1.0), model([100, 200, 300], 1.5)
    assert len(t1.leaves()) == len(t2.leaves()) == 3
    c1, c2 = label_colours(t1, y1), label_colours(t2, y2)

    def by_class(tree, y, colours):
        return {int(np.bincount(y[leaf.members]).argmax()): colours[leaf.id]
                for leaf in tree.leaves()}

    assert by_class(t1, y1, c1) == by_class(t2, y2, c2)
    assert len(set(c1.values())) == 3
    # the default (mass order) would not agree: the largest mode is another class there
    from flowtopo.topology.plot import leaf_colours

    assert by_class(t1, y1, leaf_colours(t1)) != by_class(t2, y2, leaf_colours(t2))


@pytest.mark.parametrize("labels", [None, np.array([0, 1, 2] * 20)])
def test_latent_scatters_have_a_legend(labels):
    from flowtopo.plotting import new_figure, scatter

    _, (ax,) = new_figure(1)
    scatter(ax, np.random.default_rng(0).normal(size=(60, 3)), labels, title="latents")
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts == (["points"] if labels is None else ["label 0", "label 1", "label 2"])


def test_curves_fetched_at_once_stay_with_their_own_run():
    """The report fetches the metric histories on threads (benchmarks/sweep.py): whatever order
    the answers come back in, each run's curves are its own, in the runs' order."""
    import random
    import time
    from types import SimpleNamespace as NS

    from flowtopo.pipeline.report import _histories

    class Client:
        def get_metric_history(self, run_id, key):
            time.sleep(random.Random(f"{run_id}{key}").uniform(0, 0.01))  # answers out of order
            return [NS(step=e, value=float(f"{run_id[1:]}.{e}")) for e in (1, 2)] if (
                key == "val_nll") else []

    runs = [NS(info=NS(run_id=f"r{i}"), data=NS(tags={"family": f"f{i}"},
                                                  metrics={"best_epoch": i})) for i in range(30)]
    got = _histories(Client(), runs, ("val_nll", "val_c2st"))
    assert [h["family"] for h in got] == [f"f{i}" for i in range(30)]
    assert [h["best_epoch"] for h in got] == list(range(30))
    assert all(h["metrics"] == {"val_nll": [(1, float(f"{i}.1")), (2, float(f"{i}.2"))],
                                "val_c2st": []} for i, h in enumerate(got))


def test_past_its_limit_the_report_draws_each_familys_best_curves_not_the_newest():
    """Before: the first 60 runs MLflow returned (the newest), whatever their fit."""
    from types import SimpleNamespace as NS

    from flowtopo.pipeline.best import rank_runs
    from flowtopo.pipeline.report import _curve_runs

    def run(i, fam, loss, status="FINISHED"):
        return NS(info=NS(run_id=f"r{i}", status=status), data=NS(
            tags={"family": fam}, params={}, metrics={"best_adv_loss": loss}))

    # newest first, as MLflow returns them; the newest are the worst of each family
    runs = [run(i, ("gmm", "torus")[i % 2], 1.0 - i / 100) for i in range(20)]
    runs.insert(0, run(99, "gmm", 0.0, status="FAILED"))
    ranked = rank_runs(runs, top=len(runs))
    everything, per = _curve_runs(runs, ranked, most=len(runs))
    assert everything == runs and per is None  # at most the limit: every run, failed too
    got, per = _curve_runs(runs, ranked, most=6)
    assert per == 3
    assert [r.info.run_id for r in got] == ["r19", "r17", "r15", "r18", "r16", "r14"]
