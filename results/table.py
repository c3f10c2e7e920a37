"""The paper-shaped table: normalizers x (#GPUs, samples per GPU) settings, with difference rows.

A row holds the runs of one normalizer and one recipe (results/recipe.py): where a table's runs differ in a
key of the recipe, each row's label names its value, e.g. "SN (optim.lr=0.2)", and a difference row pairs
only rows that agree on every key outside norm.*.
"""
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Optional

from . import published
from .recipe import items, text, varying
from .runs import INCOMPLETE

NORM_ORDER = ("bn", "gn", "sn", "syncbn", "syncsn", "in", "ln")
LABELS = {"bn": "BN", "gn": "GN", "sn": "SN", "syncbn": "SyncBN", "syncsn": "SyncSN", "in": "IN", "ln": "LN"}
DIFFERENCES = (("gn", "bn"), ("sn", "bn"), ("sn", "gn"))
NOT_RUN = "not run"
WITHOUT_BN_NOTE = "\\* SN without its BN branch (IN and LN only), as the paper ran one sample per GPU."
# when a cell has several runs, what it shows: a number if any finished, else the first status found here
STATUS_ORDER = (INCOMPLETE, "diverged")


@dataclass
class Cell:
    value: Optional[float] = None   # mean of the finished runs' metric
    n: int = 0                      # finished runs averaged
    status: str = NOT_RUN
    without_bn: bool = False

    def text(self, digits=2):
        if self.value is None:
            return self.status
        mark = "*" if self.without_bn else ""
        return f"{self.value:.{digits}f}{mark}" + (f" (n={self.n})" if self.n > 1 else "")


@dataclass
class Table:
    heading: str
    columns: list                   # settings (g, b)
    rows: list = field(default_factory=list)        # (label, [cell text per column])
    footnotes: list = field(default_factory=list)


def label(norm):
    return LABELS.get(norm, norm)


@dataclass(frozen=True)
class Row:
    """One normalizer on one recipe: `shared`, the (key, value) of the keys outside norm.* in which the table's
    runs differ; `own`, those of the norm.* keys in which this normalizer's runs differ."""
    norm: str
    shared: tuple = ()
    own: tuple = ()

    @property
    def label(self):
        return label(self.norm) + _suffix(self.shared + self.own)


def _suffix(pairs):
    return f" ({', '.join(f'{key}={text(value)}' for key, value in pairs)})" if pairs else ""


def assign_rows(runs):
    """{run name: Row} for the runs of one table."""
    shared = {r.name: {k: v for k, v in r.recipe.items() if not k.startswith("norm.")} for r in runs}
    own = {r.name: {k: v for k, v in r.recipe.items() if k.startswith("norm.")} for r in runs}
    shared_keys = varying(shared.values())
    own_keys = {norm: varying(own[r.name] for r in runs if r.norm == norm) for norm in {r.norm for r in runs}}
    return {r.name: Row(r.norm, items(shared[r.name], shared_keys), items(own[r.name], own_keys[r.norm]))
            for r in runs}


def row_order(rows):
    """The paper's normalizers first (see norm_order), each one's recipes by their values."""
    ranks = {norm: i for i, norm in enumerate(norm_order({row.norm for row in rows}))}
    return sorted(rows, key=lambda row: (ranks[row.norm], [_sortable(v) for _, v in row.shared + row.own]))


def _sortable(value):
    # Numbers by value (90 before 100), anything else by its text; never compares a number with a string.
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    return (0, value, "") if numeric else (1, 0, text(value))


def norm_order(norms):
    """The paper's rows first (BN, GN, SN), then the other known types, then anything else sorted."""
    known = [n for n in NORM_ORDER if n in norms]
    return known + sorted(set(norms) - set(known))


def group_runs(runs):
    """{ModelKey: runs}, one table per architecture/classes/dataset, in heading order."""
    groups = defaultdict(list)
    for run in runs:
        groups[run.model].append(run)
    return dict(sorted(groups.items(), key=lambda item: item[0].heading()))


def aggregate(runs, metric):
    """{Row: {setting: Cell}} of one model group: the mean over the finished runs of a row's recipe, else the most
    telling status."""
    found = defaultdict(lambda: defaultdict(list))
    rows = assign_rows(runs)
    for run in runs:
        found[rows[run.name]][run.setting].append(run)
    cells = {}
    for row, settings in found.items():
        cells[row] = {}
        for setting, members in settings.items():
            values = [v for v in (r.metric(metric) for r in members) if v is not None]
            statuses = [r.status for r in members]
            if values:
                cell = Cell(statistics.fmean(values), len(values), "finished",
                            any(not r.using_bn for r in members if r.status == "finished" and r.norm == "sn"))
            elif "finished" in statuses:
                cell = Cell(status=f"no {metric}")
            else:
                cell = Cell(status=next((s for s in STATUS_ORDER if s in statuses), statuses[0]))
            cells[row][setting] = cell
    return cells


