"""Collect a runs folder into results.md, results.csv and the figures; returns the text to print."""
import csv
import io
import os
import re

from . import published
from .recipe import IGNORED, SEED
from .runs import ResultsError, read_runs
from .table import aggregate, assign_rows, build_table, group_runs, label, markdown, paper_table

CSV_FIELDS = ("source", "group", "row", "run", "norm", "gpus", "samples_per_gpu", "seed", "status", "top1", "top5",
              "best_top1", "loss", "images", "epochs", "iterations", "using_bn", "world", "stat_groups", "train_time_s",
              "error", "arch", "depth", "variant", "num_classes", "width", "data_root")
SN_TYPES = ("sn", "syncsn")
IGNORED_TEXT = ", ".join(f"`{key}*`" if key.endswith(".") else f"`{key}`" for key in IGNORED)


def collect(runs_dir, out=None, metric="top1", reference=None, sn_run=None, log=print):
    """Write the outputs into `out` (default `runs_dir`) and return the tables as Markdown."""
    runs = read_runs(runs_dir)
    with_reference = reference == "paper"
    if not runs and not with_reference:
        raise ResultsError(f"no runs under {runs_dir} (a run is a folder holding config.yaml); "
                           "add --reference paper to print the published table alone")
    groups = [(key, aggregate(members, metric)) for key, members in group_runs(runs).items()]
    tables = [build_table(key.heading(), cells, with_reference, key.paper_model) for key, cells in groups] \
        or [paper_table()]
    what = "final-epoch" if metric == "top1" else "best-epoch"
    text = (f"# Results\n\n{what} {metric} (%) on the validation set, from {len(runs)} run(s) in {runs_dir}. "
            "Columns are (#GPUs, samples per GPU); a cell with several finished runs shows their mean (n=...); "
            "`incomplete`: no final.json yet (running, queued, stopped or crashed); `diverged`: non-finite loss; "
            f"`not run`: no run folder. A cell averages only runs whose config.yaml agree except for `{SEED}` and "
            f"keys that do not change the result ({IGNORED_TEXT}); runs of another recipe get a row of their own, "
            "labelled with the keys in which the table's runs differ, e.g. `SN (optim.lr=0.2)`, and difference rows "
            "pair rows of one recipe.\n\n"
            + "\n".join(markdown(t) for t in tables))
    out = out or runs_dir
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(text)
    with open(os.path.join(out, "results.csv"), "w", newline="") as f:
        f.write(csv_text(runs, with_reference))
    from . import plots  # matplotlib only when figures are drawn
    plots.plot_accuracy(groups, os.path.join(out, "top1_vs_samples_per_gpu.png"), metric, with_reference)
    written = ["results.md", "results.csv", "top1_vs_samples_per_gpu.png"]
    for name, run in _importance_runs(runs, sn_run).items():
        plots.plot_importance(run.name, run.switch_weights, os.path.join(out, name))
        written.append(name)
        log(f"{name}: SN importance weights of run {run.name}")
    if not any(n.startswith("sn_importance") for n in written):
        log("note: no finished SN run with switch weights in final.json: no sn_importance.png")
    log(f"wrote {', '.join(written)} to {out}")
    return text


def csv_text(runs, reference):
    """Long format: one row per run (and per published cell with --reference paper); `row` is the run's table row."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    rows = {name: row for members in group_runs(runs).values() for name, row in assign_rows(members).items()}
    for run in runs:
        final, setting, key = run.final, run.final.get("setting") or {}, run.model
        writer.writerow({
            "source": "run", "group": key.heading(), "row": rows[run.name].label, "run": run.name, "norm": run.norm,
            "gpus": run.gpus, "samples_per_gpu": run.samples_per_gpu, "seed": run.seed, "status": run.status,
            "using_bn": run.using_bn,
            **{k: final.get(k, "") for k in ("top1", "top5", "best_top1", "loss", "images", "epochs", "iterations",
                                             "train_time_s", "error")},
            "world": setting.get("world", ""), "stat_groups": setting.get("stat_groups", ""),
            "arch": key.arch, "depth": key.depth, "variant": key.variant, "num_classes": key.num_classes,
            "width": key.width, "data_root": key.data_root})
    if reference:
        for norm, values in published.TOP1.items():
            for (g, b), value in zip(published.SETTINGS, values):
                writer.writerow({"source": "paper", "group": published.MODEL, "row": f"{label(norm)} (paper)",
                                 "run": published.SOURCE, "norm": norm,
                                 "gpus": g, "samples_per_gpu": b,
                                 "status": "finished" if value is not None else published.DID_NOT_CONVERGE,
                                 "top1": "" if value is None else value,
                                 "using_bn": (norm, (g, b)) not in published.WITHOUT_BN,
                                 "arch": "resnet", "depth": 50, "variant": "v1", "num_classes": 1000})
    return buffer.getvalue()


def _importance_runs(runs, choice):
    """{file name: run}: the chosen SN run, or all with 'all'.

    By default the run with the most samples per GPU (then the most GPUs, then by name): its BN branch sees the
    largest batches, as the paper's (8,32) figure."""
    candidates = [r for r in runs if r.norm in SN_TYPES and r.status == "finished" and r.switch_weights]
    if choice is None:
        candidates.sort(key=lambda r: (-r.samples_per_gpu, -r.gpus, r.name))
        return {"sn_importance.png": candidates[0]} if candidates else {}
    if choice == "all":
        return {f"sn_importance_{re.sub(r'[^A-Za-z0-9._-]+', '_', r.name)}.png": r for r in candidates}
    chosen = [r for r in runs if r.name == choice]
    if not chosen:
        names = ", ".join(r.name for r in candidates) or "none"
        raise ResultsError(f"--sn-run {choice}: no such run; SN runs with switch weights: {names}")
    if chosen[0] not in candidates:
        raise ResultsError(f"--sn-run {choice}: not a finished SN run with switch weights in its final.json")
    return {"sn_importance.png": chosen[0]}
