"""The report's model worker (issue 18, item 1): whatever happens to it, the report is drawn,
and a user's error it meets reaches the user as one."""

import os
import signal

import pytest

from flowtopo.errors import InputError
from flowtopo.pipeline import report
from flowtopo.pipeline.report_worker import ModelWorker


def test_a_worker_that_is_gone_leaves_the_sections_to_the_parent(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(report, "_model_section",
                        lambda name, *rest: drawn.append(name) or {"name": name})
    with ModelWorker() as worker:
        worker._proc.kill()
        worker._proc.join()
        worker.draw([(n, n, tmp_path, tmp_path, tmp_path) for n in ("a", "b")])
        got = worker.sections()
    assert drawn == ["a", "b"] and [s["name"] for s in got] == ["a", "b"]


def test_the_workers_input_error_is_raised_in_the_parent(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "_model_section",
                        lambda *a: pytest.fail("drawn in the parent, not in the worker"))
    bad = tmp_path / "not-a-checkpoint"
    bad.mkdir()
    (bad / "model.pt").write_bytes(b"not a state dict")
    with ModelWorker() as worker:
        worker.draw([("m", "run", bad, tmp_path, tmp_path)])
        with pytest.raises(InputError, match="not-a-checkpoint"):
            worker.sections()


def test_leaving_the_block_stops_the_worker_at_once():
    with pytest.raises(RuntimeError), ModelWorker() as worker:
        proc = worker._proc
        assert proc.is_alive()
        raise RuntimeError("the parent failed before it had anything to draw")
    assert not proc.is_alive() and proc.exitcode is not None


def test_a_worker_that_stops_answering_is_killed_and_the_parent_draws(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(report, "_model_section",
                        lambda name, *rest: drawn.append(name) or {"name": name})
    with ModelWorker() as worker:
        proc = worker._proc
        os.kill(proc.pid, signal.SIGSTOP)  # alive, never answering (before: waited forever)
        worker.draw([("a", "a", tmp_path, tmp_path, tmp_path)])
        got = worker.sections(wait_s=1.0)
        assert not proc.is_alive() and proc.exitcode == -signal.SIGKILL
    assert drawn == ["a"] and [s["name"] for s in got] == ["a"]
