import subprocess
import sys

import pytest
from typer.testing import CliRunner

from flowtopo.cli import app

runner = CliRunner()


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flowtopo.cli", *args], capture_output=True,
                          text=True, timeout=120)


def test_data_list_shows_every_dataset():
    from flowtopo.data import DATASETS

    res = runner.invoke(app, ["data", "list"], terminal_width=200)
    assert res.exit_code == 0
    for name in DATASETS:
        assert name in res.output


def test_data_show_writes_a_png(tmp_path):
    out = tmp_path / "pic.png"
    res = runner.invoke(app, ["data", "show", "hierarchical", "-o", "n=600", "--plot", str(out)],
                        terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "exact test NLL" in res.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000


def test_user_error_is_one_line_exit_2():
    res = run_cli("data", "show", "no-such-dataset")
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "unknown dataset" in res.stderr


def test_bad_option_value_is_exit_2(tmp_path):
    res = run_cli("data", "show", "hierarchical", "-o", "k=9")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip() == "error: hierarchical: need 1 <= k <= dim, got k=9, dim=6"


def test_help_imports_neither_torch_nor_ray():
    code = ("import sys; from flowtopo.cli import app; from typer.testing import CliRunner; "
            "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0; "
            "print(sorted(m for m in ('torch', 'ray', 'mlflow') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "[]"


def test_error_text_is_printed_literally_not_as_rich_markup(tmp_path):
    path = tmp_path / "[bold]x[/bold]" / "data.npy"
    res = runner.invoke(app, ["data", "show", str(path)])
    assert res.exit_code == 2
    assert str(path) in res.output and res.output.startswith("error: ")


@pytest.mark.parametrize("args,message", [
    (["-o", "n=-5"], "error: dataset 'hierarchical': option n=-5 must be an integer >= 1"),
    (["-o", "dim=six"], "error: dataset 'hierarchical': option dim='six' must be of type int"),
])
def test_bad_option_values_that_were_tracebacks_are_one_line_exit_2(args, message):
    res = CliRunner().invoke(app, ["data", "show", "hierarchical", *args])
    assert res.exit_code == 2 and res.stderr.strip() == message


def test_piped_tables_keep_each_row_on_one_line():
    """Not a terminal (captured here): rich's default width of 80 wrapped descriptions, ids and
    paths mid-word; without COLUMNS the tables now take the room they need."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    res = subprocess.run([sys.executable, "-m", "flowtopo.cli", "data", "list"],
                         capture_output=True, text=True, timeout=120, env=env)
    row = next(ln for ln in res.stdout.splitlines() if "hierarchical" in ln)
    assert "noise in dim-k dims, rotated and warped." in row
