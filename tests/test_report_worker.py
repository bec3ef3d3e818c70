"""The report's model worker (issue 18, item 1): whatever happens to it, the report is drawn,
and a user's error it meets reaches the user as one."""

import os
import signal

import pytest

from flowtopo.errors import InputError
from flowtopo.pipeline import report, report_plots
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


ROWS = [{"group": g, "best_adv_loss": v, "best_nll": 2.0 + v, "best_c2st": 0.6}
        for g, v in (("gmm", 0.7), ("torus", 0.9))]
CURVES = [{"family": "gmm", "best_epoch": 2, "metrics": {
    "adv_g_loss": [(1, 1.0), (2, 0.8)], "val_adv_loss": [(1, 1.1), (2, 0.9)]}}]


def test_the_experiments_pictures_are_drawn_by_the_worker_in_order(tmp_path, monkeypatch):
    monkeypatch.setattr(report_plots, "plot_families", lambda *a: pytest.fail("drawn here"))
    monkeypatch.setattr(report_plots, "plot_loss_curves", lambda *a: pytest.fail("drawn here"))
    with ModelWorker() as worker:
        fam = worker.submit("families", ROWS, tmp_path / "families.png")
        cur = worker.submit("loss_curves", CURVES, tmp_path / "curves.png")
        assert worker.result(cur) == tmp_path / "curves.png"  # waits for both, in order
        assert worker.result(fam) == tmp_path / "families.png"
    for name in ("families.png", "curves.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_jobs_the_worker_has_not_answered_when_it_dies_are_done_here(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(report_plots, "plot_loss_curves",
                        lambda h, path: drawn.append(path) or path)
    with ModelWorker() as worker:
        fam = worker.submit("families", ROWS, tmp_path / "families.png")
        assert worker.result(fam) == tmp_path / "families.png" and drawn == []
        worker._proc.kill()
        cur = worker.submit("loss_curves", CURVES, tmp_path / "curves.png")
        assert worker.result(cur) == tmp_path / "curves.png"
        assert worker.result(fam) == tmp_path / "families.png"  # kept: not drawn again
    assert drawn == [tmp_path / "curves.png"]


def test_an_unknown_job_is_refused():
    with ModelWorker() as worker, pytest.raises(ValueError, match="unknown report job"):
        worker.submit("everything")
