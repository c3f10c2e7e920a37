"""Robustness metrics (mean corruption error, AlexNet-normalized mCE, relative CE) of eval records, and their table.

Pure Python: no torch, no matplotlib. A record is what eval.py writes per evaluation run ("kind": "robustness");
errors are top-1 errors in percent throughout.
"""
import csv
import importlib.util
import io
import json
import math
import os
import sys
from dataclasses import dataclass, field

from .runs import ResultsError
from .table import label


def _corruption_names():
    """data/corruption_names.py, loaded by path when `data` is not imported: data/__init__.py imports torch."""
    module = sys.modules.get("data.corruption_names")
    if module is None:
        path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "corruption_names.py")
        spec = importlib.util.spec_from_file_location("_corruption_names", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


_NAMES = _corruption_names()
COMMON, SEVERITIES = _NAMES.COMMON, _NAMES.SEVERITIES

# AlexNet's top-1 error (fraction) per common corruption, averaged over the 5 severities: the mCE normalization of
# Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and Perturbations" (ICLR
# 2019). Values from the authors' repository hendrycks/robustness (ImageNet-C, get_ce_alexnet), reused as
# ALEXNET_ERR in AugMix's imagenet.py (google-research/augmix).
ALEXNET_ERRORS = {
    "gaussian_noise": 0.886428, "shot_noise": 0.894468, "impulse_noise": 0.922640, "defocus_blur": 0.819880,
    "glass_blur": 0.826268, "motion_blur": 0.785948, "zoom_blur": 0.798360, "snow": 0.866816, "frost": 0.826572,
    "fog": 0.819324, "brightness": 0.564592, "contrast": 0.853204, "elastic_transform": 0.646056,
    "pixelate": 0.717840, "jpeg_compression": 0.606500,
}
BATCH_FREE = ("source", "adabn")  # methods whose predictions do not depend on the test batch size B
METHOD_ORDER = ("source", "adabn", "batch", "prior", "tent")
COLLAPSE_POINTS = 5.0  # the reading calls a (method, normalizer) collapsing when B's smallest-largest gap exceeds it
RECORD_FIELDS = ("norm", "run", "method", "domains")
CSV_FIELDS = ("table", "row", "run", "norm", "method", "adapt_batch", "prior_n", "tent_mode", "tent_params", "tent_lr",
              "mean_error", "mean_over", "mce", "relative_mce", "baseline", "domains", "images", "s1", "s2", "s3", "s4",
              "s5", "stream_seed", "world", "corruptions_root", "imagenet_c", "path", "replaced")


def _errors(domains):
    """{(corruption, severity): error %} of a record's domains; a repeated or malformed domain is a ValueError."""
    errors = {}
    for d in domains:
        try:
            key, error = (d["corruption"], int(d["severity"])), float(d["error"])
        except (KeyError, TypeError, ValueError) as e:
            raise ResultsError(f"domain {d!r}: needs corruption, severity and error (%) ({e})") from None
        if key in errors:
            raise ResultsError(f"domain {key[0]} severity {key[1]} appears twice; keep one entry per domain")
        errors[key] = error
    return errors


def _mean(values):
    values = list(values)
    return sum(values) / len(values)


def _mean_over(corruptions):
    """The corruptions a mean averages: the 15 common ones when all are present (ImageNet-C's mean), else all."""
    present = set(corruptions)
    if present >= set(COMMON):
        return list(COMMON)
    return [c for c in COMMON if c in present] + sorted(present - set(COMMON))


def _by_corruption(errors):
    """{corruption: {severity: error}} in ImageNet-C's order, then the others by name."""
    out = {}
    for (c, s), e in sorted(errors.items(), key=lambda kv: (_order(kv[0][0]), kv[0])):
        out.setdefault(c, {})[s] = e
    return out


def _order(corruption):
    return (COMMON.index(corruption), "") if corruption in COMMON else (len(COMMON), corruption)


def summarize(domains, imagenet_c=False):
    """Mean error, per-corruption and per-severity errors and (ImageNet-C only) the mCE of one record's domains.

    mean_error: the mean over `mean_over` of each corruption's error averaged over its severities; `mean_over` is the
    15 common corruptions when all are present (the extra 4 then count only in corruption_errors), else every
    corruption present. severity_errors: keys are severities as strings (as JSON writes them), each the mean over the
    `mean_over` corruptions holding that severity. mce (%): 100 * mean_c CE_c, CE_c = mean_s E_cs / ALEXNET_ERRORS[c]
    (E as a fraction), given imagenet_c and all 15 x 5 common domains; else None with mce_note saying why."""
    errors = _errors(domains)
    if not errors:
        raise ResultsError("no domains to summarize; the record's `domains` list is empty")
    by_corruption = _by_corruption(errors)
    corruption_errors = {c: _mean(s.values()) for c, s in by_corruption.items()}
    mean_over = _mean_over(by_corruption)
    severity_errors = {}
    for s in sorted({s for c in mean_over for s in by_corruption[c]}):
        severity_errors[str(s)] = _mean(by_corruption[c][s] for c in mean_over if s in by_corruption[c])
    missing = [f"{c} severity {s}" for c in COMMON for s in SEVERITIES if (c, s) not in errors]
    ce, mce, note = None, None, None
    if not imagenet_c:
        note = "not ImageNet-C: the AlexNet normalization applies only to ImageNet-C's images"
    elif missing:
        note = f"{len(missing)} of the {len(COMMON) * len(SEVERITIES)} common domains missing, e.g. {missing[0]}"
    else:
        ce = {c: corruption_errors[c] / ALEXNET_ERRORS[c] for c in COMMON}  # 100 * (E% / 100) / AlexNet's
        mce = _mean(ce.values())
    return {"mean_error": _mean(corruption_errors[c] for c in mean_over), "mean_over": mean_over,
            "corruption_errors": corruption_errors, "severity_errors": severity_errors,
            "ce": ce, "mce": mce, "mce_note": note}


def relative_errors(record, baseline_record):
    """Corruption errors of `record` normalized by a baseline record's, over the domains both hold.

    CE_c = 100 * sum_s E_cs / sum_s E^baseline_cs; `mean` is their mean over `mean_over` (the 15 common corruptions
    when all are shared, else every shared one)."""
    errors, base = _errors(record["domains"]), _errors(baseline_record["domains"])
    shared = sorted(set(errors) & set(base), key=lambda k: (_order(k[0]), k))
    if not shared:
        raise ResultsError(f"run {record.get('run')} and baseline {baseline_record.get('run')} share no domain "
                           "(corruption, severity); evaluate both on the same corruptions")
    ce = {}
    for c in dict.fromkeys(c for c, _ in shared):
        total = sum(base[k] for k in shared if k[0] == c)
        if total == 0:
            raise ResultsError(f"baseline {baseline_record.get('run')} has zero error on {c}: no relative CE; "
                               "pick a baseline that errs on every corruption")
        ce[c] = 100 * sum(errors[k] for k in shared if k[0] == c) / total
    mean_over = _mean_over(ce)
    return {"ce": ce, "mean": _mean(ce[c] for c in mean_over), "mean_over": mean_over, "domains": len(shared),
            "baseline": baseline_record.get("run")}


@dataclass
class Record:
    """One robustness record read from disk; `mtime` orders duplicates (the newest wins)."""
    path: str
    mtime: float
    data: dict
    summary: dict = field(default_factory=dict)

    @property
    def batch(self):
        return None if self.data.get("method") in BATCH_FREE else self.data.get("adapt_batch")

    @property
    def group(self):
        """The table a record belongs to: records of other corruption data are never mixed."""
        root = self.data.get("corruptions_root") or "?"
        if os.path.isabs(root) and _inside(root, os.getcwd()):   # a path inside the current folder, as typed
            root = os.path.relpath(root)
        return f"corruptions {root}" + (" (ImageNet-C)" if self.data.get("imagenet_c") else "")

    @property
    def variant(self):
        """The method with what sets it apart: `prior N=16`, `tent (episodic, affine, lr=0.001)`."""
        method, data = self.data["method"], self.data
        if method == "prior" and data.get("prior_n") is not None:
            return f"prior N={data['prior_n']:g}"
        if method == "tent" and data.get("tent"):
            tent = data["tent"]
            lr = tent.get("lr_rule") or tent.get("lr")  # the scaled default is one row over every B
            return f"tent ({tent.get('mode')}, {tent.get('params')}, lr={lr})"
        return method


def _inside(path, folder):
    return os.path.commonpath([os.path.abspath(path), os.path.abspath(folder)]) == os.path.abspath(folder)


def _json_files(path):
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise ResultsError(f"{path}: no such file or folder; pass robustness records (*.json) or folders of them")
    return sorted(os.path.join(d, f) for d, _, files in os.walk(path) for f in files if f.endswith(".json"))


def load_records(paths):
    """Records of the given files and folders (every *.json below a folder whose kind is "robustness").

    Other JSON files under a folder are skipped; a file named directly must be a record. A corrupt JSON file, or a
    record without norm/run/method/domains or with another schema, is a one-line ResultsError naming it."""
    records = []
    for path in [paths] if isinstance(paths, str) else paths:
        named = os.path.isfile(path)
        for file in _json_files(path):
            try:
                with open(file) as f:
                    data = json.load(f)
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                raise ResultsError(f"{file}: not readable JSON ({str(e).splitlines()[0]}); rewrite or remove it") \
                    from None
            if not isinstance(data, dict) or data.get("kind") != "robustness":
                if named:
                    raise ResultsError(f"{file}: not a robustness record (needs \"kind\": \"robustness\")")
                continue
            if data.get("schema") != 1:
                raise ResultsError(f"{file}: record schema {data.get('schema')!r}, this collector reads schema 1")
            missing = [k for k in RECORD_FIELDS if data.get(k) in (None, "")]
            if missing:
                raise ResultsError(f"{file}: record lacks {', '.join(missing)}; rewrite it with eval.py")
            try:
                summary = summarize(data["domains"], bool(data.get("imagenet_c")))
            except ResultsError as e:
                raise ResultsError(f"{file}: {e}") from None
            records.append(Record(file, os.path.getmtime(file), data, summary))
    return records


@dataclass
class RobustnessTable:
    """One corruption data set's records: rows (norm, run, variant), columns the test batch sizes B."""
    heading: str
    rows: dict                        # {(norm, run, variant): {B or None: Record}}
    labels: dict                      # {(norm, run, variant): row label}
    batches: list                     # sorted B values present
    notes: list = field(default_factory=list)
    replaced: dict = field(default_factory=dict)   # {winning record path: [older paths of the same cell]}

    def column(self, batch):
        return "any B" if batch is None else f"B={batch}"

    @property
    def columns(self):
        has_free = any(None in cells for cells in self.rows.values())
        return ([None] if has_free else []) + self.batches


def _row_key(record):
    data = record.data
    return (data["norm"], data["run"], record.variant)


def _row_sort(key):
    norm, run, variant = key
    norms = ("bn", "gn", "sn", "syncbn", "syncsn", "in", "ln")
    method = variant.split(" ")[0]
    return (norms.index(norm) if norm in norms else len(norms), norm, run,
            METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), variant)


