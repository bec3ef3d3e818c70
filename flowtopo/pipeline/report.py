"""``flowtopo report``: a static HTML page (no server, no script) about a sweep and its matches.

Everything comes from MLflow: the trial runs' per-epoch curves and summary metrics, the latest
``flowtopo match`` run (pair runs, score matrix, cycles) and the matched models' checkpoints,
which are re-encoded here to draw each latent space with its density tree, the label
composition of every tree node and decoded exemplars of each leaf.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flowtopo.errors import InputError
from flowtopo.pipeline.best import TRIAL_FILTER

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>flowtopo report: {{ experiment }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td.l, th.l { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.3em 0; }
.note { color: #666; font-size: 0.9em; }
</style></head><body>
<h1>flowtopo report: {{ experiment }}</h1>
<p class="note">MLflow: {{ tracking_uri }} &middot; {{ n_trials }} trial runs
{%- if match %} &middot; match run {{ match.parent_run_id }}{% endif %}</p>

<h2>Prior families</h2>
<p>Held-out fit of each family's best runs (lower is better; a two-sample accuracy of 0.5 means
the latents are indistinguishable from the prior).</p>
<table id="families"><tr><th class="l">family</th><th>rank</th><th>adversarial loss</th>
<th>NLL (nats/dim)</th><th>c2st</th><th>seed</th><th class="l">run</th></tr>
{% for r in families %}<tr><td class="l">{{ r.group }}</td><td>{{ r.rank }}</td>
<td>{{ fmt(r.best_adv_loss) }}</td><td>{{ fmt(r.best_nll) }}</td><td>{{ fmt(r.best_c2st) }}</td>
<td>{{ r.seed }}</td><td class="l"><code>{{ r.run_id }}</code></td></tr>
{% endfor %}</table>
<img src="{{ img.families }}" alt="family comparison">
<h3>Winning hyper-parameters</h3>
<table id="winning"><tr><th class="l">family</th><th class="l">hyper-parameters of its best
run</th><th class="l">run</th></tr>
{% for w in winners %}<tr><td class="l">{{ w.family }}</td><td class="l">
{%- for k, v in w.params.items() %}{{ k }} = {{ v }}{{ "; " if not loop.last }}{% endfor %}</td>
<td class="l"><code>{{ w.run_id }}</code></td></tr>
{% endfor %}</table>

<h2>Training curves</h2>
<p class="note">Train (solid) and validation (dashed) per run, coloured by family; dots mark
each run's best epoch; dotted lines are the references (log 2, 0.5).
{%- if curves_per %} {{ n_curves }} of the {{ n_trials }} runs: the {{ curves_per }} best
finished runs of each family (smallest best_adv_loss).{% endif %}</p>
<img src="{{ img.curves }}" alt="loss curves">

<h2>Pairwise matching</h2>
{% if match %}
<p>Method <b>{{ match.method }}</b> ({{ match.transform }} map), scored on the paired held-out
split. The oracle is fitted on true pairs: the supervised upper bound.</p>
<table id="scores"><tr><th class="l">source</th><th class="l">target</th>
{% for m in methods %}<th>{{ m }} R²</th>{% endfor %}<th>top-1</th><th>MRR</th>
<th>label transfer</th><th title="symmetric KL between mapped source and target: ~0 for
a right map">fit KL</th><th class="l">note</th></tr>
{% for p in match.pairs %}<tr><td class="l">{{ p.source_name }}</td>
<td class="l">{{ p.target_name }}</td>
{% for m in methods %}<td>{{ fmt(p.scores.get(m, {}).get("r2")) }}</td>{% endfor %}
<td>{{ fmt(p.scores.get(match.method, {}).get("top1")) }}</td>
<td>{{ fmt(p.scores.get(match.method, {}).get("mrr")) }}</td>
<td>{{ fmt(p.scores.get(match.method, {}).get("label_transfer")) }}</td>
<td>{{ fmt(p.fit_kl) }}</td>
<td class="l">{{ p.error or (("POOR FIT: do not trust this map (" ~ p.fit_reason ~ ")")
  if p.poor_fit else "") }}
{{ "ambiguous: chosen by fit" if p.ambiguous else "" }}</td></tr>
{% endfor %}</table>
{% if match.warnings %}<ul id="warnings">{% for w in match.warnings %}<li>{{ w }}</li>
{% endfor %}</ul>{% endif %}
{% if match.cycles %}<table id="cycles"><tr><th class="l">cycle</th><th>error</th></tr>
{% for c in match.cycles %}<tr><td class="l">{{ c.cycle | join(" → ") }}</td>
<td>{{ fmt(c.error) }}</td></tr>{% endfor %}</table>{% endif %}
{% if img.matrix %}<img src="{{ img.matrix }}" alt="score matrix">{% endif %}
{% for p in match.pairs if p.picture_local %}<h3>{{ p.source_name }} → {{ p.target_name }}</h3>
<img src="{{ p.picture_local }}" alt="match {{ p.source_name }} to {{ p.target_name }}">
{% endfor %}
{% else %}<p>No match run in this experiment yet: run <code>flowtopo match --experiment
{{ experiment }}</code>.</p>{% endif %}

<h2>Models and their density trees</h2>
{% for m in models %}<h3>{{ m.name }}</h3>
<p class="note">run <code>{{ m.run_id }}</code>: {{ m.leaves }} modes, tree built on
{{ m.n }} held-out latents with the model's exact prior density.
{%- if m.labels %} A mode's colour is its main label's, the same in every model.{% endif %}</p>
<img src="{{ m.tree }}" alt="latent space and tree of {{ m.name }}">
{% if m.labels %}<img src="{{ m.labels }}" alt="label composition of {{ m.name }}">
<table><tr><th class="l">node</th><th>mass</th><th class="l">main labels</th></tr>
{% for row in m.nodes %}<tr><td class="l">{{ row.name }}</td><td>{{ fmt(row.mass) }}</td>
<td class="l">{{ row.labels }}</td></tr>{% endfor %}</table>{% endif %}
<img src="{{ m.exemplars }}" alt="decoded exemplars of {{ m.name }}">
{% endfor %}
</body></html>
"""


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "-"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def build_report(experiment: str, out: str | Path, *, tracking_uri: str | None = None,
                 max_curves: int = 60) -> Path:
    """Write ``out/index.html`` and its pictures under ``out/img``; return the HTML path.

    Raises:
        InputError: ``out`` is a file or cannot be created, unknown experiment, or no trial
            runs in it.

    """
    from flowtopo.pipeline.report_worker import ModelWorker

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; give a folder for index.html and its pictures")
    # the model sections' worker starts first: its imports overlap the queries below
    with ModelWorker() as worker, tempfile.TemporaryDirectory() as tmp:
        return _build(experiment, out, tracking_uri, max_curves, worker, Path(tmp))


