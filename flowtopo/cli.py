"""The ``flowtopo`` command line: a thin Typer layer over the library.

Heavy libraries (torch, Ray, MLflow) are imported inside the commands, so ``--help`` stays fast.
User errors (`InputError`) print as one line and exit with code 2.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from flowtopo.errors import InputError

if TYPE_CHECKING:  # the CLI imports nothing heavy at start-up
    from flowtopo.pipeline.match_result import MatchSummary

console = Console()
err_console = Console(stderr=True)
PIPED_WIDTH = 240
"""Width of tables when stdout is not a terminal (rich's default, 80, wraps run ids and paths
mid-word); COLUMNS still wins."""


def print_error(err: InputError) -> None:
    """One line on stderr: ``error: MESSAGE`` (the message printed as is, never as markup)."""
    err_console.print(Text.assemble(("error:", "red"), " ", str(err)), highlight=False,
                      soft_wrap=True)


# Choices offered as real choices (listed in --help, checked by the parser). Static here so that
# the CLI imports no engine; tests/test_architecture.py checks each against its registry.
Method = Literal["tree", "identity", "gw", "cluster_qap"]  # unsupervised flowtopo.matching.METHODS
Transform = Literal["affine", "linear", "orthogonal", "piecewise", "nonlinear"]  # TRANSFORMS
RegularizerChoice = Literal["mle", "adversarial", "mmd", "swd"]  # train_config.REGULARIZERS
GroupBy = Literal["family", "dataset"]  # flowtopo.pipeline.best.BY
Strategy = Literal["all-pairs", "hub"]  # flowtopo.pipeline.hub.STRATEGIES
Encoder = Literal["pca", "flowae"]  # flowtopo.translate.TranslateConfig.encoder
Density = Literal["exact", "knn"]  # flowtopo.translate.TranslateConfig.density


class _Commands(TyperGroup):
    """The root command group: a user error anywhere below it is one line and exit code 2.

    Mapped here, inside the app, so that in-process invocations (tests, `typer.testing`) see
    the same exit code as the console script.
    """

    def invoke(self, ctx: typer.Context) -> Any:
        """Run the command; `InputError` -> `print_error` and exit 2."""
        try:
            return super().invoke(ctx)
        except InputError as err:
            print_error(err)
            raise typer.Exit(2) from None

    def main(self, *args: Any, **kwargs: Any) -> Any:
        """Click's main, where a usage error is one line and exit 2 too.

        An unknown option, a value outside an option's choices, a missing argument: click
        prints a usage block and a boxed message; here it is ``error: COMMAND: message``, like
        every other bad input. A bare group still prints its help.
        """
        from typer._click import exceptions as click  # typer's own copy of click (pinned)

        if not kwargs.get("standalone_mode", True):
            return super().main(*args, **kwargs)
        try:
            rv = super().main(*args, **{**kwargs, "standalone_mode": False})
        except click.NoArgsIsHelpError as err:  # rich has printed the help already
            if err.format_message().strip():  # (without rich, the help is the message)
                typer.echo(err.format_message())
            sys.exit(err.exit_code)
        except click.UsageError as err:
            where = f"{err.ctx.command_path}: " if err.ctx is not None else ""
            print_error(InputError(f"{where}{err.format_message()}"))
            sys.exit(2)
        except click.ClickException as err:
            err.show()
            sys.exit(err.exit_code)
        except typer.Abort:
            err_console.print("Aborted.", highlight=False)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(cls=_Commands, help="flowtopo: topology-based translation between neural "
                  "networks' latent spaces (sweeps, priors, density trees, matching, translation).",
                  no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)


def _print_version(value: bool) -> None:
    if value:
        from flowtopo._version import __version__

        print(f"flowtopo {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Topology-based translation between neural networks' latent spaces."""


data_app = typer.Typer(help="Datasets: list them, show one.", no_args_is_help=True)
app.add_typer(data_app, name="data")
priors_app = typer.Typer(help="Prior families: list them, draw one.", no_args_is_help=True)
app.add_typer(priors_app, name="priors")
topology_app = typer.Typer(help="Density trees of latent distributions.", no_args_is_help=True)
app.add_typer(topology_app, name="topology")
translate_app = typer.Typer(help="Translate one network's embeddings into another's, without "
                            "paired data.", no_args_is_help=True)
app.add_typer(translate_app, name="translate")
sweep_app = typer.Typer(help="Sweeps on Ray Tune + Optuna, recorded in MLflow.",
                        no_args_is_help=True)
app.add_typer(sweep_app, name="sweep")


def parse_options(pairs: list[str] | None) -> dict[str, object]:
    """Parse ``KEY=VALUE`` pairs; values are read as YAML scalars/lists (safe_load)."""
    import yaml

    out: dict[str, object] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"option {pair!r} is not KEY=VALUE")
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise InputError(f"option {key}: cannot read value {value!r}") from None
    return out


OptionList = Annotated[
    list[str] | None, typer.Option("--option", "-o", help="Loader option KEY=VALUE (repeatable).")
]


@data_app.command("list")
def data_list() -> None:
    """List the registered datasets."""
    from flowtopo.data import DATASETS

    table = Table("name", "description")
    for name, fn in DATASETS.items():
        summary = (fn.__doc__ or "").strip().split(" Returns")[0].splitlines()[0]
        table.add_row(name, summary)
    table.add_row("PATH.npy|.npz|.csv", "User data from a file (npz: arrays x, optional y).")
    console.print(table)


