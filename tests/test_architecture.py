"""The layering rule of STYLE.md, checked on the source: a module never imports a higher layer."""

import ast
from pathlib import Path

import pytest

import flowtopo

ROOT = Path(flowtopo.__file__).parent

# data -> flows/priors/model -> topology -> matching/metrics -> sweep/pipeline -> CLI
LAYERS = {
    "errors": 0, "plotting": 0, "_version": 0,
    "data": 1,
    "flows": 2, "priors": 2, "model": 2, "regularizers": 2, "train": 2, "checkpoint": 2,
    "train_config": 1, "train_spec": 1, "yaml_io": 1,
    "prior_fit": 2, "representations": 2,
    "topology": 3,
    "matching": 4, "paired_scores": 4,
    "runtime": 5, "train_job": 5, "model_alignment": 5, "translate": 5, "tracking": 5,
    "mlflow_auth": 5, "sweep": 5,
    "pipeline": 5,
    "cli": 6,
}
NUMPY_ONLY = ("topology", "matching", "paired_scores", "data")  # usable without torch, Ray, MLflow
HEAVY = ("torch", "ray", "mlflow", "optuna")


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "flowtopo":
        return None
    return 6 if len(parts) == 1 else LAYERS[parts[1]]


def _imports(path: Path) -> list[str]:
    """Every module ``path`` imports, at module level or inside functions."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
        elif isinstance(node, ast.Import):
            out += [alias.name for alias in node.names]
    return out


SOURCES = sorted(ROOT.rglob("*.py"))


def test_every_package_module_has_a_layer():
    assert {_module(p).split(".")[1] for p in SOURCES if _module(p) != "flowtopo"} <= set(LAYERS)


@pytest.mark.parametrize("path", SOURCES, ids=[_module(p) for p in SOURCES])
def test_no_module_imports_a_higher_layer(path):
    own = _layer(_module(path))
    higher = [m for m in _imports(path) if (_layer(m) or 0) > own]
    assert not higher, f"{_module(path)} (layer {own}) imports {higher}"


@pytest.mark.parametrize("path", [p for p in SOURCES if _module(p).split(".")[1:2] and
                                  _module(p).split(".")[1] in NUMPY_ONLY],
                         ids=lambda p: _module(p))
def test_data_topology_and_matching_import_no_deep_learning_or_cluster_engine(path):
    heavy = [m for m in _imports(path) if m.split(".")[0] in HEAVY]
    assert not heavy, f"{_module(path)} imports {heavy}"


def test_the_checker_sees_function_level_imports(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("import numpy\n\ndef f():\n    from flowtopo.cli import app\n    import torch\n")
    assert _imports(src) == ["numpy", "flowtopo.cli", "torch"]


def _fresh_python(code: str) -> str:
    """What ``code`` prints in a new interpreter (nothing imported before it)."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True).stdout.strip()


def test_the_spec_modules_load_without_torch():
    """A sweep or train YAML is validated without loading torch (it took 3.5 s through
    specs.py importing the model and the training loop)."""
    assert _fresh_python(
        "import sys, flowtopo.train_spec, flowtopo.yaml_io, flowtopo.sweep.spec, "
        "flowtopo.train_config; "
        "print(sorted(m for m in ('torch', 'ray', 'mlflow') if m in sys.modules))") == "[]"


def test_ranking_runs_and_the_data_layer_load_neither_torch_nor_scipy_stats():
    """`priors best` ranks runs without torch (rank_key imported the training job: torch and
    the data layer, 2.1 s), and the data layer imports scipy.stats (0.7 s) only to draw a
    rotation."""
    assert _fresh_python(
        "import sys, flowtopo.data, flowtopo.pipeline.best as b; "
        "assert b.rank_key('val_c2st', 0.4) == b.rank_key('val_c2st', 0.6); "
        "print(sorted(m for m in ('torch', 'scipy.stats') if m in sys.modules))") == "[]"
    # a generator that rotates still draws its rotation
    assert _fresh_python(
        "import sys, flowtopo.data as d; d.load_dataset('hierarchical', n=200, seed=0); "
        "print('scipy.stats' in sys.modules)") == "True"


def test_the_cli_choices_are_the_registries():
    """The CLI lists its choices statically (it imports no engine); they are the registries'."""
    from typing import get_args

    from flowtopo import cli
    from flowtopo.matching import METHODS, TRANSFORMS
    from flowtopo.pipeline.best import BY
    from flowtopo.pipeline.hub import STRATEGIES
    from flowtopo.train_config import REGULARIZERS
    from flowtopo.translate import TranslateConfig

    assert set(get_args(cli.Method)) == {m for m, fn in METHODS.items() if not fn.supervised}
    assert set(get_args(cli.Transform)) == set(TRANSFORMS)
    assert set(get_args(cli.RegularizerChoice)) == set(REGULARIZERS)
    assert get_args(cli.GroupBy) == BY and get_args(cli.Strategy) == STRATEGIES
    assert get_args(cli.Encoder) == get_args(TranslateConfig.model_fields["encoder"].annotation)
    assert get_args(cli.Density) == get_args(TranslateConfig.model_fields["density"].annotation)