def _build(experiment: str, out: Path, tracking_uri: str | None, max_curves: int,
           worker: Any, tmp: Path) -> Path:
    """`build_report`; ``worker`` (a `ModelWorker`) draws the models from checkpoints in ``tmp``.

    The models to draw are asked of MLflow first (`_section_runs`: two small queries) and sent
    to the worker before the one query that reads every trial run (~2.5 s at 1,000 runs), so
    the worker draws while this process reads. The ranking of that full list decides; where it
    chose other models than the small queries (ties, a metric missing), they are drawn here.
    The two pictures of the whole experiment are sent to the worker too, each as soon as what
    it shows is read: this process imports no matplotlib unless the worker is gone.
    """
    import jinja2

    from flowtopo.pipeline.best import rank_runs, trial_runs
    from flowtopo.pipeline.report_plots import CURVE_METRICS
    from flowtopo.tracking import find_experiment, mlflow_client, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    client = mlflow_client(uri, read_only=True)
    exp = find_experiment(client, experiment)
    if not client.search_runs([exp.experiment_id], filter_string=TRIAL_FILTER, max_results=1):
        raise InputError(f"experiment {experiment!r} has no trial runs (run a sweep first)")
    img = out / "img"
    try:
        img.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"--out {out}: cannot create it ({err.strerror})") from None
    match = _latest_match(client, exp.experiment_id, img, out)
    guess = _section_runs(client, exp.experiment_id, match)
    try:
        first = _models_in(uri, guess, img, out, tmp)
    except InputError:
        if match is not None:  # the match's models are the choice: their error is the error
            raise
        guess, first = [], []  # checked against the ranking below, which decides
    worker.draw(first)  # drawn there while this process reads
    trials = trial_runs(client, exp.experiment_id)  # ONE query: ranked below from this list
    families = rank_runs(trials, top=3)
    winners = _winning_parameters(trials, families)
    all_rows = rank_runs(trials, top=len(trials))
    redraw: list[Any] | None = None  # the models to draw here if the guess was not the choice
    if match is None:
        best = families[0]["group"] if families else None
        chosen = [r["run_id"] for r in families if r["group"] == best][:2]
        if chosen != [r.info.run_id for r in guess]:
            redraw = [client.get_run(rid) for rid in chosen]
            worker.close()  # its models are not the ones drawn: its core is this process's
    families_png = worker.submit("families", all_rows, img / "families.png")
    curve_runs, curves_per = _curve_runs(trials, all_rows, max_curves)
    histories = _histories(client, curve_runs, CURVE_METRICS)  # drawn there meanwhile
    curves_png = worker.submit("loss_curves", histories, img / "loss-curves.png")
    if redraw is not None:  # the full ranking chose other models: drawn here
        models = [_model_section(*args) for args in _models_in(uri, redraw, img, out, tmp)]
    else:
        models = worker.sections()
    pictures: dict[str, str | None] = {
        "curves": _rel(worker.result(curves_png), out),
        "families": _rel(worker.result(families_png), out),
        "matrix": None if match is None else match.pop("matrix_local", None)}
    methods = list(match["mean_r2"]) if match else []
    html = jinja2.Environment(autoescape=True).from_string(TEMPLATE).render(
        experiment=experiment, tracking_uri=uri, n_trials=len(trials), families=families,
        n_curves=len(curve_runs), curves_per=curves_per,
        winners=winners,
        img=pictures, match=match, methods=methods, models=models, fmt=_fmt)
    page = out / "index.html"
    page.write_text(html)
    return page