@data_app.command("show")
def data_show(
    name: Annotated[str, typer.Argument(help="Registered name or file path.")],
    option: OptionList = None,
    plot: Annotated[Path | None, typer.Option(help="Write a PNG picture here.")] = None,
) -> None:
    """Show a dataset's shape, labels and ground truth; optionally write a picture."""
    from flowtopo.data import load_dataset

    ds = load_dataset(name, **parse_options(option))
    table = Table("field", "value", title=f"dataset {ds.name}")
    table.add_row("train", str(ds.x_train.shape))
    table.add_row("test", str(ds.x_test.shape))
    n_classes = "none" if ds.y_train is None else f"{len(set(ds.y_train.tolist()))} classes"
    table.add_row("labels", n_classes)
    table.add_row("exact density", "yes" if ds.raw_log_density else "no")
    if ds.raw_log_density is not None:
        table.add_row("exact test NLL", f"{ds.true_nll_per_dim():.4f} nats/dim")
    if ds.tree is not None:
        masses = [f"{ds.tree.nodes[n]['mass']:.2f}" for n in ds.tree if ds.tree.out_degree(n) == 0]
        n_nodes = ds.tree.number_of_nodes()
        table.add_row("ground-truth tree", f"{n_nodes} nodes, leaf masses {masses}")
    console.print(table)
    if plot is not None:
        from flowtopo.data.plot import plot_dataset

        console.print(f"picture: {plot_dataset(ds, plot)}")


@data_app.command("pair")
def data_pair(
    base: Annotated[str, typer.Argument(help="Base dataset with labels (name or file path).")],
    out: Annotated[Path, typer.Option(help="Folder for the .npy files and info.json.")],
    source: Annotated[str, typer.Option(help="Source network: KIND:WIDTHS:ACTIVATION, e.g. "
                                             "mlp:64:relu or cnn:8-16:relu.")] = "mlp:64:relu",
    target: Annotated[str, typer.Option(help="Target network, same form.")] = "mlp:96-32:tanh",
    seed_source: Annotated[int, typer.Option(help="Source network seed.")] = 0,
    seed_target: Annotated[int, typer.Option(help="Target network seed.")] = 1,
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs per network.")] = 60,
    option: OptionList = None,
) -> None:
    """Train two classifiers on BASE and write their hidden representations (a pair to translate).

    source.npy and target.npy are the fit rows (disjoint inputs: unpaired); test_source.npy and
    test_target.npy are both networks on the same test inputs (paired, for scoring only);
    paired_source.npy and paired_target.npy hold both on every training input, for supervised
    ceilings only.
    """
    from flowtopo.representations import representation_pair

    pair = representation_pair(base, source, target, seed_source=seed_source,
                               seed_target=seed_target, epochs=epochs,
                               base_options=parse_options(option))
    folder = pair.save(out)
    table = Table("side", "network", "test accuracy", "fit rows", "dims",
                  title=f"representation pair of {base}")
    for side, arr in (("source", pair.source), ("target", pair.target)):
        info = pair.info[side]
        table.add_row(side, info["network"], f"{info['test_accuracy']:.3f}", str(len(arr)),
                      str(arr.shape[1]))
    console.print(table)
    console.print(f"paired test rows: {len(pair.test_source)}; written to {folder}")


def _read_embeddings(path: Path) -> np.ndarray:
    from flowtopo.data import read_array_file

    return read_array_file(str(path))[0]


def _side_from(ref: str | None, tracking_uri: str | None) -> Any:
    """A translation side from a folder, or a FlowAE checkpoint of an MLflow run id."""
    if ref is None:
        return None
    import tempfile

    from flowtopo.translate import Side

    if Path(ref).is_dir():
        return Side.load(Path(ref))
    from flowtopo.runtime import fetch_checkpoint
    from flowtopo.tracking import resolve_tracking_uri

    tmp = Path(tempfile.mkdtemp(prefix="flowtopo-side-"))
    fetch_checkpoint(resolve_tracking_uri(tracking_uri), ref, tmp)
    return Side.load(tmp / "checkpoint")


