"""The package as a user installs it: one version, a license, type information, lazy names."""

import importlib.metadata
import subprocess
import sys
import zipfile
from pathlib import Path

import flowtopo


def test_the_version_is_written_once_and_installed_metadata_agrees():
    assert importlib.metadata.version("flowtopo") == flowtopo.__version__
    text = Path("pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in text and flowtopo.__version__ not in text


def test_lazy_top_level_names_are_visible_to_dir():
    assert set(flowtopo.__all__) <= set(dir(flowtopo))
    assert flowtopo.align is flowtopo.__getattr__("align")


def test_the_wheel_carries_license_types_and_version(tmp_path):
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                          "--no-build-isolation", "-q", "-w", str(tmp_path), "."],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "license" not in res.stderr.lower()  # no deprecation warning about the license
    (wheel,) = tmp_path.glob("flowtopo-*.whl")
    assert wheel.name.startswith(f"flowtopo-{flowtopo.__version__}-")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "flowtopo/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "License-Expression: MIT" in meta


def test_flowtopo_version_prints_the_version_and_the_root_help_has_no_markup():
    from typer.testing import CliRunner

    from flowtopo.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"flowtopo {flowtopo.__version__}"
    root = runner.invoke(app, ["--help"], terminal_width=200)
    assert root.exit_code == 0 and "``" not in root.output and "--version" in root.output