def _curve_runs(trials: list[Any], ranked: list[dict[str, Any]], most: int
                ) -> tuple[list[Any], int | None]:
    """The runs whose training curves the report draws, and how many of each family.

    Every trial run when there are at most ``most``; else the best of each family in
    ``ranked``'s order (`rank_runs` over every run), as many of each as ``most`` allows, and
    that number (None when every run is drawn). Before, the first ``most`` runs MLflow
    returned were drawn: the newest, whatever their fit, with nothing said.
    """
    if len(trials) <= most:
        return trials, None
    by_id = {r.info.run_id: r for r in trials}
    per = max(1, most // max(1, len({row["group"] for row in ranked})))
    return [by_id[row["run_id"]] for row in ranked if row["rank"] <= per][:most], per


def _section_runs(client: Any, exp_id: str, match: dict[str, Any] | None) -> list[Any]:
    """The runs whose models the report draws, asked of MLflow directly.

    The latest match's, else the two best runs of the best family in `rank_runs`' order
    (smallest ``best_adv_loss`` among FINISHED trial runs): two queries, of one and two runs.
    """
    if match is not None:
        return [client.get_run(r["run_id"]) for r in match["runs"]]
    finished = TRIAL_FILTER + " and attributes.status = 'FINISHED'"
    order = ["metrics.best_adv_loss ASC"]
    best = client.search_runs([exp_id], filter_string=finished, order_by=order, max_results=1)
    if not best or "best_adv_loss" not in best[0].data.metrics:
        return []
    family = best[0].data.tags.get("family")
    if family is None or "'" in family:
        return best  # the full ranking decides (it groups a missing tag under "?")
    return list(client.search_runs([exp_id], filter_string=f"{finished} and tags.family = "
                                   f"'{family}'", order_by=order, max_results=2))


def _models_in(uri: str, runs: list[Any], img: Path, out: Path, tmp: Path
               ) -> list[tuple[str, str, Path, Path, Path]]:
    """`_model_section`'s arguments for each run: its name and its downloaded checkpoint."""
    from flowtopo.runtime import download_checkpoint

    return [(_model_name(run), run.info.run_id,
             download_checkpoint(uri, run.info.run_id, tmp / run.info.run_id), img, out)
            for run in runs]


HISTORY_THREADS = 4
"""Metric histories fetched at once: one request (or sqlite query) per run and metric. On the
sqlite store of benchmarks/sweep.py (60 runs x 8 curves) 4 threads take 1.2 s against 2.2 s one
by one; 8 and 16 are slower again (1.3 s, 1.7 s). An HTTP server gains more (each request waits
on the network)."""


def _histories(client: Any, runs: list[Any], metrics: tuple[str, ...]) -> list[dict[str, Any]]:
    """Each run's family, best epoch and ``{metric: [(step, value), ...]}``, in ``runs``' order."""
    from concurrent.futures import ThreadPoolExecutor

    keys = [(r.info.run_id, m) for r in runs for m in metrics]
    with ThreadPoolExecutor(HISTORY_THREADS) as pool:
        got = dict(zip(keys, pool.map(lambda key: [(h.step, h.value) for h in
                                                   client.get_metric_history(*key)], keys),
                       strict=True))
    return [{"family": r.data.tags.get("family", "?"), "best_epoch": r.data.metrics.get(
        "best_epoch"), "metrics": {m: got[r.info.run_id, m] for m in metrics}} for r in runs]


def _winning_parameters(trials: list[Any], families: list[dict[str, Any]]
                        ) -> list[dict[str, Any]]:
    """Each family's best run (rank 1) and the hyper-parameters Optuna chose for it."""
    by_id = {r.info.run_id: r for r in trials}
    out = []
    for row in families:
        if row.get("rank") != 1:
            continue
        params = by_id[row["run_id"]].data.params
        chosen = {k.removeprefix("optuna."): v for k, v in sorted(params.items())
                  if k.startswith("optuna.") and k != "optuna.prior"}
        out.append({"family": row["group"], "run_id": row["run_id"], "params": chosen})
    return out


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


@dataclass
class ReportPair:
    """One ordered pair as the report shows it, read from its run's ``pair.json``."""

    source_name: str
    target_name: str
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    error: str | None = None
    ambiguous: bool = False
    fit_kl: float | None = None
    poor_fit: bool = False
    fit_reason: str | None = None
    picture_local: str | None = None  # its picture, copied beside the page


def _latest_match(client: Any, exp_id: str, img: Path, out: Path) -> dict[str, Any] | None:
    """The newest finished match run, or None.

    Its scores.json, its pairs (`ReportPair`, under ``pairs``) and their pictures (copied).
    """
    found = client.search_runs(
        [exp_id], filter_string="tags.`flowtopo.kind` = 'match' and attributes.status = "
                                "'FINISHED'", order_by=["attributes.start_time DESC"],
        max_results=1)
    if not found:
        return None
    parent = found[0]
    pid = parent.info.run_id
    with tempfile.TemporaryDirectory() as tmp:
        summary = json.loads(Path(client.download_artifacts(pid, "scores.json", tmp))
                             .read_text())
        matrix = Path(client.download_artifacts(pid, "pictures/score_matrix.png", tmp))
        shutil.copy(matrix, img / "score-matrix.png")
        summary["matrix_local"] = "img/score-matrix.png"
        children = client.search_runs(
            [exp_id], filter_string=f"tags.mlflow.parentRunId = '{pid}'", max_results=1000)
        names = {r["run_id"]: r["name"] for r in summary["runs"]}
        rows = []
        for i, child in enumerate(sorted(children, key=lambda c: c.info.run_name or "")):
            tags = child.data.tags
            src, tgt = tags.get("source_run", "?"), tags.get("target_run", "?")
            row = ReportPair(names.get(src, src[:6]), names.get(tgt, tgt[:6]),
                             error=child.data.tags.get("error"))
            names_logged = {a.path for a in client.list_artifacts(child.info.run_id)}
            if "pair.json" in names_logged:  # every pair, failed ones too, not only finished ones
                detail = json.loads(Path(client.download_artifacts(
                    child.info.run_id, "pair.json", tmp)).read_text())
                row.scores, row.ambiguous = detail["scores"], detail.get("ambiguous", False)
                row.fit_kl, row.poor_fit = detail.get("fit_kl"), detail.get("poor_fit", False)
                row.fit_reason = detail.get("fit_reason")
            else:  # a failed pair recorded by an older flowtopo: its metrics hold the scores
                row.scores = _scores_from_metrics(child.data.metrics)
            if child.info.status == "FINISHED":
                for art in client.list_artifacts(child.info.run_id, "pictures"):
                    local = Path(client.download_artifacts(child.info.run_id, art.path, tmp))
                    shutil.copy(local, img / f"pair-{i}.png")
                    row.picture_local = f"img/pair-{i}.png"
            rows.append(row)
    summary["pairs"] = rows
    summary["parent_run_id"] = pid
    return summary


SCORE_KEYS = ("r2", "rel_mse", "top1", "top5", "mrr", "cka", "label_transfer")


def _scores_from_metrics(metrics: dict[str, float]) -> dict[str, dict[str, float]]:
    """``{method}_{score}`` metrics (method names may hold underscores) -> method -> scores."""
    out: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        for score in SCORE_KEYS:
            if key.endswith(f"_{score}"):
                out.setdefault(key.removesuffix(f"_{score}"), {})[score] = value
                break
    return out


def _model_name(run: Any) -> str:
    """A model's name in the report: family, seed and the start of its run id."""
    tags = run.data.tags
    return f"{tags.get('family', '?')}-s{tags.get('seed', '?')}-{run.info.run_id[:6]}"


def _model_section(name: str, run_id: str, checkpoint: Path, img: Path, out: Path
                   ) -> dict[str, Any]:
    """One model: latent picture with contours + tree, node labels, decoded exemplars.

    Args:
        name: the model's name in the report.
        run_id: its run.
        checkpoint: its checkpoint folder (`flowtopo.runtime.download_checkpoint`).
        img: the pictures' folder.
        out: the report's folder (pictures are named relative to it).

    Raises:
        InputError: the checkpoint does not load (``weights_only``).

    """
    import torch

    from flowtopo.checkpoint import load_checkpoint
    from flowtopo.data import load_dataset
    from flowtopo.pipeline.report_plots import plot_exemplars, plot_node_labels
    from flowtopo.topology import density_tree
    from flowtopo.topology.plot import label_colours, plot_tree

    ckpt = load_checkpoint(checkpoint)
    model = ckpt.model
    spec = ckpt.config["dataset"]
    ds = load_dataset(spec["name"], **spec.get("options", {}))
    z = model.latents(ds.x_test)
    tree = density_tree(z, model.prior.numpy_log_prob)
    colours = None if ds.y_test is None else label_colours(tree, np.asarray(ds.y_test))
    section: dict[str, Any] = {
        "name": name, "run_id": run_id, "n": len(z), "leaves": len(tree.leaves()),
        "tree": _rel(plot_tree(tree, z, img / f"tree-{run_id[:8]}.png",
                               model.prior.numpy_log_prob, colours=colours), out),
        "labels": None}
    if ds.y_test is not None:
        y = np.asarray(ds.y_test)
        section["labels"] = _rel(plot_node_labels(tree, y, img / f"labels-{run_id[:8]}.png"), out)
        section["nodes"] = []
        for node in sorted(tree.nodes.values(), key=lambda n: (n.depth, n.id)):
            vals, counts = np.unique(y[node.members], return_counts=True)
            top = sorted(zip(counts, vals, strict=True), reverse=True)[:3]
            section["nodes"].append({
                "name": f"{'leaf' if node.is_leaf else 'node'} {node.id}", "mass": node.mass,
                "labels": ", ".join(f"{v} ({c / max(counts.sum(), 1):.0%})" for c, v in top)})
    logp = model.prior.numpy_log_prob(z)
    exemplars = {}
    for leaf in tree.leaves()[:8]:
        best = leaf.members[np.argsort(-logp[leaf.members])[:8]]
        with torch.no_grad():
            x = model.decode(torch.as_tensor(z[best], dtype=torch.float32), sample=False)
        exemplars[leaf.id] = ds.standardizer.inverse(x.double().numpy())
    section["exemplars"] = _rel(plot_exemplars(exemplars, img / f"exemplars-{run_id[:8]}.png"),
                                out)
    return section