@translate_app.command("fit")
def translate_fit(
    source: Annotated[Path, typer.Option(help="Source embeddings (.npy/.npz/.csv), (n, d_s).")],
    target: Annotated[Path, typer.Option(help="Target embeddings, (m, d_t); rows unrelated "
                                              "to the source's.")],
    out: Annotated[Path, typer.Option(help="Folder to write the translation to.")],
    encoder: Annotated[Encoder | None, typer.Option(help="pca (linear, default) or flowae (a "
                                                     "trained flow auto-encoder).")] = None,
    k: Annotated[int | None, typer.Option(help="Latent dimension per side (default: 8, 6, 4 "
                                                  "tried in turn, first map passing).")] = None,
    pca: Annotated[int | None, typer.Option(help="Principal components kept per side.")] = None,
    epochs: Annotated[int | None, typer.Option(help="FlowAE training epochs.")] = None,
    transform: Annotated[Transform | None, typer.Option(help="Latent map (default "
                                                             "piecewise).")] = None,
    density: Annotated[Density | None, typer.Option(help="flowae: the trees' density.")
                       ] = None,
    min_persistence: Annotated[float | None, typer.Option(help="Tree merge threshold "
                                                               "(nats).")] = None,
    source_model: Annotated[str | None, typer.Option(help="Use this trained side (a folder "
                                                          "or an MLflow run id).")] = None,
    target_model: Annotated[str | None, typer.Option(help="Likewise for the target.")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow URI for run ids.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seeds training and matching.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Fit a translation from SOURCE embeddings to TARGET embeddings (no paired rows needed).

    Unset options take the library's defaults (flowtopo.translate.TranslateConfig).
    """
    from pydantic import ValidationError

    from flowtopo.translate import TranslateConfig, fit_translation

    given = {"encoder": encoder, "k": k, "pca": pca, "epochs": epochs, "transform": transform,
             "density": density, "min_persistence": min_persistence, "seed": seed}
    try:
        cfg = TranslateConfig(**{key: v for key, v in given.items() if v is not None})
    except ValidationError as err:
        e = err.errors()[0]
        raise InputError(f"--{str(e['loc'][0]).replace('_', '-')}: {e['msg']}") from None
    tr = fit_translation(_read_embeddings(source), _read_embeddings(target), cfg,
                         source_side=_side_from(source_model, tracking_uri),
                         target_side=_side_from(target_model, tracking_uri))
    folder = tr.save(out)
    summ = tr.summary()
    if as_json:
        print_json({**summ, "out": str(folder)})
    else:
        table = Table("field", "value", title=f"translation {source.name} -> {target.name}")
        table.add_row("dims", f"{summ['source_dim']} -> {summ['target_dim']} (latent k "
                      f"{summ['k'][0]} -> {summ['k'][1]})")
        table.add_row("encoders", " / ".join(
            side["encoder"] + (f" ({side['prior']['name']} prior)" if "prior" in side else "")
            for side in (summ["source"], summ["target"])))
        table.add_row("modes", "-" if summ["modes"] is None else
                      f"{summ['modes'][0]} / {summ['modes'][1]}, "
                      f"{len(summ['leaf_correspondence'])} matched")
        table.add_row("fit KL (affine part)", "-" if summ["fit_kl"] is None else
                      f"{summ['fit_kl']:.3f} nats")
        fc = summ["fit_check"]
        table.add_row("two-sample excess", "-" if fc is None else f"{fc['excess']:.3f}")
        table.add_row("leaf round trip", "-" if summ["round_trip"] is None else
                      f"{summ['round_trip']:.2f}")
        table.add_row("confirmed at another k", "-" if summ["confirmation"] is None else
                      f"{summ['confirmation']:.2f}")
        console.print(table)
        console.print(f"written to {folder}")
    if tr.poor_fit:
        err_console.print(f"POOR FIT: do not trust this translation ({tr.fit_reason})",
                          markup=False, highlight=False)


@translate_app.command("apply")
def translate_apply(
    translation: Annotated[Path, typer.Argument(help="A folder written by 'translate fit'.")],
    embeddings: Annotated[Path, typer.Argument(help="Source embeddings to translate.")],
    out: Annotated[Path, typer.Option(help="Write the translated embeddings (.npy) here.")],
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out file.")] = False,
) -> None:
    """Translate source embeddings into the target network's space."""
    from flowtopo.translate import Translation

    if out.exists() and not overwrite:
        raise InputError(f"{out} exists; pass --overwrite to replace it")
    if out.suffix != ".npy":
        raise InputError(f"--out must end in .npy, got {out.name!r}")
    tr = Translation.load(translation)
    y = tr.transform(_read_embeddings(embeddings))
    np.save(out, y, allow_pickle=False)
    console.print(f"{len(y)} rows -> {out} (dims {y.shape[1]})")
    if tr.poor_fit:
        err_console.print(f"POOR FIT: this translation was flagged ({tr.fit_reason})",
                          markup=False, highlight=False)


@priors_app.command("list")
def priors_list() -> None:
    """List the prior families and the latent dims they allow."""
    from flowtopo.priors import PRIORS

    table = Table("family", "k", "description")
    for name, cls in PRIORS.items():
        ks = f">= {cls.min_k}" if cls.max_k is None else f"{cls.min_k}..{cls.max_k}"
        table.add_row(name, ks, (cls.__doc__ or "").strip().splitlines()[0])
    console.print(table)


@priors_app.command("best")
def priors_best(
    experiment: Annotated[str, typer.Option(help="MLflow experiment of the sweep.")],
    metric: Annotated[str, typer.Option(help="Explicit summary metric to rank by.")] = (
        "best_adv_loss"),
    top: Annotated[int, typer.Option(help="Runs shown per group.")] = 3,
    by: Annotated[GroupBy, typer.Option(help="Group by family or dataset.")] = "family",
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    reproducibility: Annotated[bool, typer.Option(
        "--reproducibility", help="Also measure each group's tree reproducibility across its "
        "runs (leaf ARI, symmetric KL; recorded in MLflow) and rank groups by fit AND "
        "reproducibility.")] = False,
    register: Annotated[bool, typer.Option(
        "--register", help="Register each group's best run as an MLflow model "
        "(flowtopo-EXPERIMENT-GROUP) and point --alias at it; load it as "
        "models:/NAME@ALIAS.")] = False,
    alias: Annotated[str, typer.Option(help="Alias set by --register.")] = "best",
) -> None:
    """Rank a sweep's prior families by held-out fit (finished runs only)."""
    from flowtopo.pipeline.best import (
        SHOWN,
        best_priors,
        measure_reproducibility,
        rank_families,
        register_best,
    )

    rows = best_priors(experiment, tracking_uri=tracking_uri, metric=metric, top=top, by=by)
    if not rows:
        raise InputError(f"experiment {experiment!r} has no finished trial runs with metric "
                         f"{metric!r}")
    families = None
    if reproducibility:
        rows = measure_reproducibility(rows, tracking_uri=tracking_uri)
        families = rank_families(rows, metric)
    registered = (register_best(rows, experiment, tracking_uri=tracking_uri, alias=alias)
                  if register else None)
    if as_json:
        if families is None and registered is None:
            print_json(rows)
        else:
            print_json({"runs": rows, "groups": families, "registered": registered})
        return
    table = Table(by, "rank", *SHOWN, "seed", title=f"best priors in {experiment!r} "
                  f"(ranked by {metric}, lower is better)")
    table.add_column("run id", overflow="fold", min_width=32)  # ids must stay copyable
    for r in rows:
        table.add_row(str(r["group"]), str(r["rank"]), *(f"{r[m]:.4f}" if r[m] is not None
                                                         else "-" for m in SHOWN),
                      str(r["seed"]), r["run_id"])
    console.print(table)
    if families is not None:
        ranked = Table(by, "runs", f"mean {metric}", "leaf ARI across seeds",
                       "sym KL (nats/dim)", title="ranked by fit AND reproducibility (a tree "
                       "that changes with the seed is not the data's)")
        for f in families:
            ranked.add_row(str(f["group"]), str(f["runs"]), f"{f['fit']:.4f}",
                           "-" if f["leaf_ari"] != f["leaf_ari"] else f"{f['leaf_ari']:.3f}",
                           "-" if f["sym_kl"] != f["sym_kl"] else f"{f['sym_kl']:.3f}")
        console.print(ranked)
    for reg in registered or []:
        console.print(f"models:/{reg['model']}@{reg['alias']} -> version {reg['version']} "
                      f"(run {reg['run_id']}{'' if reg['created'] else ', already registered'})",
                      soft_wrap=True, highlight=False)


@app.command("match")
def match_cmd(
    experiment: Annotated[str | None, typer.Option(help="MLflow experiment of the sweep: "
                                                        "match its models pairwise.")] = None,
    runs: Annotated[list[str] | None, typer.Option("--runs", help="Run ids to match "
                                                   "(repeatable); default: the best family's "
                                                   "best runs.")] = None,
    top: Annotated[int, typer.Option(help="Models of the best family to match.")] = 2,
    family: Annotated[str | None, typer.Option(help="Match this family's best runs.")] = None,
    method: Annotated[Method, typer.Option(help="Alignment method.")] = "tree",
    transform: Annotated[Transform, typer.Option(help="Family of the latent map.")] = "affine",
    baselines: Annotated[str, typer.Option(help="Comma-separated unsupervised baselines to "
                                                "score beside it (e.g. gw,cluster_qap).")] = "",
    metric: Annotated[str, typer.Option(help="Summary metric choosing the best runs.")] = (
        "best_adv_loss"),
    address: Annotated[str | None, typer.Option(help="Ray address (default: local Ray).")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI.")] = None,
    json_out: Annotated[Path | None, typer.Option(help="Write the scores as JSON here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the same JSON on stdout "
                                          "instead of the tables (progress goes to "
                                          "stderr).")] = False,
    seed: Annotated[int, typer.Option(help="Seeds the halves and every random choice.")] = 0,
    strategy: Annotated[Strategy, typer.Option(help="all-pairs: align every ordered pair; hub: "
                                               "align each model to the best one and compose "
                                               "the rest (n - 1 alignments; affine).")] = (
        "all-pairs"),
    source: Annotated[str | None, typer.Option(help="EXPERIMENT[:RUN]: match this model to "
                                                    "--target's, trained on other data "
                                                    "(default run: the best).")] = None,
    target: Annotated[str | None, typer.Option(help="EXPERIMENT[:RUN] of the target "
                                                    "model.")] = None,
    test_source: Annotated[Path | None, typer.Option(help="Paired test embeddings of the "
                                                          "source's data (scores a cross "
                                                          "match).")] = None,
    test_target: Annotated[Path | None, typer.Option(help="The same inputs' target "
                                                          "embeddings.")] = None,
    test_labels: Annotated[Path | None, typer.Option(help="Their labels (label "
                                                          "transfer).")] = None,
) -> None:
    """Align a sweep's models pairwise, or two models of different data (--source, --target).

    One Ray task per ordered pair; the maps, fit checks and scores go to MLflow.
    """
    from flowtopo.pipeline.match import MatchConfig, run_match

    cfg = MatchConfig(experiment=experiment, runs=runs, top=top, family=family, metric=metric,
                      strategy=strategy,
                      method=method, transform=transform,
                      baselines=[b.strip() for b in baselines.split(",") if b.strip()],
                      seed=seed, address=address, tracking_uri=tracking_uri, json_out=json_out,
                      source=source, target=target, test_source=test_source,
                      test_target=test_target, test_labels=test_labels)
    with stdout_to_stderr(as_json):
        summary = run_match(cfg, log=err_console.print if as_json else console.print)
    if as_json:
        print_json(summary.to_json())
    else:
        print_match(summary)


def print_match(summary: MatchSummary) -> None:
    """The pairwise scores as rich tables."""
    methods = list(summary.mean_r2)
    table = Table("source", "target", *(f"{m} R²" for m in methods), "top-1", "fit check",
                  title=f"pairwise translation, paired test split (match run "
                        f"{summary.parent_run_id})")
    for row in summary.pairs:
        sc = row.scores
        r2s = [f"{sc[m]['r2']:.3f}" if m in sc else "-" for m in methods]
        top1 = sc.get(summary.method, {}).get("top1")
        check = row.error or (f"POOR FIT: {row.fit_reason}" if row.poor_fit else "passes")
        target = row.target_name + (f" (via {row.composed_via})" if row.composed_via else "")
        table.add_row(row.source_name, target, *r2s,
                      "-" if top1 is None else f"{top1:.3f}", check)
    console.print(table)
    if summary.hub:
        console.print(f"{summary.alignments} alignments to the hub {summary.hub}; the "
                      "other pairs composed through it (their cycles are the identity by "
                      "construction: not measured)", soft_wrap=True, highlight=False)
    for cyc in summary.cycles:
        console.print(f"cycle {' -> '.join(cyc.cycle)}: error {cyc.error:.4f}")


@app.command("report")
def report_cmd(
    experiment: Annotated[str, typer.Option(help="MLflow experiment of the sweep.")],
    out: Annotated[Path, typer.Option(help="Folder for index.html and its pictures.")],
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI.")] = None,
) -> None:
    """Write a static HTML report: families, curves, matches, trees and what their nodes hold."""
    from flowtopo.pipeline.report import build_report

    page = build_report(experiment, out, tracking_uri=tracking_uri)
    console.print(f"report: {page.resolve()} (open it in a browser; no server needed)")


@priors_app.command("plot")
def priors_plot(
    family: Annotated[str, typer.Argument(help="Prior family name.")],
    out: Annotated[Path, typer.Option(help="PNG file to write.")],
    k: Annotated[int, typer.Option(help="Latent dimension.")] = 2,
    param: Annotated[list[str] | None, typer.Option("--param", "-p",
                                                    help="Family parameter KEY=VALUE.")] = None,
) -> None:
    """Draw a prior's density contours and samples."""
    from flowtopo.priors import build_prior
    from flowtopo.priors.plot import plot_prior

    prior = build_prior({"name": family, "k": k, "params": parse_options(param)})
    console.print(f"picture: {plot_prior(prior, out)}")


@app.command("train")
def train_cmd(
    config: Annotated[Path, typer.Argument(help="Training YAML (see docs/sweep-yaml.md).")],
    out: Annotated[Path | None, typer.Option(help="Checkpoint directory (overrides YAML).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Override train.epochs.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace the checkpoint files in a non-empty "
                                                 "out folder.")] = False,
) -> None:
    """Train one flow auto-encoder without Ray; write its checkpoint directory."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from flowtopo.train_job import check_out, run_train_spec
    from flowtopo.train_spec import TrainSpec
    from flowtopo.yaml_io import load_spec, override

    spec = load_spec(config, TrainSpec)
    changes = {"out": None if out is None else str(out), "train.epochs": epochs}
    spec = override(spec, {k: v for k, v in changes.items() if v is not None})
    check_out(spec.out, overwrite)  # before the data is even loaded
    bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[m]}"),
                   TimeElapsedColumn(), console=console)
    task = bar.add_task("training", total=spec.train.epochs, m="")

    def show(epoch: int, m: dict[str, float]) -> None:
        bar.start()  # at the first epoch: a bad spec is one line, with no bar before it
        bar.update(task, completed=epoch, m=f"nll {m['val_nll']:.3f}  adv "
                   f"{m['val_adv_loss']:.3f}  c2st {m['val_c2st']:.2f}  recon "
                   f"{m['val_recon']:.3f}")

    try:
        job = run_train_spec(spec, on_epoch=show, overwrite=overwrite)
    finally:
        bar.stop()
    table = Table("metric", "value", title=f"best epoch {job.result.best_epoch}")
    for key, v in job.result.test.items():
        table.add_row(key, f"{v:.4f}")
    console.print(table)
    if job.dataset.raw_log_density is not None:
        console.print(f"exact test NLL of the data: {job.dataset.true_nll_per_dim():.4f} nats/dim")
    console.print(f"checkpoint: {job.checkpoint}" + (f"  mlflow run: {job.run_id}"
                                                     if job.run_id else ""))


@topology_app.command("plot")
def topology_plot(
    out: Annotated[Path, typer.Option(help="PNG file to write.")],
    prior: Annotated[str | None, typer.Option(help="Sample this prior family.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Use this dataset's ground-truth latent "
                                                     "(or its data when it has none).")] = None,
    k: Annotated[int, typer.Option(help="Latent dim (with --prior).")] = 2,
    n: Annotated[int, typer.Option(help="Points (with --prior).")] = 4000,
    option: OptionList = None,
    min_persistence: Annotated[float, typer.Option(help="Nats.")] = 2.0,
    min_mass: float = 0.01,
    loops: Annotated[bool, typer.Option(help="Count 1-dim holes per node (gudhi).")] = False,
    json_out: Annotated[Path | None, typer.Option(help="Also write the tree as JSON.")] = None,
    seed: int = 0,
) -> None:
    """Build a density tree and draw it: basins with contours, dendrogram, diagram."""
    from flowtopo.topology import annotate_homology, density_tree
    from flowtopo.topology.plot import plot_tree

    if (prior is None) == (dataset is None):
        raise InputError("give exactly one of --prior FAMILY or --dataset NAME")
    opts = parse_options(option)
    if prior is not None:
        import torch

        from flowtopo.priors import build_prior

        torch.manual_seed(seed)
        p = build_prior({"name": prior, "k": k, "params": opts})
        with torch.no_grad():
            points = p().sample((n,)).double().numpy()
        log_density = p.numpy_log_prob
    else:
        from flowtopo.data import load_dataset

        ds = load_dataset(dataset, **opts)  # type: ignore[arg-type]
        if ds.latent_test is not None and ds.tree is not None:
            gen = ds.info.get("generator")
            points = ds.latent_test.astype(np.float64)
            log_density = gen.mixture.log_prob if gen is not None else None  # type: ignore
        else:
            points = ds.x_test.astype(np.float64)
            log_density = ds.log_density if ds.raw_log_density is not None else None
    tree = density_tree(points, log_density, min_persistence=min_persistence, min_mass=min_mass)
    if loops:
        annotate_homology(tree, points)
    console.print(tree.pretty())
    console.print(f"picture: {plot_tree(tree, points, out, log_density)}")
    if json_out is not None:
        json_out.write_text(tree.to_json())
        console.print(f"tree JSON: {json_out}")


@app.command("demo")
def demo_cmd(
    out: Annotated[Path, typer.Option(help="Where models, pictures, summary go.")] = Path(
        "flowtopo-runs/demo"),
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs per model.")] = 60,
    n: Annotated[int, typer.Option(min=100, help="Dataset size.")] = 5000,
    families: Annotated[str, typer.Option(help="Comma-separated prior families.")] = (
        "gmm,hierarchical_gmm,flow_prior"),
    regularizer: Annotated[RegularizerChoice, typer.Option(help="Latent regulariser.")] = "mle",
    quick: Annotated[bool, typer.Option(help="Tiny budget (smoke test): 8 epochs, n=2000, "
                                             "no baselines.")] = False,
) -> None:
    """The main job: a sweep over prior families, best priors, pairwise matching, report."""
    from flowtopo.pipeline.demo import DemoConfig, run_demo

    cfg = DemoConfig(families=[f.strip() for f in families.split(",") if f.strip()],
                     epochs=epochs, n=n, regularizer=regularizer, out=out)
    if quick:
        cfg.epochs, cfg.n, cfg.baselines = 8, 2000, []
    from flowtopo.train_config import REGULARIZERS

    if regularizer not in REGULARIZERS:
        raise InputError(f"unknown regularizer {regularizer!r}; valid: {', '.join(REGULARIZERS)}")
    summary = run_demo(cfg, log=console.print)
    table = Table("family", "adversarial loss", "NLL (nats/dim)", "c2st", title="prior families "
                  "(held-out, mean over seeds; lower adversarial loss is better)")
    for r in summary.ranking:
        table.add_row(r.family, f"{r.adv_loss:.3f}", f"{r.nll:.3f}", f"{r.c2st:.2f}")
    console.print(table)
    scores = Table("method", "R²", "top-1", "MRR", "label transfer",
                   title=f"translation between the two {summary.best_family} models "
                         "(paired test split)")
    for method, sc in summary.scores.items():
        name = method + (" (supervised upper bound)" if method == "oracle" else "")
        scores.add_row(name, f"{sc['r2']:.3f}", f"{sc['top1']:.3f}", f"{sc['mrr']:.3f}",
                       f"{sc.get('label_transfer', float('nan')):.3f}")
    console.print(scores)
    console.print(demo_headline(summary.scores, summary.tree), highlight=False, markup=False)
    console.print(f"report: {summary.report}", highlight=False, markup=False)
    console.print(f"outputs: {summary.out} ({summary.seconds:.0f} s)", highlight=False,
                  markup=False)


def demo_headline(scores: dict[str, dict[str, float]], info: Any) -> str:
    """The demo's one-line conclusion; it says what the fit check says.

    Args:
        scores: method -> scores on the paired test rows (`DemoSummary.scores`).
        info: what tree matching did (`flowtopo.pipeline.demo.TreeOutcome`).

    """
    tree, oracle = scores.get("tree"), scores.get("oracle")
    if tree is None or oracle is None:
        return f"headline: tree matching failed: {info.error or 'no scores'}"
    text = (f"tree matching R² {tree['r2']:.3f} vs oracle R² {oracle['r2']:.3f} "
            "(no paired data used by tree matching)")
    if info.poor_fit:
        return (f"headline: the map is FLAGGED as a poor fit ({info.fit_reason}), so the "
                f"scores do not make it trustworthy; {text}")
    return f"headline: {text}; the fit checks pass"


def _check_trials(file: Path, spec: Any) -> None:
    """`flowtopo.sweep.space.check_trials`, its error naming the YAML file."""
    from flowtopo.sweep.space import check_trials

    try:
        check_trials(spec)
    except InputError as err:
        raise InputError(f"{file}: {err}") from None


@sweep_app.command("validate")
def sweep_validate(
    file: Annotated[Path, typer.Argument(help="Sweep YAML.")],
    samples: Annotated[int, typer.Option(help="Configurations to draw (dry run).")] = 3,
) -> None:
    """Check a sweep YAML and print a few configurations drawn from its search space."""
    from flowtopo.sweep.space import check_grid, sample_configs, trial_budget
    from flowtopo.sweep.spec import SweepSpec
    from flowtopo.yaml_io import load_spec

    spec = load_spec(file, SweepSpec)
    _check_trials(file, spec)  # dataset, every family's config and model, as a trial builds them
    grid = check_grid(spec)
    if grid:
        console.print(f"grid sampler: {grid} grid points")
    console.print(f"[green]valid[/green]: sweep {spec.name!r} on {spec.dataset.name}, "
                  f"{trial_budget(spec)} trials x families {list(spec.search.priors)}, "
                  f"{spec.seeds} seeds per family's best, metric {spec.metric} ({spec.mode})")
    for i, cfg in enumerate(sample_configs(spec, samples, seed=spec.seed), 1):
        console.print(f"sample {i}: {json.dumps(cfg)}", soft_wrap=True, highlight=False)


def sweep_summary(res: Any) -> dict[str, Any]:
    """The ``sweep run --json`` object: what a script needs to find the sweep's results."""
    best = res.best or {}
    return {"sweep_id": res.sweep_id, "experiment": res.experiment,
            "tracking_uri": res.tracking_uri, "storage_path": res.storage_path,
            "parent_run_id": res.parent_run_id, "trials": res.trials, "failed": res.failed,
            "interrupted": res.interrupted, "failures": list(res.failures),
            "optuna": {"study": res.optuna_study, "storage": res.optuna_storage},
            "best": {"metric": best.get("metric"), "value": best.get("value"),
                     "family": (best.get("config") or {}).get("prior"),
                     "run_id": best.get("mlflow_run_id")} if best else None}


@contextlib.contextmanager
def sweep_bar(title: str, total: int | None, metric: str, mode: str,
              as_json: bool) -> Iterator[Any]:
    """A progress bar for a sweep's trials, and the callbacks that move it.

    Yields the callbacks to hand the sweep. Callbacks a resume restores from the sweep's
    pickled state update the same bar (`flowtopo.sweep.progress.showing`).
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from flowtopo.sweep.progress import RichProgress, SweepDisplay, showing

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                  TimeElapsedColumn(), console=err_console if as_json else console) as bar, \
            stdout_to_stderr(as_json):
        display = SweepDisplay(bar, bar.add_task(title, total=total, info=""), metric, mode)
        with showing(display):
            yield [RichProgress(display)]


def sweep_outcome(res: Any, as_json: bool) -> None:
    """Print what a sweep run or resume did; exit 130 when stopped, 1/2 when no trial finished.

    A stopped sweep prints the command that continues it; a failed trial one line with its
    reason; ``as_json`` the summary object (`sweep_summary`) on stdout, and nothing else there.
    """
    if as_json:
        print_json(sweep_summary(res))
    if res.interrupted:
        (err_console if as_json else console).print(
            f"sweep {res.sweep_id} interrupted; continue with: flowtopo sweep resume "
            f"{res.storage_path}", soft_wrap=True, highlight=False)
        raise typer.Exit(130)
    for line in res.failures:  # one line per failed trial, with its reason
        err_console.print(Text.assemble(("failed trial ", "red"), line), soft_wrap=True,
                          highlight=False)
    if not as_json:
        table = Table("field", "value", title=f"sweep {res.sweep_id}")
        table.add_row("trials (search + seeds)", str(res.trials))
        table.add_row("failed", str(res.failed))
        if res.best:
            table.add_row(f"best {res.best['metric']}", f"{res.best['value']:.4f}")
            table.add_row("best family", str(res.best["config"].get("prior")))
            table.add_row("best run", str(res.best.get("mlflow_run_id")))
        table.add_row("MLflow", f"{res.tracking_uri} (experiment {res.experiment!r})")
        table.add_row("Ray Tune results", res.storage_path)
        console.print(table)
    if res.all_failed:  # the sweep produced nothing: a failure, 2 when the input was to blame
        if not as_json:
            err_console.print(Text.assemble(("error:", "red"), f" no trial of sweep "
                                            f"{res.sweep_id} finished ({res.failed} failed)"),
                              soft_wrap=True)
        raise typer.Exit(2 if res.user_errors_only else 1)


JsonSummaryOption = Annotated[bool, typer.Option(
    "--json", help="Print the summary as one JSON object on stdout (the progress bar goes to "
    "stderr; schema: docs/sweep-yaml.md).")]


@sweep_app.command("run")
def sweep_run(
    file: Annotated[Path, typer.Argument(help="Sweep YAML.")],
    address: Annotated[str | None, typer.Option(help="Ray address (default: local Ray).")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI.")] = None,
    storage: Annotated[str | None, typer.Option(help="Ray Tune results: a folder, or a URI "
                                                     "(s3://BUCKET/PREFIX, gs://..., file://)."
                                                )] = None,
    as_json: JsonSummaryOption = False,
) -> None:
    """Run a sweep to the end (local Ray by default, sqlite MLflow under ./flowtopo-runs)."""
    from flowtopo.sweep.runner import run_sweep
    from flowtopo.sweep.space import trial_budget
    from flowtopo.sweep.spec import SweepSpec
    from flowtopo.yaml_io import load_spec

    spec = load_spec(file, SweepSpec)
    _check_trials(file, spec)  # a spec no trial could run fails here, before Ray starts
    total = trial_budget(spec)  # also the grid check: a bad grid fails before Ray starts
    with sweep_bar(f"sweep {spec.name}", total, spec.metric, spec.mode, as_json) as callbacks:
        res = run_sweep(spec, address=address, tracking_uri=tracking_uri, storage_path=storage,
                        callbacks=callbacks, yaml_text=file.read_text())
    sweep_outcome(res, as_json)


AddressOption = Annotated[str, typer.Option(
    help="Ray dashboard address, http://HEAD:8265 (default: RAY_ADDRESS, as Ray's own job CLI "
    "reads it, then RAY_DASHBOARD_ADDRESS).", envvar=["RAY_ADDRESS", "RAY_DASHBOARD_ADDRESS"],
    show_envvar=False)]
TokenOption = Annotated[str | None, typer.Option(help="Ray auth token (default: RAY_AUTH_TOKEN, "
                                                      "RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token).")]


@sweep_app.command("submit")
def sweep_submit(
    file: Annotated[Path, typer.Argument(help="Sweep YAML.")],
    address: AddressOption,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI.")] = None,
    storage: Annotated[str | None, typer.Option(help="Ray Tune results folder on the "
                                                     "cluster (shared storage).")] = None,
    token: TokenOption = None,
    job_user: Annotated[str | None, typer.Option(
        help="The cluster's MLflow job user, granted EDIT on the sweep's experiment (default: "
        "FLOWTOPO_MLFLOW_JOB_USER). No credentials travel with the job.")] = None,
) -> None:
    """Submit a sweep to a Ray cluster as a Ray Job; print its submission id."""
    from flowtopo.sweep import jobs

    console.print(jobs.submit(file, address, tracking_uri=tracking_uri, storage=storage,
                              token=token, job_user=job_user))


@sweep_app.command("job-user")
def sweep_job_user(
    out: Annotated[Path, typer.Option(help="Where the job user's credentials go (created mode "
                                           "600; the nodes' $FLOWTOPO_MLFLOW_CREDENTIALS).")],
    tracking_uri: Annotated[str | None, typer.Option(help="The MLflow server (default: "
                                                          "MLFLOW_TRACKING_URI).")] = None,
    user: Annotated[str, typer.Option(help="The job user's name.")] = "flowtopo-jobs",
) -> None:
    """Create the cluster's non-admin MLflow job user (run as an MLflow admin).

    Its random password is written to OUT only. Sweeps submitted with FLOWTOPO_MLFLOW_JOB_USER
    set grant it EDIT on their experiment; the nodes read OUT (docs/cluster.md).
    """
    from flowtopo.mlflow_auth import create_job_user
    from flowtopo.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    if not uri.startswith(("http://", "https://")):
        raise InputError(f"--tracking-uri {uri}: a job user lives on an MLflow server "
                         "(http:// or https://)")
    create_job_user(uri, out, user)
    console.print(f"MLflow job user {user!r}: credentials in {out} (mode 600)", soft_wrap=True,
                  highlight=False, markup=False)


@sweep_app.command("status")
def sweep_status(job_id: str, address: AddressOption, token: TokenOption = None,
                 as_json: Annotated[bool, typer.Option(
                     "--json", help='Print {"job_id": ..., "status": ...}.')] = False) -> None:
    """Print a submitted sweep's status (PENDING, RUNNING, STOPPED, SUCCEEDED, FAILED)."""
    from flowtopo.sweep import jobs

    state = jobs.status(job_id, address, token)
    if as_json:
        print_json({"job_id": job_id, "status": state})
    else:
        console.print(state)


@sweep_app.command("logs")
def sweep_logs(job_id: str, address: AddressOption, token: TokenOption = None,
               follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing "
                                                    "until the job ends.")] = False) -> None:
    """Print a submitted sweep's logs."""
    from flowtopo.sweep import jobs

    if follow:
        jobs.follow_logs(job_id, address, token)
    else:
        sys.stdout.write(jobs.logs(job_id, address, token))


@sweep_app.command("stop")
def sweep_stop(job_id: str, address: AddressOption, token: TokenOption = None) -> None:
    """Stop a submitted sweep (SIGINT: Ray Tune saves state for `sweep resume`)."""
    from flowtopo.sweep import jobs

    console.print("stopping" if jobs.stop(job_id, address, token) else "not running")


@sweep_app.command("resume")
def sweep_resume(
    path: Annotated[str, typer.Argument(help="The sweep's Ray Tune folder (STORAGE/SWEEP_ID): "
                                             "a path or a URI such as s3://BUCKET/PREFIX/ID.")],
    address: Annotated[str | None, typer.Option(help="Ray address (host:port) of a cluster "
                                                     "(default: the YAML's, else local Ray).")
                       ] = None,
    as_json: JsonSummaryOption = False,
) -> None:
    """Continue an interrupted sweep; finished trials are not rerun.

    Ends as `sweep run` does: the summary, exit 130 and the resume command when stopped
    again, 1 (2: the input's fault) when no trial finished.
    """
    from flowtopo.sweep.runner import read_sweep, resume_sweep

    spec, _ = read_sweep(path)  # a folder that is not a signed sweep fails here
    # the bar counts the trials this resume runs (the search's remaining, then the seeds)
    with sweep_bar(f"resume {spec.name}", None, spec.metric, spec.mode, as_json) as callbacks:
        res = resume_sweep(path, address=address, callbacks=callbacks)
    if res.already_finished:
        if as_json:
            print_json({**sweep_summary(res), "already_finished": True})
        else:
            console.print(f"sweep {res.sweep_id} already finished ({res.trials} trials, "
                          f"{res.failed} failed): nothing to resume", soft_wrap=True,
                          highlight=False)
        return
    sweep_outcome(res, as_json)


def main() -> None:
    """Console-script entry point."""
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # keep output tidy
    if not sys.stdout.isatty() and "COLUMNS" not in os.environ:
        console.width = PIPED_WIDTH  # piped or redirected: ids and paths stay whole
    try:
        app()
    finally:
        exit_without_collecting()


def exit_without_collecting() -> None:
    """Let the interpreter's exit skip collecting the objects the command leaves behind.

    The exit's final garbage collections walk every object still alive: with MLflow imported
    (its modules and their objects) that is ~0.5 s of each command, ~1 s after a report at
    1,000 runs, spent after the answer is printed (benchmarks/sweep.py). ``gc.freeze`` moves
    them out of the collector's reach; the exit itself still runs (atexit handlers, buffers
    flushed, refcounted objects freed), only cycles still alive at exit are left to the OS.
    """
    import gc

    gc.freeze()


def _json_default(o: object) -> object:
    return str(o)


@contextlib.contextmanager
def stdout_to_stderr(active: bool = True) -> Iterator[None]:
    """While active, whatever is written to stdout goes to stderr, at the file-descriptor level.

    Ray writes to stdout on its own (Tune's tables when a trial errors, worker log lines), so
    a ``--json`` command runs its engines inside this and prints its one object after.
    """
    if not active:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 1)
        os.close(saved)


def print_json(obj: object) -> None:
    """Print ``obj`` as JSON on stdout (plain, for scripts)."""
    sys.stdout.write(json.dumps(obj, indent=2, default=_json_default) + "\n")


if __name__ == "__main__":
    main()
