"""What a sweep costs beyond its training, and how the MLflow queries scale with the runs.

Part 1, the sweep's overhead. N identical trials (one fixed configuration: the quickstart's
data, model and 30 epochs, a GMM prior with fixed parameters, lr 3e-3, batch 256, seed 0), at
the quickstart's trial size and at a 5x larger one (5x the rows), trained

- ``bare``: in a plain Python loop calling the training function (`flowtopo.train.train` on the
  dataset and model the trial would build), on the threads a trial is given (1 CPU: 1 thread),
  half of the trials before the 1-concurrent sweep and half after it, so that a machine whose
  speed drifts between them shows in the two halves (printed) rather than in the ratio;
- ``sweep``: through ``flowtopo sweep run`` (a subprocess: Ray Tune + Optuna + MLflow on a
  sqlite store, checkpoints every 10 epochs), with 1 and with 2 concurrent trials.

Reported per size: wall time per trial, the overhead ratio (sweep with 1 concurrent trial / the
bare loop; also without the first trial of each, which pays a new process's warm-up), where the
difference goes (the command's start-up to the first trial's run, the
time inside each trial's MLflow run beyond the bare training, the gaps between runs, the tail
after the last), the cost of the per-epoch MLflow write and of one checkpoint measured on their
own, and the throughput of 2 concurrent trials against 1, end to end and between the first
run's start and the last run's end. The overhead is also read from the sweep's own trials,
which record their training's seconds (``trial_train_s``: the bare loop's work, timed inside
the trial) and their wait on the engines (``trial_report_s``): that ratio compares two
measures taken in the same minutes, so a machine whose speed drifts between the bare loop and
the sweep cannot move it; what it leaves out (the engines' processes slowing the training
itself) shows as the sweep's training against the bare loop's.

Part 2, the queries. ``flowtopo priors best`` and ``flowtopo report`` (subprocesses, as a user
runs them) on an experiment holding 100, then 1,000 finished trial runs (one store, grown: its
first 100 runs are written once), written through the real MLflow client (tags, parameters,
30 epochs of curves and the summary metrics, a real checkpoint each, all runs sharing the one
trained model's files) by two processes at once, as a 2-concurrent sweep's trials write one
store; each command run ``--repeat`` times (3), the median and the range
printed.

Targets (issue 18): overhead <= 1.10x the bare loop at the larger size; 2 concurrent trials
>= 1.7x the throughput of 1; the queries' seconds grow at most linearly with the runs, 1,000
runs in under 10 s. Run: ``python -m benchmarks.sweep [--trials 4] [--runs 100 1000] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks._util import header, in_processes

QUICKSTART = Path(__file__).resolve().parents[1] / "sweeps" / "quickstart.yaml"
FIXED = {"priors": {"gmm": {"components": 8, "spread": 3.0, "scale": 0.5}},
         "lr": [3e-3, 3e-3], "batch_size": [256]}


def sweep_spec(size: int, trials: int, concurrent: int, experiment: str) -> dict[str, Any]:
    """The quickstart's sweep, one fixed configuration, ``size`` x its rows."""
    spec = yaml.safe_load(QUICKSTART.read_text())
    spec["dataset"]["options"]["n"] *= size
    spec.update(name=f"overhead-x{size}", search=FIXED, seeds=1, num_samples=trials,
                max_concurrent_trials=concurrent, sampler="random",
                mlflow={"experiment": experiment}, resources={"cpu": 1})
    return spec