def build_tables(records):
    """[RobustnessTable] by corruption data set; duplicate records of a cell: the newest file wins, with a note."""
    tables = {}
    for record in sorted(records, key=lambda r: (r.mtime, r.path)):
        table = tables.setdefault(record.group, RobustnessTable(record.group, {}, {}, []))
        cells = table.rows.setdefault(_row_key(record), {})
        old = cells.get(record.batch)
        if old is not None:
            table.replaced[record.path] = table.replaced.pop(old.path, []) + [old.path]
        cells[record.batch] = record
    for table in tables.values():
        table.rows = {k: table.rows[k] for k in sorted(table.rows, key=_row_sort)}
        runs_per_norm = {}
        for norm, run, _ in table.rows:
            runs_per_norm.setdefault(norm, set()).add(run)
        table.labels = {(n, r, v): f"{label(n)} {v}" + (f" [{r}]" if len(runs_per_norm[n]) > 1 else "")
                        for n, r, v in table.rows}
        table.batches = sorted({b for cells in table.rows.values() for b in cells if b is not None})
        for new, olds in table.replaced.items():
            table.notes.append(f"duplicate records of one cell: {new} (newest) replaces {', '.join(olds)}")
    return [tables[k] for k in sorted(tables)]


def _baseline(table, run):
    """The baseline run's record in this table: its source record, else its only record."""
    records = [r for (_, name, _), cells in table.rows.items() if name == run for r in cells.values()]
    if not records:
        return None
    source = [r for r in records if r.data["method"] == "source"]
    if source or len(records) == 1:
        return (source or records)[0]
    raise ResultsError(f"--baseline {run}: the run has {len(records)} records and none of method source; "
                       "evaluate it with the source method to serve as a baseline")


