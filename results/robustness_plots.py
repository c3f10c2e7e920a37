"""PNG figures of robustness records: error against severity and error against the test batch size B (Agg)."""
import os

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402

from .plots import COLORS  # noqa: E402
from .robustness import BATCH_FREE  # noqa: E402
from .table import label  # noqa: E402

SEVERITY_PNG = "robustness_error_vs_severity.png"
BATCH_PNG = "robustness_error_vs_batch.png"
FREE_STYLES = {"source": "--", "adabn": (0, (6, 2, 1, 2))}  # both dashed: horizontal lines, B-independent
RUN_MARKERS = "osD^vP*X"


def plot_all(tables, out):
    """Write both figures into `out`; return their file names."""
    for name, figure in ((SEVERITY_PNG, severity_figure(tables)), (BATCH_PNG, batch_figure(tables))):
        figure.savefig(os.path.join(out, name), dpi=120, bbox_inches="tight")
        plt.close(figure)
    return [SEVERITY_PNG, BATCH_PNG]


def _heading(tables, table, text):
    return f"{text}\n{table.heading}" if len(tables) > 1 else text


def _markers(table):
    """{(norm, run): marker}: runs sharing a normalizer get different markers."""
    runs = sorted({(n, r) for n, r, _ in table.rows})
    return {key: RUN_MARKERS[[k for k in runs if k[0] == key[0]].index(key) % len(RUN_MARKERS)] for key in runs}


def _name(table, key, with_norm):
    norm, run, variant = key
    text = f"{label(norm)}+{variant}" if with_norm else variant
    return text + (f" [{run}]" if "[" in table.labels[key] else "")


def severity_figure(tables):
    """One panel per normalizer, a line per method; batch-dependent methods at the largest B each recorded."""
    panels = [(t, norm) for t in tables for norm in dict.fromkeys(n for n, _, _ in t.rows)]
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 3.8 * len(panels)), squeeze=False)
    for ax, (table, norm) in zip(axes[:, 0], panels):
        largest = set()
        for key, cells in table.rows.items():
            if key[0] != norm:
                continue
            batch = None if None in cells else max(cells)
            record = cells[batch]
            points = sorted((int(s), e) for s, e in record.summary["severity_errors"].items())
            name = _name(table, key, False) + ("" if batch is None else f", B={batch}")
            largest |= set() if batch is None else {batch}
            ax.plot(*zip(*points), marker="o", label=name)
        at = ", ".join(f"B={b}" for b in sorted(largest)) or "none recorded"
        ax.set_title(_heading(tables, table, f"{label(norm)}: error against severity "
                                             f"(batch-dependent methods at their largest B: {at})"), fontsize=9)
        ax.set_xlabel("severity")
        ax.set_ylabel("top-1 error (%)")
        ax.set_xticks(range(1, 6))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig


def batch_figure(tables):
    """One panel per batch-dependent method, a line per normalizer against B (log2); source and adabn dashed."""
    panels = []
    for t in tables:
        variants = list(dict.fromkeys(v for _, _, v in t.rows if v not in BATCH_FREE))
        panels += [(t, v) for v in variants] or [(t, None)]
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 3.8 * len(panels)), squeeze=False)
    for ax, (table, variant) in zip(axes[:, 0], panels):
        markers = _markers(table)
        ticks = set(table.batches)
        for key, cells in table.rows.items():
            norm, run, v = key
            color = COLORS.get(norm, "black")
            if v in BATCH_FREE and None in cells:
                ax.axhline(cells[None].summary["mean_error"], color=color, linestyle=FREE_STYLES.get(v, "--"),
                           linewidth=1.2, label=f"{_name(table, key, True)} (any B)")
            elif v == variant:
                points = sorted((b, r.summary["mean_error"]) for b, r in cells.items() if b is not None)
                if points:
                    ax.plot(*zip(*points), color=color, marker=markers[(norm, run)], label=_name(table, key, True))
        ax.set_xscale("log", base=2)
        if ticks:
            ax.set_xticks(sorted(ticks), [str(b) for b in sorted(ticks)])
        ax.set_title(_heading(tables, table, f"{variant or 'no batch-dependent method'}: mean error against the test "
                                             "batch size B"), fontsize=9)
        ax.set_xlabel("test batch size B (log2)")
        ax.set_ylabel("mean top-1 error (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig
