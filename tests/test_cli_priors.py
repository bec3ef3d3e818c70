import pytest
from typer.testing import CliRunner

from flowtopo.cli import app

runner = CliRunner()


@pytest.mark.parametrize("family,k", [("superposition", 2), ("torus", 3), ("sphere", 1)])
def test_priors_plot_writes_png(tmp_path, family, k):
    out = tmp_path / f"{family}.png"
    res = runner.invoke(app, ["priors", "plot", family, "--k", str(k), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert out.read_bytes()[:4] == b"\x89PNG" and out.stat().st_size > 5000


def test_priors_list_names_every_family():
    from flowtopo.priors import PRIORS

    res = runner.invoke(app, ["priors", "list"], terminal_width=200)
    assert res.exit_code == 0 and all(name in res.output for name in PRIORS)


def test_priors_best_ranks_two_sample_accuracy_by_its_distance_from_chance(tmp_path):
    """A c2st accuracy of 0.45 is as far from chance as 0.55: ranking the raw value rewarded
    accuracies below 0.5 (0.30 ranked first)."""
    from flowtopo.pipeline.best import best_priors, rank_families
    from flowtopo.tracking import ensure_experiment, mlflow_client

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client, exp = mlflow_client(uri), ensure_experiment(uri, "c2st")
    for family, acc in (("a", 0.45), ("b", 0.52), ("c", 0.30), ("d", 0.75)):
        run = client.create_run(exp, tags={"flowtopo.kind": "trial", "family": family})
        client.log_metric(run.info.run_id, "best_c2st", acc)
        client.log_metric(run.info.run_id, "best_nll", acc)
        client.set_terminated(run.info.run_id, "FINISHED")
    rows = best_priors("c2st", tracking_uri=uri, metric="best_c2st", top=1)
    assert [r["family"] for r in rows] == ["b", "a", "c", "d"]
    assert [r["family"] for r in best_priors("c2st", tracking_uri=uri, metric="best_nll",
                                             top=1)] == ["c", "a", "b", "d"]
    assert [f["group"] for f in rank_families(rows, "best_c2st")][:2] == ["b", "a"]
    res = runner.invoke(app, ["priors", "best", "--experiment", "c2st", "--tracking-uri", uri,
                              "--metric", "best_c2st", "--top", "1"], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert res.output.index(" b ") < res.output.index(" a ") < res.output.index(" c ")


def test_the_best_c2st_of_a_run_is_its_epoch_closest_to_chance():
    from flowtopo.train_job import best_over_epochs

    history = [{"val_c2st": 0.7}, {"val_c2st": 0.48}, {"val_c2st": 0.55}, {"val_c2st": 0.3}]
    assert best_over_epochs(history)["best_c2st"] == 0.48


def test_report_out_on_an_existing_file_is_one_line_exit_2(tmp_path):
    """It was a traceback (mkdir under a file), after all the MLflow queries."""
    target = tmp_path / "report.html"
    target.write_text("keep me")
    res = runner.invoke(app, ["report", "--experiment", "x", "--out", str(target),
                              "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}"])
    assert res.exit_code == 2 and "is a file; give a folder" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and target.read_text() == "keep me"


def test_the_console_script_leaves_what_is_alive_at_exit_to_the_os(monkeypatch):
    """The interpreter's last collections (~0.5-1.4 s after an MLflow query, the answer
    already printed) are skipped, whatever the command's outcome; its exit code stands."""
    import gc

    from flowtopo import cli

    def bad_input():
        raise SystemExit(2)

    monkeypatch.setattr(cli, "app", bad_input)
    monkeypatch.setenv("COLUMNS", "100")  # main() leaves the shared console's width alone
    gc.unfreeze()
    try:
        with pytest.raises(SystemExit) as got:
            cli.main()
        assert got.value.code == 2 and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
