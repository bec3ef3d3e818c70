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
