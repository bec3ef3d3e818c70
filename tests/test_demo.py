import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from flowtopo.cli import app


@pytest.mark.slow
@pytest.mark.integration
def test_make_demo_command_runs_with_a_reduced_budget(tmp_path):
    """`make demo` runs `flowtopo demo`; --quick is the same job on a tiny budget.

    The demo goes through the real engines: a sweep on local Ray + Optuna recorded in sqlite
    MLflow, best priors from MLflow, `match` as Ray tasks, the HTML report.
    """
    import mlflow

    res = CliRunner().invoke(app, ["demo", "--quick", "--out", str(tmp_path / "demo"),
                                   "--families", "gmm,flow_prior"], terminal_width=200)
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert {r["family"] for r in summary["ranking"]} == {"gmm", "flow_prior"}
    assert all(r["runs"] == 2 for r in summary["ranking"])  # 2 seeds per family
    assert summary["trials"] == 4 and summary["failed"] == 0
    assert summary["best_family"] == summary["ranking"][0]["family"]
    assert "oracle" in summary["scores"] and "headline:" in res.output
    headline = next(line for line in res.output.splitlines() if "headline:" in line)
    assert ("FLAGGED" in headline) == bool(summary["tree"].get("poor_fit"))
    client = mlflow.MlflowClient(summary["tracking_uri"])
    exp = client.get_experiment_by_name("demo")
    kinds = [r.data.tags.get("flowtopo.kind") for r in client.search_runs([exp.experiment_id])]
    assert kinds.count("trial") == 4 and kinds.count("sweep") == 1
    assert kinds.count("match") == 1 and kinds.count("match-pair") == 2
    assert (tmp_path / "demo" / "report" / "index.html").is_file()
    assert json.loads((tmp_path / "demo" / "match.json").read_text())["runs"]


def test_makefile_demo_target_calls_flowtopo_demo():
    text = open("Makefile").read()
    assert "$(BIN)/flowtopo demo" in text


def test_demo_rejects_an_unknown_family():
    res = subprocess.run([sys.executable, "-m", "flowtopo.cli", "demo", "--families", "gmm,nope"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "unknown prior family 'nope'" in res.stderr


@pytest.mark.parametrize("poor", [True, False])
def test_the_demo_headline_says_what_the_fit_check_says(poor):
    from flowtopo.cli import demo_headline
    from flowtopo.pipeline.demo import TreeOutcome

    scores = {"tree": {"r2": 0.982}, "oracle": {"r2": 0.982}}
    line = demo_headline(scores, TreeOutcome(
        poor_fit=poor, fit_reason="fit KL 0.84 nats > 0.25" if poor else None))
    assert "R² 0.982" in line
    if poor:
        assert "FLAGGED" in line and "fit KL 0.84 nats > 0.25" in line
        assert line.index("FLAGGED") < line.index("R²")  # the flag comes before the scores
    else:
        assert "FLAGGED" not in line and "fit checks pass" in line
    failed = demo_headline({}, TreeOutcome(error="not identifiable"))
    assert "failed" in failed and "not identifiable" in failed


def test_the_demo_summary_is_typed_and_its_json_reads_back():
    """Issue 17 item 8: run_demo returns a DemoSummary; summary.json is its JSON form."""
    from flowtopo.pipeline.demo import DemoSummary, FamilyRank, TreeOutcome

    summary = DemoSummary(
        ranking=[FamilyRank(family="gmm", runs=2, adv_loss=0.69, nll=1.2, c2st=0.52)],
        best_family="gmm", scores={"tree": {"r2": 0.9}}, tree=TreeOutcome(poor_fit=True),
        sweep_id="s", trials=4, failed=0, tracking_uri="sqlite:///x", report="r", seconds=1.0,
        out="o")
    back = DemoSummary.model_validate(json.loads(json.dumps(summary.to_json())))
    assert back == summary and back.ranking[0].adv_loss == 0.69
    with pytest.raises(ValueError, match="extra"):
        DemoSummary.model_validate({**summary.to_json(), "unexpected": 1})
