import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from flowtopo.cli import app


@pytest.mark.slow
def test_make_demo_command_runs_with_a_reduced_budget(tmp_path):
    """`make demo` runs `flowtopo demo`; --quick is the same job on a tiny budget."""
    res = CliRunner().invoke(app, ["demo", "--quick", "--out", str(tmp_path / "demo"),
                                   "--families", "gmm,flow_prior"], terminal_width=200)
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert {r["family"] for r in summary["ranking"]} == {"gmm", "flow_prior"}
    assert len(summary["runs"]) == 4  # 2 families x 2 seeds
    assert summary["best_family"] == summary["ranking"][0]["family"]
    assert "oracle" in summary["scores"] and "headline:" in res.output
    for fam in ("gmm", "flow_prior"):
        for seed in (0, 1):
            assert (tmp_path / "demo" / "models" / f"{fam}-s{seed}" / "model.pt").is_file()


def test_makefile_demo_target_calls_flowtopo_demo():
    text = open("Makefile").read()
    assert "$(BIN)/flowtopo demo" in text


def test_demo_rejects_an_unknown_family():
    res = subprocess.run([sys.executable, "-m", "flowtopo.cli", "demo", "--families", "gmm,nope"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "unknown prior family 'nope'" in res.stderr
