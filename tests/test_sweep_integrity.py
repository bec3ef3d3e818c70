"""A sweep folder is resumed only as this user's flowtopo signed it: nothing in it runs else."""

import json
import os
import pickle
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from flowtopo.cli import app
from flowtopo.errors import InputError
from flowtopo.sweep.integrity import SIGNATURE_FILE, config_home, sign_folder, verify_folder
from flowtopo.sweep.runner import CONTEXT_FILE
from flowtopo.sweep.spec import SweepSpec


class _Payload:
    """A pickle that, when loaded, writes a marker file: code from the sweep folder ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def sweep_folder(tmp_path: Path) -> Path:
    d = tmp_path / "ray" / "quickstart-x"
    (d / "trial_0").mkdir(parents=True)
    spec = SweepSpec.model_validate(yaml.safe_load(Path("sweeps/quickstart.yaml").read_text()))
    (d / CONTEXT_FILE).write_text(json.dumps({
        "spec": spec.model_dump(mode="json"), "storage": str(tmp_path / "ray"),
        "runtime": {"tracking_uri": f"sqlite:///{tmp_path / 'm.db'}", "experiment_id": "1",
                    "sweep_id": "quickstart-x", "parent_run_id": "p", "phase": "search"}}))
    (d / "tuner.pkl").write_bytes(pickle.dumps({"benign": True}))
    (d / "trial_0" / "params.pkl").write_bytes(pickle.dumps({"lr": 1e-3}))
    return d


def test_a_signed_folder_verifies_and_the_key_is_private(tmp_path):
    d = sweep_folder(tmp_path)
    sign_folder(d)
    verify_folder(d)
    key = config_home() / "sweep.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert set(json.loads((d / SIGNATURE_FILE).read_text())["files"]) == {
        CONTEXT_FILE, "tuner.pkl", "trial_0/params.pkl"}


@pytest.mark.parametrize("tamper,message", [
    (lambda d: (d / "tuner.pkl").write_bytes(pickle.dumps({"benign": False})),
     "changed since flowtopo signed it: tuner.pkl"),
    (lambda d: (d / "trial_0" / "evil.pkl").write_bytes(b"x"),
     "changed since flowtopo signed it: trial_0/evil.pkl"),
    (lambda d: (d / "trial_0" / "params.pkl").unlink(),
     "changed since flowtopo signed it: trial_0/params.pkl"),
    (lambda d: (d / SIGNATURE_FILE).unlink(), "no flowtopo-sweep.sig"),
    (lambda d: (d / SIGNATURE_FILE).write_text("{"), "unreadable signature"),
    (lambda d: os.chmod(d / "tuner.pkl", 0o666), "writable by others"),
    (lambda d: (d / "link.pkl").symlink_to(d / "tuner.pkl"), "or a link"),
])
def test_a_tampered_folder_is_refused(tmp_path, tamper, message):
    d = sweep_folder(tmp_path)
    sign_folder(d)
    tamper(d)
    with pytest.raises(InputError, match=message):
        verify_folder(d)


def test_a_signature_forged_without_the_key_is_refused(tmp_path, monkeypatch):
    d = sweep_folder(tmp_path)
    monkeypatch.setenv("FLOWTOPO_CONFIG_HOME", str(tmp_path / "attacker"))
    sign_folder(d)  # the attacker signs with their own key
    monkeypatch.undo()
    with pytest.raises(InputError, match="does not match this user's key"):
        verify_folder(d)


def test_a_key_others_can_read_is_refused(tmp_path):
    d = sweep_folder(tmp_path)
    sign_folder(d)
    key = config_home() / "sweep.key"
    os.chmod(key, 0o644)
    try:
        with pytest.raises(InputError, match="must be private"):
            verify_folder(d)
    finally:
        os.chmod(key, 0o600)


@pytest.mark.parametrize("signed", [True, False], ids=["tampered", "unsigned"])
def test_resume_of_a_tampered_folder_runs_nothing_from_it(tmp_path, signed):
    d = sweep_folder(tmp_path)
    marker = tmp_path / "marker"
    if signed:
        sign_folder(d)
    (d / "tuner.pkl").write_bytes(pickle.dumps(_Payload(marker)))
    res = CliRunner().invoke(app, ["sweep", "resume", str(d)])
    assert res.exit_code == 2, res.output
    assert res.output.startswith("error: ") and len(res.output.strip().splitlines()) == 1
    assert "refusing" in res.output
    assert not marker.exists()  # nothing was unpickled
    pickle.loads((d / "tuner.pkl").read_bytes())  # while the payload itself does run
    assert marker.read_text() == "pwned"
