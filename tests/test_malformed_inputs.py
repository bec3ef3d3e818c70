"""A corpus of malformed inputs, run through every CLI entry point that reads a file.

Each (entry point, malformed file) pair must end in exit code 2 and ONE line on stderr, no
traceback, and write nothing where the command would have written its output.
"""

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from flowtopo.cli import app

runner = CliRunner()


def _npy(arr):
    import io

    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


ARRAYS = {  # name -> (file name, bytes)
    "empty-file": ("empty.npy", b""),
    "garbage": ("garbage.npy", b"\x00\xff this is not an array\n" * 3),
    "no-rows": ("norows.npy", _npy(np.zeros((0, 4)))),
    "nan": ("nan.npy", _npy(np.r_[np.zeros((59, 4)), np.full((1, 4), np.nan)])),
    "complex": ("complex.npy", _npy(np.ones((60, 4), dtype=complex))),
    "three-dims": ("cube.npy", _npy(np.zeros((60, 4, 4)))),
    "strings": ("strings.npy", _npy(np.array([["a", "b"]] * 60))),
    "csv-text": ("text.csv", b"a,b\n1,x\n2,3\n"),
    "csv-ragged": ("ragged.csv", b"1,2,3\n4,5\n6,7,8\n"),
    "empty-csv": ("empty.csv", b""),
    "npz-without-x": ("nox.npz", None),
    "npz-float-labels": ("flab.npz", None),
}
YAMLS = {
    "empty-file": b"",
    "binary": b"\x00\xff\xfe\x01",
    "a-list": b"- a\n- b\n",
    "python-tag": b"name: !!python/object/apply:os.system ['echo hi']\n",
    "unclosed": b"name: [unclosed\n",
    "wrong-types": yaml.safe_dump({"name": 3, "dataset": "digits", "model": [1]}).encode(),
    "alias-bomb": b"a: &a [x, x]\nb: &b [*a, *a]\nc: &c [*b, *b]\nd: [*c, *c, *c]\n",
}


def _write_array(tmp_path, name):
    fname, raw = ARRAYS[name]
    path = tmp_path / fname
    if name == "npz-without-x":
        np.savez(path, y=np.zeros(60))
    elif name == "npz-float-labels":
        np.savez(path, x=np.zeros((60, 3)), y=np.linspace(0, 1, 60))
    else:
        path.write_bytes(raw)
    return path


def _good(tmp_path):
    path = tmp_path / "good.npy"
    np.save(path, np.random.default_rng(0).normal(size=(120, 6)))
    return path


ARRAY_COMMANDS = {
    "data show": lambda f, t: ["data", "show", str(f)],
    "topology plot": lambda f, t: ["topology", "plot", "--dataset", str(f), "--out",
                                   str(t / "out.png")],
    "translate fit --source": lambda f, t: ["translate", "fit", "--source", str(f), "--target",
                                            str(_good(t)), "--out", str(t / "out")],
    "translate fit --target": lambda f, t: ["translate", "fit", "--source", str(_good(t)),
                                            "--target", str(f), "--out", str(t / "out")],
}
YAML_COMMANDS = {
    "train": lambda f, t: ["train", str(f), "--out", str(t / "out")],
    "sweep validate": lambda f, t: ["sweep", "validate", str(f)],
    "sweep run": lambda f, t: ["sweep", "run", str(f), "--tracking-uri",
                               f"sqlite:///{t / 'out' / 'mlflow.db'}"],
}


def _problems(res, tmp_path):
    """What is wrong with a command's answer to malformed input ([] when nothing)."""
    out = []
    if res.exit_code != 2:
        out.append(f"exit code {res.exit_code} (not 2): {res.output[-500:]} {res.exception!r}")
    if "Traceback" in res.output:
        out.append("a traceback")
    lines = res.stderr.strip().splitlines()
    if len(lines) != 1 or not lines[0].startswith("error: "):
        out.append(f"stderr is not one 'error:' line: {res.stderr!r}")
    if (tmp_path / "out").exists() or (tmp_path / "out.png").exists():
        out.append("it wrote its output")
    return out


@pytest.mark.parametrize("command", list(ARRAY_COMMANDS))
@pytest.mark.parametrize("case", list(ARRAYS))
def test_every_array_reading_command_refuses_every_malformed_array(tmp_path, command, case):
    path = _write_array(tmp_path, case)
    res = runner.invoke(app, ARRAY_COMMANDS[command](path, tmp_path))
    assert not _problems(res, tmp_path)


@pytest.mark.parametrize("command", list(YAML_COMMANDS))
@pytest.mark.parametrize("case", list(YAMLS))
def test_every_yaml_reading_command_refuses_every_malformed_yaml(tmp_path, command, case):
    path = tmp_path / f"{case}.yaml"
    path.write_bytes(YAMLS[case])
    res = runner.invoke(app, YAML_COMMANDS[command](path, tmp_path))
    assert not _problems(res, tmp_path)


@pytest.mark.parametrize("case", list(ARRAYS))
def test_translate_apply_refuses_every_malformed_array_and_a_folder_that_is_not_one(
        tmp_path, case):
    path = _write_array(tmp_path, case)
    not_a_translation = tmp_path / "tr"
    not_a_translation.mkdir()
    res = runner.invoke(app, ["translate", "apply", str(not_a_translation), str(path),
                              "--out", str(tmp_path / "out")])
    assert not _problems(res, tmp_path)


CHOICES = [  # a value outside each option's choices, and options that do not exist
    (["match", "--experiment", "e", "--method", "oracle"], "'oracle' is not one of"),
    (["match", "--experiment", "e", "--transform", "quadratic"], "'quadratic' is not one of"),
    (["match", "--experiment", "e", "--strategy", "star"], "'star' is not one of"),
    (["priors", "best", "--experiment", "e", "--by", "colour"], "'colour' is not one of"),
    (["demo", "--regularizer", "l2"], "'l2' is not one of"),
    (["translate", "fit", "--source", "a.npy", "--target", "b.npy", "--out", "o",
      "--encoder", "umap"], "'umap' is not one of"),
    (["translate", "fit", "--source", "a.npy", "--target", "b.npy", "--out", "o",
      "--density", "kde"], "'kde' is not one of"),
    (["match", "--nosuch"], "No such option: --nosuch"),
    (["sweep", "run"], "Missing argument 'file'"),
    (["match", "--method"], "Option '--method' requires an argument"),
    (["demo", "--epochs", "0"], "Invalid value for '--epochs'"),  # was a pydantic traceback
]


@pytest.mark.parametrize(("args", "message"), CHOICES, ids=[" ".join(a[:2]) + " " + a[-1]
                                                            for a, _ in CHOICES])
def test_a_usage_error_is_one_line_and_exit_2_like_every_bad_input(args, message):
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.stderr
    assert message in lines[0] and "Traceback" not in res.output