def columns_for(cells, paper_columns=False):
    """The paper's nine settings in its order, then any other found sorted by (#GPUs, samples per GPU), when
    `paper_columns`; else only the settings found, by samples per GPU descending, then #GPUs."""
    found = {s for per_norm in cells.values() for s in per_norm}
    if paper_columns:
        return list(published.SETTINGS) + sorted(found - set(published.SETTINGS))
    return sorted(found, key=lambda s: (-s[1], s[0]))


def difference(a, b):
    """a - b where both cells hold numbers, else None."""
    return a.value - b.value if a is not None and b is not None and a.value is not None and b.value is not None \
        else None


def build_table(heading, cells, reference=False, paper_model=False):
    """Rows for every normalizer and recipe found (BN, GN, SN always), the difference rows, and optionally the
    paper's rows.

    The paper's columns are kept for the paper's model (`paper_model`) and next to its reference rows."""
    columns = columns_for(cells, paper_model or reference)
    table = Table(heading, columns)
    rows = row_order(set(cells) | {Row(n) for n in ("bn", "gn", "sn") if n not in {row.norm for row in cells}})
    for row in rows:
        table.rows.append((row.label, [cells.get(row, {}).get(s, Cell()).text() for s in columns]))
    for a, b in DIFFERENCES:
        pairs = [(ra, rb) for ra in rows if ra.norm == a for rb in rows if rb.norm == b and ra.shared == rb.shared]
        for ra, rb in pairs or [(Row(a), Row(b))]:  # no pair of one recipe: the row stays, empty
            diffs = [difference(cells.get(ra, {}).get(s), cells.get(rb, {}).get(s)) for s in columns]
            own = tuple((f"{label(row.norm)} {key}", value) for row in (ra, rb) for key, value in row.own)
            table.rows.append((f"{label(a)}-{label(b)}" + _suffix(ra.shared + own), [_signed(d, 2) for d in diffs]))
    if any(c.without_bn for per_norm in cells.values() for c in per_norm.values()):
        table.footnotes.append(WITHOUT_BN_NOTE)
    if reference:
        _add_reference(table)
    return table


def paper_table():
    """The published table alone (for --reference paper with no runs)."""
    table = Table(f"{published.MODEL} (published)", list(published.SETTINGS))
    _add_reference(table)
    return table


def _add_reference(table):
    paper = {norm: dict(zip(published.SETTINGS, values)) for norm, values in published.TOP1.items()}
    for norm, values in paper.items():
        table.rows.append((f"{label(norm)} (paper)", [_paper_cell(norm, s, values) for s in table.columns]))
    for a, b in DIFFERENCES:
        diffs = []
        for s in table.columns:
            va, vb = paper[a].get(s), paper[b].get(s)
            diffs.append(va - vb if va is not None and vb is not None else None)
        table.rows.append((f"{label(a)}-{label(b)} (paper)", [_signed(d, 1) for d in diffs]))
    table.footnotes.append(f"(paper) rows: {published.MODEL}, {published.SOURCE}; \"{published.DID_NOT_CONVERGE}\" "
                           "is the paper's \"-\"; SN (8,1)\\* had no BN branch.")


def _paper_cell(norm, setting, values):
    if setting not in values:
        return ""  # a setting the paper did not run
    value = values[setting]
    if value is None:
        return published.DID_NOT_CONVERGE
    return f"{value:.1f}" + ("*" if (norm, setting) in published.WITHOUT_BN else "")


def _signed(value, digits):
    return "" if value is None else f"{value:+.{digits}f}"


def markdown(table):
    """The table as aligned Markdown (readable as plain text too), heading and footnotes included."""
    header = [""] + [f"({g},{b})" for g, b in table.columns]
    lines = [[name] + cells for name, cells in table.rows]
    widths = [max(len(row[i]) for row in [header] + lines) for i in range(len(header))]

    def fmt(row):
        return "| " + " | ".join(text.ljust(w) for text, w in zip(row, widths)) + " |"
    out = [f"## {table.heading}", "", fmt(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [fmt(row) for row in lines]
    if table.footnotes:
        out += [""] + table.footnotes
    return "\n".join(out) + "\n"
