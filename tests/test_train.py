import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from flowtopo.checkpoint import load_checkpoint
from flowtopo.cli import app
from flowtopo.data import load_dataset
from flowtopo.errors import InputError
from flowtopo.model import FlowAE
from flowtopo.train import TrainConfig, TrainingDiverged, train

runner = CliRunner()


def small_model(prior="gmm", flow="coupling", dim=6, k=2):
    torch.manual_seed(0)
    return FlowAE.from_config({"dim": dim, "k": k, "noise_std": 0.5,
                               "flow": {"name": flow, "params": {}},
                               "prior": {"name": prior, "params": {}}})


@pytest.mark.slow
def test_mle_coupling_flowae_reaches_the_exact_nll():
    ds = load_dataset("hierarchical", n=4000, dim=6, k=2, seed=0)
    model = FlowAE.from_config({"dim": 6, "k": 2, "noise_std": 0.5,
                                "flow": {"name": "coupling", "params": {"layers": 6}},
                                "prior": {"name": "gmm", "params": {"components": 8}}})
    res = train(model, ds.x_train, ds.x_test,
                TrainConfig(epochs=60, regularizer="mle", recon_weight=0.0, lr=3e-3))
    gap = res.test["test_nll"] - ds.true_nll_per_dim()
    assert -0.05 < gap < 0.15, gap  # the model cannot beat the exact density by much


@pytest.mark.parametrize("reg", ["adversarial", "mmd", "swd", "mle"])
def test_every_regulariser_records_the_per_epoch_metrics(reg):
    ds = load_dataset("hierarchical", n=600, seed=1)
    res = train(small_model(), ds.x_train, ds.x_test,
                TrainConfig(epochs=3, regularizer=reg, batch_size=128))
    assert len(res.history) == 3
    for h in res.history:
        for key in ("adv_d_loss", "adv_g_loss", "train_recon", "val_nll", "val_bpd",
                    "val_disc_loss",
                    "val_noise_kl", "val_c2st", "val_adv_loss"):
            assert np.isfinite(h[key]), key
        assert 0.0 <= h["val_c2st"] <= 1.0
        assert h["val_c2st_gap"] == pytest.approx(abs(h["val_c2st"] - 0.5))
        assert np.isclose(h["val_bpd"], h["val_nll"] / np.log(2))
    assert set(res.test) >= {"test_nll", "test_c2st", "test_adv_loss"}


@pytest.mark.parametrize("recon_weight", [0.0, 0.5])
def test_the_decoder_runs_in_training_only_when_its_term_counts(recon_weight, monkeypatch):
    ds = load_dataset("hierarchical", n=600, seed=1)
    model = small_model()
    inverse, grad_calls = model.flow.inverse, []

    def counting_inverse(y):
        if torch.is_grad_enabled():  # training steps; evaluation runs under no_grad
            grad_calls.append(len(y))
        return inverse(y)

    monkeypatch.setattr(model.flow, "inverse", counting_inverse)
    res = train(model, ds.x_train, None, TrainConfig(epochs=2, regularizer="mle",
                                                     recon_weight=recon_weight, batch_size=128))
    n_train = len(ds.x_train) - int(0.1 * len(ds.x_train))
    assert sum(grad_calls) == (2 * n_train if recon_weight else 0)
    assert ("train_recon" in res.history[-1]) == (recon_weight > 0)
    assert np.isfinite(res.history[-1]["val_recon"])  # still measured on held-out data


def test_adversarial_training_moves_codes_toward_the_prior():
    ds = load_dataset("hierarchical", n=2000, seed=2)
    res = train(small_model("gaussian"), ds.x_train, ds.x_test,
                TrainConfig(epochs=25, regularizer="adversarial", lr=2e-3, monitor="val_adv_loss"))
    first, best = res.history[0], res.best
    assert best["val_c2st"] < first["val_c2st"]


def test_continuous_flow_trains_and_counts_nfe():
    ds = load_dataset("hierarchical", n=400, seed=3)
    res = train(small_model(flow="continuous"), ds.x_train, None,
                TrainConfig(epochs=2, regularizer="mle", batch_size=200))
    assert res.history[-1]["nfe"] > 0


def test_nonfinite_loss_stops_with_a_clear_error():
    x = np.ones((200, 6), np.float32)
    x[5] = 1e30
    with pytest.raises(TrainingDiverged, match=r"diverged.*lower lr"):
        train(small_model(), x, None, TrainConfig(epochs=2, val_fraction=0.01))


@pytest.mark.parametrize("regularizer", ["adversarial", "mle", "mmd", "swd"])
def test_the_training_step_reads_nothing_back_to_the_host(regularizer, host_reads):
    # Host reads (a GPU sync each) may happen once per epoch (metrics, the divergence check),
    # never once per batch: 2 epochs of 2 batches and of 8 batches read back the same number.
    ds = load_dataset("hierarchical", n=800, seed=5)
    counts = []
    for batch_size in (320, 80):
        cfg = TrainConfig(epochs=2, batch_size=batch_size, regularizer=regularizer, patience=9)
        with host_reads() as reads:
            res = train(small_model(), ds.x_train[:640], None, cfg)
        assert len(res.history) == 2
        counts.append(reads.n)
    assert counts[0] == counts[1], counts


def test_early_stopping_restores_the_best_epoch():
    ds = load_dataset("hierarchical", n=400, seed=4)
    res = train(small_model(), ds.x_train, None,
                TrainConfig(epochs=50, lr=1e-9, patience=2, regularizer="mle"))
    assert len(res.history) < 50
    assert res.best["val_nll"] == min(h["val_nll"] for h in res.history)


def test_training_on_cuda_runs_there_or_is_a_clear_error():
    ds = load_dataset("hierarchical", n=400, seed=5)
    cfg = TrainConfig(device="cuda", epochs=2, regularizer="adversarial", batch_size=128)
    if not torch.cuda.is_available():  # this machine: the clear error
        with pytest.raises(InputError, match="CUDA is not available"):
            train(small_model(), ds.x_train, None, cfg)
        return
    res = train(small_model(), ds.x_train, ds.x_test, cfg)  # a GPU machine: it trains there
    assert next(res.model.parameters()).is_cuda
    assert all(np.isfinite(h["val_nll"]) and np.isfinite(h["adv_d_loss"]) for h in res.history)


class Payload:
    def __reduce__(self):
        return (print, ("pwned",))


def test_checkpoint_with_pickled_objects_is_refused(tmp_path):
    from flowtopo.checkpoint import save_checkpoint
    from flowtopo.data import Standardizer

    save_checkpoint(tmp_path, small_model(), Standardizer.fit(np.zeros((3, 6), np.float32)))
    with open(tmp_path / "model.pt", "wb") as f:
        pickle.dump({"x": Payload()}, f)
    with pytest.raises(InputError, match="refused to load"):
        load_checkpoint(tmp_path)