def bare_loop(spec: dict[str, Any], trials: int, out: Path) -> list[float]:
    """Seconds of each of ``trials`` trainings of the spec's configuration, no engines."""
    import optuna
    import torch

    from flowtopo.data import load_dataset
    from flowtopo.sweep.space import _suggest, resolve
    from flowtopo.sweep.spec import SweepSpec
    from flowtopo.train import train
    from flowtopo.train_job import build_model

    s = SweepSpec.model_validate(spec)
    torch.set_num_threads(s.resources.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trial = optuna.create_study().ask()
    _suggest(trial, s)  # the flat parameters a sweep trial receives
    times = []
    for _ in range(trials):
        t = time.perf_counter()
        ts = resolve(trial.params, s, 0, str(out))
        ds = load_dataset(ts.dataset.name, **ts.dataset.options)
        train(build_model(ts.model, ds.dim, 0), ds.x_train, ds.x_test, ts.train)
        times.append(time.perf_counter() - t)
    return times


def bare_pair(size: int, trials: int) -> list[float]:
    """Seconds of each bare training when 2 processes train at once (``trials`` in all).

    The machine's own ceiling for 2 concurrent trials, without any engine: each process times
    its trainings only (not its start-up), as the bare loop does.
    """
    procs = [subprocess.Popen([sys.executable, "-m", "benchmarks.sweep", "--bare", str(size),
                               "--trials", str(n)], stdout=subprocess.PIPE, text=True)
             for n in (trials - trials // 2, trials // 2)]
    outs = [p.communicate()[0] for p in procs]
    if any(p.returncode != 0 for p in procs):
        raise SystemExit("a bare process failed")
    return [t for out in outs for t in json.loads(out.strip().splitlines()[-1])]


def run_sweep(spec: dict[str, Any], work: Path) -> dict[str, Any]:
    """``flowtopo sweep run`` in a subprocess; its wall time and each trial run's span."""
    import mlflow

    work.mkdir(parents=True)
    path = work / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    uri = f"sqlite:///{work / 'mlflow.db'}"
    t0 = time.time()
    res = subprocess.run([sys.executable, "-m", "flowtopo.cli", "sweep", "run", str(path),
                          "--tracking-uri", uri, "--storage", str(work / "ray"), "--json"],
                         capture_output=True, text=True, cwd=work)
    t1 = time.time()
    if res.returncode != 0:
        raise SystemExit(f"sweep failed ({res.returncode}): {res.stderr[-2000:]}")
    summary = json.loads(res.stdout)
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name(spec["mlflow"]["experiment"])
    if exp is None:
        raise SystemExit(f"the sweep left no experiment {spec['mlflow']['experiment']!r}")
    runs = sorted(client.search_runs([exp.experiment_id],
                                     filter_string="tags.`flowtopo.kind` = 'trial'"),
                  key=lambda r: r.info.start_time)
    spans = [(r.info.start_time / 1e3, r.info.end_time / 1e3) for r in runs]
    return {"wall": t1 - t0, "start": t0, "end": t1, "spans": spans,
            # each run's own measure of its work and of its wait on the engines
            "train_s": [r.data.metrics["trial_train_s"] for r in runs],
            "report_s": [r.data.metrics["trial_report_s"] for r in runs],
            "threads": sorted({r.data.tags.get("torch_threads") for r in runs}),
            "failed": summary.get("failed")}


def mlflow_epoch_write(work: Path, epochs: int = 30) -> float:
    """Seconds of one epoch's metrics (one ``log_batch``) in a sqlite store."""
    from flowtopo.tracking import log_metrics, mlflow_client

    client = mlflow_client(f"sqlite:///{work / 'write.db'}")
    run = client.create_run(client.create_experiment("w"))
    metrics = {k: 0.5 for k in ("adv_d_loss", "adv_g_loss", "recon", "nll", "val_adv_loss",
                                "val_nll", "val_recon", "val_c2st", "lr", "epoch")}
    log_metrics(client, run.info.run_id, metrics, step=0)  # the store opened
    t = time.perf_counter()
    for e in range(1, epochs + 1):
        log_metrics(client, run.info.run_id, metrics, step=e)
    return (time.perf_counter() - t) / epochs


def checkpoint_cost(spec: dict[str, Any], work: Path) -> float:
    """Seconds to write one mid-training state and copy it into Ray's storage, as a trial does."""
    import optuna

    from flowtopo.data import load_dataset
    from flowtopo.sweep.space import _suggest, resolve
    from flowtopo.sweep.spec import SweepSpec
    from flowtopo.train import train
    from flowtopo.train_job import build_model

    s = SweepSpec.model_validate(spec)
    trial = optuna.create_study().ask()
    _suggest(trial, s)
    ts = resolve(trial.params, s, 0, str(work / "ck"))
    ts.train.epochs = 2
    ds = load_dataset(ts.dataset.name, **ts.dataset.options)
    states: list[Any] = []
    train(build_model(ts.model, ds.dim, 0), ds.x_train, ds.x_test, ts.train, state_every=1,
          on_state=states.append)
    times = []
    for i in range(5):
        t = time.perf_counter()
        d = work / f"state{i}"
        d.mkdir()
        states[-1].save(str(d / "train_state.pt"))
        shutil.copytree(d, work / f"stored{i}")
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def overhead(size: int, trials: int, work: Path) -> None:
    spec1 = sweep_spec(size, trials, 1, f"x{size}-c1")
    # the bare loop's trials half before the 1-concurrent sweep, half after (the first one
    # pays the process's warm-up, as the sweep's first trial does): a machine whose speed
    # drifts over the minutes between them shows in the two halves instead of in the ratio
    bare = bare_loop(spec1, trials - trials // 2, work / f"bare{size}")
    one = run_sweep(spec1, work / f"sweep{size}-c1")
    bare += bare_loop(spec1, trials // 2, work / f"bare{size}-after")
    two = run_sweep(sweep_spec(size, trials, 2, f"x{size}-c2"), work / f"sweep{size}-c2")
    pair = bare_pair(size, trials)
    per_bare = statistics.mean(bare)
    spans = one["spans"]
    inside = statistics.mean(e - s for s, e in spans)
    gaps = sum(max(0.0, spans[i + 1][0] - spans[i][1]) for i in range(len(spans) - 1))
    print(f"\n## trial size x{size} ({sweep_spec(size, 1, 1, '')['dataset']['options']['n']} "
          f"rows, 30 epochs), {trials} trials; trial runs' torch threads: "
          f"{one['threads']} (1 concurrent), {two['threads']} (2 concurrent)\n")
    half = trials - trials // 2
    print(f"bare trials (s), in order: {', '.join(f'{b:.2f}' for b in bare[:half])} before the "
          f"1-concurrent sweep, {', '.join(f'{b:.2f}' for b in bare[half:])} after it; the "
          f"sweep's trial runs (s), in order: {', '.join(f'{e - s:.2f}' for s, e in spans)}, "
          f"their training: {', '.join(f'{t:.2f}' for t in one['train_s'])}\n")
    print("| | seconds per trial | ratio to the bare loop |")
    print("|---|---|---|")
    print(f"| bare loop (1 thread) | {per_bare:.2f} | 1.00 |")
    print(f"| `sweep run`, 1 concurrent, end to end | {one['wall'] / trials:.2f} | "
          f"{one['wall'] / trials / per_bare:.2f} |")
    print(f"| `sweep run`, 1 concurrent, first run's start to last run's end | "
          f"{(spans[-1][1] - spans[0][0]) / trials:.2f} | "
          f"{(spans[-1][1] - spans[0][0]) / trials / per_bare:.2f} |")
    if trials > 1:  # without the first trial of each (the warm-up of a new process)
        later = (spans[-1][1] - spans[1][0]) / (trials - 1)
        bare_later = statistics.mean(bare[1:])
        print(f"| `sweep run`, 1 concurrent, trials 2 to {trials} (against the bare loop's "
              f"trials 2 to {trials}: {bare_later:.2f} s) | {later:.2f} | "
              f"{later / bare_later:.2f} |")
    print(f"| `sweep run`, 2 concurrent, end to end | {two['wall'] / trials:.2f} | "
          f"{two['wall'] / trials / per_bare:.2f} |")
    print("\nwhere the 1-concurrent sweep's time goes (seconds, whole sweep):\n")
    print("| start-up to the first run | inside the runs beyond bare training | gaps between "
          "runs | after the last run | total |")
    print("|---|---|---|---|---|")
    print(f"| {spans[0][0] - one['start']:.1f} | {trials * (inside - per_bare):.1f} | "
          f"{gaps:.1f} | {one['end'] - spans[-1][1]:.1f} | {one['wall'] - trials * per_bare:.1f} "
          "|")
    steady = spans[-1][1] - spans[0][0]
    own, waits = sum(one["train_s"]), sum(one["report_s"])
    print("\nthe same, as each trial of the 1-concurrent sweep measured itself (its training, "
          "the bare loop's work, timed inside the trial: no drift between the two sides):\n")
    print("| per trial (s) | training | waiting on Tune and MLflow per epoch | the rest of "
          "the run (opening it, recording the result) | between runs | overhead: first "
          "start to last end / training |")
    print("|---|---|---|---|---|---|")
    print(f"| mean | {own / trials:.2f} | {waits / trials:.2f} | "
          f"{(sum(e - s for s, e in spans) - own - waits) / trials:.2f} | {gaps / trials:.2f} | "
          f"**{steady / own:.3f}x** |")
    print(f"\ntraining inside the sweep's trials / the bare loop's: {own / trials / per_bare:.2f}x "
          "(the machine's drift between the two, and any slowing of the training by the "
          "engines' processes beside it)")
    steady1 = trials / (spans[-1][1] - spans[0][0])
    s2 = two["spans"]
    steady2 = trials / (max(e for _, e in s2) - s2[0][0])
    print(f"\nthroughput, 2 concurrent / 1: end to end {one['wall'] / two['wall']:.2f}x, "
          f"first run's start to last run's end {steady2 / steady1:.2f}x; the machine's "
          f"ceiling (2 bare processes training at once, 1 thread each, against the bare loop):"
          f" {2 * per_bare / statistics.mean(pair):.2f}x")


def make_runs(uri: str, experiment: str, runs: range, ckpt: Path,
              history: list[dict[str, float]], summary: dict[str, float],
              params: dict[str, Any]) -> None:
    """Finished trial runs numbered ``runs``, as a sweep leaves them, through the MLflow client.

    The experiment is created by the first call and added to by later ones.
    """
    import numpy as np

    from flowtopo.tracking import MetricBuffer, log_metrics, log_params, mlflow_client

    client = mlflow_client(uri)
    found = client.get_experiment_by_name(experiment)
    # artifacts beside the store, not in ./mlruns of wherever the benchmark runs
    exp = found.experiment_id if found else client.create_experiment(
        experiment, artifact_location=str(ckpt.parent / "artifacts"))
    rng = np.random.default_rng(runs.start)
    families = ("gmm", "hierarchical_gmm", "flow_prior")
    for i in runs:
        fam = families[i % 3]
        run = client.create_run(exp, run_name=f"{fam}-s0-{i:05d}", tags={
            "flowtopo.kind": "trial", "family": fam, "dataset": "hierarchical", "seed": "0",
            "sweep_id": "generated", "phase": "search"})
        rid = run.info.run_id
        log_params(client, rid, {**params, "optuna": {"prior": fam, "lr": 3e-3}})
        jitter = float(rng.uniform(0.9, 1.1))
        curves = MetricBuffer(client, rid, flush_s=3600)  # the curves in one request
        for e, m in enumerate(history, 1):
            curves.log({k: v * jitter for k, v in m.items()}, e)
        curves.flush()
        log_metrics(client, rid, {k: v * jitter for k, v in summary.items()})
        client.log_artifacts(rid, str(ckpt), "checkpoint")
        client.set_terminated(rid, "FINISHED")


def timed_cli(args: list[str], cwd: Path) -> float:
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "flowtopo.cli", *args], capture_output=True,
                         text=True, cwd=cwd)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {res.stderr[-2000:]}")
    return time.perf_counter() - t


def queries(sizes: list[int], work: Path, repeat: int = 3) -> None:
    import optuna
    import torch

    from flowtopo.checkpoint import save_checkpoint
    from flowtopo.data import load_dataset
    from flowtopo.sweep.space import _suggest, resolve
    from flowtopo.sweep.spec import SweepSpec
    from flowtopo.train import train
    from flowtopo.train_job import build_model, summary_metrics

    torch.set_num_threads(1)
    s = SweepSpec.model_validate(sweep_spec(1, 1, 1, "q"))
    trial = optuna.create_study().ask()
    _suggest(trial, s)
    ts = resolve(trial.params, s, 0, str(work / "ck"))
    ds = load_dataset(ts.dataset.name, **ts.dataset.options)
    result = train(build_model(ts.model, ds.dim, 0), ds.x_train, ds.x_test, ts.train)
    assert ds.standardizer is not None  # the generated datasets are standardized
    ckpt = save_checkpoint(work / "ckpt", result.model, ds.standardizer, {
        "dataset": ts.dataset.model_dump(mode="json"), "train": ts.train.model_dump(mode="json"),
        "best_epoch": result.best_epoch, "test": result.test})
    params = ts.model_dump(mode="json", exclude={"out", "mlflow"})
    summary = {**summary_metrics(result), **result.test}
    print("\n## `priors best` and `report` against the runs in an experiment\n")
    print(f"each command run {repeat} times one after another: the median (the range)\n")
    print("| finished runs | writing the runs added (s) | `priors best` (s) | `report` (s) |")
    print("|---|---|---|---|")
    rows = []
    d = work / "runs"  # one store, grown to each size in turn (its first runs written once)
    d.mkdir()
    uri = f"sqlite:///{d / 'mlflow.db'}"
    have = 0
    for n in sorted(sizes):
        t = time.perf_counter()
        make_runs(uri, "scale", range(have, have), ckpt, result.history, summary, params)
        mid = (have + n) // 2  # the experiment made above; its runs written by 2 processes
        list(in_processes(make_runs, [(uri, "scale", part, ckpt, result.history, summary,
                                       params) for part in (range(have, mid), range(mid, n))],
                          jobs=2))
        made, have = time.perf_counter() - t, n
        bests = sorted(timed_cli(["priors", "best", "--experiment", "scale", "--tracking-uri",
                                  uri, "--json"], d) for _ in range(repeat))
        reports = sorted(timed_cli(["report", "--experiment", "scale", "--tracking-uri", uri,
                                    "--out", str(d / f"report{n}")], d) for _ in range(repeat))
        best, report = bests[len(bests) // 2], reports[len(reports) // 2]
        rows.append((n, best, report))
        print(f"| {n} | {made:.0f} | {best:.1f} ({bests[0]:.1f}-{bests[-1]:.1f}) | {report:.1f} "
              f"({reports[0]:.1f}-{reports[-1]:.1f}) |", flush=True)
    if len(rows) >= 2:
        (n0, b0, r0), (n1, b1, r1) = rows[0], rows[-1]
        print(f"\ngrowth from {n0} to {n1} runs ({n1 / n0:.0f}x the runs): `priors best` "
              f"{b1 / b0:.2f}x, `report` {r1 / r0:.2f}x; per extra run: "
              f"{(b1 - b0) / (n1 - n0) * 1e3:.1f} ms and {(r1 - r0) / (n1 - n0) * 1e3:.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 5])
    ap.add_argument("--runs", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--repeat", type=int, default=3, help="times each query command is run")
    ap.add_argument("--skip", choices=["overhead", "queries"], default=None)
    ap.add_argument("--bare", type=int, default=None, help=argparse.SUPPRESS)  # bare_pair's
    args = ap.parse_args()
    if args.bare is not None:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(bare_loop(sweep_spec(args.bare, args.trials, 1, ""), args.trials,
                                       Path(tmp))))
        return
    header("a sweep's overhead over its training; priors best and report against many runs")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.skip != "overhead":
            spec = sweep_spec(1, 1, 1, "")
            print(f"\none epoch's MLflow write (sqlite, one log_batch): "
                  f"{mlflow_epoch_write(work) * 1e3:.1f} ms; one checkpoint (state saved and "
                  f"copied into storage): {checkpoint_cost(spec, work) * 1e3:.1f} ms")
            for size in args.sizes:
                overhead(size, args.trials, work)
        if args.skip != "queries":
            queries(args.runs, work, args.repeat)


if __name__ == "__main__":
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    main()