def _markdown(heading, header, lines):
    widths = [max(len(line[i]) for line in [header] + lines) for i in range(len(header))]

    def fmt(line):
        return "| " + " | ".join(text.ljust(w) for text, w in zip(line, widths)) + " |"
    return "\n".join([f"### {heading}", "", fmt(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
                     + [fmt(line) for line in lines]) + "\n"


def _grid(table, value):
    """[[row label, cell text per column]] of value(record) -> float or None."""
    lines = []
    for key, cells in table.rows.items():
        texts = []
        for b in table.columns:
            v = value(cells[b]) if b in cells else None
            texts.append("" if b not in cells else "n/a" if v is None else f"{v:.2f}")
        lines.append([table.labels[key]] + texts)
    return lines


def relative_mce(table, baseline):
    """{record path: relative mean CE (%)} of every record of `table` against the baseline run's record."""
    base = _baseline(table, baseline)
    if base is None:
        return {}
    out = {}
    for cells in table.rows.values():
        for r in cells.values():
            try:
                out[r.path] = relative_errors(r.data, base.data)["mean"]
            except ValueError as error:  # e.g. the baseline has zero error on a corruption: no ratio, say why
                out[r.path] = None
                note = f"no relative mCE for {r.data['run']} {r.variant}: {error}"
                if note not in table.notes:
                    table.notes.append(note)
    return out


def reading(table, threshold=COLLAPSE_POINTS):
    """Factual lines: which (normalizer, method) rows lose more than `threshold` points from the largest to the
    smallest B, where they start to, and which stay within it."""
    lines, flat = [], []
    for key, cells in table.rows.items():
        points = sorted((b, r.summary["mean_error"]) for b, r in cells.items() if b is not None)
        if len(points) < 2:
            continue
        (b_min, e_min), (b_max, e_max) = points[0], points[-1]
        name = f"{label(key[0])}+{key[2]}" + (f" [{key[1]}]" if "[" in table.labels[key] else "")
        if e_min - e_max > threshold:
            start = b_max  # the smallest B from which on every larger B stays within the threshold
            for b, e in reversed(points):
                if e - e_max > threshold:
                    break
                start = b
            lines.append(f"- {name} collapses below B={start}: error {e_min:.2f}% at B={b_min} vs {e_max:.2f}% "
                         f"at B={b_max}.")
        elif max(e for _, e in points) - min(e for _, e in points) <= threshold:
            spread = (min(e for _, e in points), max(e for _, e in points))
            flat.append(f"- {name} is flat: error {spread[0]:.2f}-{spread[1]:.2f}% over B={b_min}..{b_max}.")
    return lines + flat


def markdown(tables, baseline=None):
    """robustness.md: per corruption data set the mean-error table, the mCE table where any, relative CE, reading."""
    out = ["# Robustness\n", "Mean top-1 error (%) over the corruptions (the 15 common ones when all are present, "
           "else all present; `mean_over` in robustness.csv), rows normalizer and test-time method, columns the "
           "test batch size B; `any B`: methods that do not depend on B (source, adabn). mCE: ImageNet-C's mean "
           "corruption error normalized by AlexNet (Hendrycks & Dietterich, ICLR 2019), in %.\n"]
    for table in tables:
        header = [""] + [table.column(b) for b in table.columns]
        out.append(f"## {table.heading}\n")
        out.append(_markdown("mean error (%)", header, _grid(table, lambda r: r.summary["mean_error"])))
        if any(r.summary["mce"] is not None for cells in table.rows.values() for r in cells.values()):
            out.append(_markdown("mCE (%)", header, _grid(table, lambda r: r.summary["mce"])))
        if baseline is not None:
            rel = relative_mce(table, baseline)
            if rel:
                out.append(_markdown(f"relative mCE (%), baseline {baseline}", header,
                                     _grid(table, lambda r, rel=rel: rel.get(r.path))))
            else:
                out.append(f"No record of baseline run {baseline} in this data set: no relative mCE.\n")
        lines = reading(table)
        out.append("Reading (more than %g points between the smallest and the largest B):\n\n" % COLLAPSE_POINTS
                   + ("\n".join(lines) if lines else "- no row has records at two or more B.") + "\n")
        if table.notes:
            out.append("Notes:\n\n" + "\n".join(f"- {n}" for n in table.notes) + "\n")
    return "\n".join(out)


def csv_text(tables, baseline=None):
    """robustness.csv: one row per record kept in a table."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for table in tables:
        rel = relative_mce(table, baseline) if baseline is not None else {}
        for key, cells in table.rows.items():
            for b in table.columns:
                if b not in cells:
                    continue
                r, s = cells[b], cells[b].summary
                data, tent = r.data, r.data.get("tent") or {}
                writer.writerow({
                    "table": table.heading, "row": table.labels[key], "run": data["run"], "norm": data["norm"],
                    "method": data["method"], "adapt_batch": _blank(data.get("adapt_batch")),
                    "prior_n": _blank(data.get("prior_n")), "tent_mode": tent.get("mode", ""),
                    "tent_params": tent.get("params", ""), "tent_lr": _blank(tent.get("lr")),
                    "mean_error": s["mean_error"], "mean_over": " ".join(s["mean_over"]), "mce": _blank(s["mce"]),
                    "relative_mce": _blank(rel.get(r.path)), "baseline": baseline if rel else "",
                    "domains": len(data["domains"]), "images": sum(d.get("images", 0) for d in data["domains"]),
                    **{f"s{k}": _blank(s["severity_errors"].get(str(k))) for k in SEVERITIES},
                    "stream_seed": _blank(data.get("stream_seed")), "world": _blank(data.get("world")),
                    "corruptions_root": data.get("corruptions_root", ""), "imagenet_c": bool(data.get("imagenet_c")),
                    "path": r.path, "replaced": " ".join(table.replaced.get(r.path, []))})
    return buffer.getvalue()


def _blank(value):
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else value


def collect_robustness(paths, out, baseline=None, log=print):
    """Write robustness.md, robustness.csv and the two figures into `out`; return the Markdown."""
    records = load_records(paths)
    if not records:
        raise ResultsError(f"no robustness records under {', '.join(map(str, paths))} "
                           "(JSON files with \"kind\": \"robustness\", written by eval.py)")
    tables = build_tables(records)
    if baseline is not None and not any(_baseline(t, baseline) for t in tables):
        runs = sorted({run for t in tables for _, run, _ in t.rows})
        raise ResultsError(f"--baseline {baseline}: no such run among the records; runs: {', '.join(runs)}")
    text = markdown(tables, baseline)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "robustness.md"), "w") as f:
        f.write(text)
    with open(os.path.join(out, "robustness.csv"), "w", newline="") as f:
        f.write(csv_text(tables, baseline))
    from . import robustness_plots  # matplotlib only when figures are drawn
    written = ["robustness.md", "robustness.csv"]
    written += robustness_plots.plot_all(tables, out)
    for table in tables:
        for note in table.notes:
            log(f"note: {note}")
    log(f"wrote {', '.join(written)} to {out}")
    return text