def write_config(tmp_path, **overrides):
    cfg = {
        "dataset": {"name": "hierarchical", "options": {"n": 500}},
        "model": {"k": 2, "flow": {"name": "coupling", "params": {"layers": 2}},
                  "prior": {"name": "gaussian"}},
        "train": {"epochs": 2, "batch_size": 128},
        "out": str(tmp_path / "ckpt"),
        **overrides,
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_train_cli_writes_a_loadable_checkpoint_and_mlflow_run(tmp_path):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    path = write_config(tmp_path, mlflow={"experiment": "t", "tracking_uri": uri})
    res = runner.invoke(app, ["train", str(path)], terminal_width=200)
    assert res.exit_code == 0, res.output
    ck = load_checkpoint(tmp_path / "ckpt")
    assert ck.model.k == 2 and ck.config["train"]["epochs"] == 2
    client = mlflow.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("t").experiment_id])
    assert run.info.status == "FINISHED"
    hist = client.get_metric_history(run.info.run_id, "adv_d_loss")
    assert [m.step for m in hist] == [1, 2]
    assert "best_adv_loss" in run.data.metrics and "best_nll" in run.data.metrics
    arts = {a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")}
    assert "checkpoint/model.pt" in arts


def test_train_cli_bad_yaml_is_one_line_exit_2(tmp_path):
    path = write_config(tmp_path, train={"epochs": 0})
    res = runner.invoke(app, ["train", str(path)])
    assert res.exit_code == 2
    assert res.output.startswith("error: ") and len(res.output.strip().splitlines()) == 1
    assert "train.epochs" in res.output
    with pytest.raises(InputError, match=r"line \d+: train.epochs"):
        from flowtopo.train_spec import TrainSpec
        from flowtopo.yaml_io import load_spec

        load_spec(path, TrainSpec)


def test_train_refuses_a_non_empty_out_unless_overwrite(tmp_path):
    out = tmp_path / "ckpt"
    out.mkdir()
    (out / "config.json").write_text("the user's own file")
    path = write_config(tmp_path)
    res = runner.invoke(app, ["train", str(path)])
    assert res.exit_code == 2 and "folder exists and is not empty" in res.output
    assert "--overwrite" in res.output
    assert (out / "config.json").read_text() == "the user's own file"  # nothing lost
    res = runner.invoke(app, ["train", str(path), "--overwrite"])
    assert res.exit_code == 0, res.output
    assert load_checkpoint(out).model.k == 2


@pytest.mark.parametrize("overrides,args,message", [
    ({"out": ""}, [], "out: String should have at least 1 character"),
    ({}, ["--epochs", "0"], "command line: train.epochs: Input should be greater than"),
    ({}, ["--out", str(Path(__file__))], "exists and is not a folder"),
    ({"out": "/proc/no/such/place"}, [], "cannot write the checkpoint there"),
    ({"train": {"epochs": 2, "lr": float("inf")}}, [], "train.lr: Input should be a finite"),
    ({"train": {"epochs": 2, "device": "tpu"}}, [], "train.device: String should match"),
    ({"model": {"k": 2, "prior": {"name": "gmm", "params": {"components": 100_000_000}}}}, [],
     "components must be an integer in 1..4096"),
])
def test_train_refuses_bad_out_and_overrides_with_one_line(tmp_path, overrides, args, message):
    path = write_config(tmp_path, **overrides)
    before = sorted(p.name for p in Path.cwd().iterdir())
    res = runner.invoke(app, ["train", str(path), *args])
    assert res.exit_code == 2 and message in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert sorted(p.name for p in Path.cwd().iterdir()) == before  # nothing written here


def test_best_over_epochs_is_each_metrics_minimum_over_the_epochs_that_hold_it():
    from flowtopo.train_job import best_over_epochs

    history = [{"val_nll": 3.0, "val_adv_loss": 1.0}, {"val_nll": 2.0, "val_adv_loss": 1.5},
               {"val_nll": 2.5, "train_loss": -9.0}]
    assert best_over_epochs(history) == {"best_nll": 2.0, "best_adv_loss": 1.0}
    assert best_over_epochs([]) == {}


@pytest.mark.parametrize(("reg", "patience"), [("adversarial", 20), ("mle", 1)])
def test_training_resumed_from_a_saved_state_reproduces_the_uninterrupted_run(tmp_path, reg,
                                                                             patience):
    """A state written mid-training and read back goes on exactly where it stopped."""
    from flowtopo.train import TrainState

    ds = load_dataset("hierarchical", n=600, seed=1)
    cfg = TrainConfig(epochs=6, regularizer=reg, batch_size=128, patience=patience)
    full = train(small_model(), ds.x_train, ds.x_test, cfg)
    states: list[int] = []

    def keep(state):
        states.append(state.epoch)
        state.save(tmp_path / f"state-{state.epoch}.pt")

    first = small_model()
    train(first, ds.x_train, None, cfg.model_copy(update={"epochs": 3}), state_every=2,
          on_state=keep)
    assert states == [2]  # every 2 epochs: the 3-epoch run wrote one state
    again = small_model()  # fresh weights: everything comes from the state file
    torch.manual_seed(123)  # the state, not the caller's generator, decides what follows
    seen: list[int] = []
    res = train(again, ds.x_train, ds.x_test, cfg, on_epoch=lambda e, m: seen.append(e),
                resume=TrainState.load(tmp_path / "state-2.pt"))
    assert seen == [h["epoch"] for h in full.history[2:]]  # only the epochs after the state
    assert res.history == full.history and res.best_epoch == full.best_epoch
    assert res.test == full.test
    for (name, a), b in zip(full.model.state_dict().items(), res.model.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name


def test_a_training_state_that_is_not_one_is_one_line(tmp_path):
    from flowtopo.train import TrainState

    bad = tmp_path / "state.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(InputError, match="not a flowtopo training state"):
        TrainState.load(bad)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"epoch": Evil()}, bad)
    with pytest.raises(InputError, match="not a flowtopo training state"):
        TrainState.load(bad)
