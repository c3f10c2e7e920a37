"""PNG figures: top-1 against samples per GPU, and the learned SN importance weights per layer (Agg backend)."""
import math

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402

from . import published  # noqa: E402
from .table import label, row_order  # noqa: E402

PAPER_LINE_GPUS = 8  # the paper's sweep: 8 GPUs, samples per GPU varied (the total batch shrinks with it)
COLORS = {"bn": "tab:blue", "gn": "tab:green", "sn": "tab:red", "syncbn": "tab:purple", "syncsn": "tab:orange",
          "in": "tab:brown", "ln": "tab:gray"}
OTHER_GPU_MARKERS = "s^Dv<>ph"
LINE_STYLES = ("-", "-.", ":", (0, (5, 1, 1, 1)))  # one per total batch when a panel has several
RECIPE_MARKERS = "oXP*dH"  # one per recipe of a normalizer (rows "SN (optim.lr=0.1)", "SN (optim.lr=0.2)")
BRANCH_COLORS = {"in": "#4c72b0", "ln": "#55a868", "bn": "#c44e52"}


def plot_accuracy(groups, path, metric, reference=False):
    """One panel per model group; `groups` is [(ModelKey, {Row: {setting: Cell}})]."""
    fig = accuracy_figure(groups, metric, reference)
    fig.savefig(path, dpi=120, bbox_inches="tight")  # "tight": the legends sit outside the axes
    plt.close(fig)


def accuracy_figure(groups, metric, reference=False):
    """plot_accuracy's figure: the paper's model joins its 8-GPU points, any other model its equal total batches."""
    panels = [(key.heading(), cells, key.paper_model) for key, cells in groups] or \
        [(f"{published.MODEL} (published)", {}, True)]
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 4.2 * len(panels)), squeeze=False)
    for ax, (heading, cells, by_gpus) in zip(axes[:, 0], panels):
        _accuracy_panel(ax, heading, cells, metric, reference, by_gpus)
    fig.tight_layout()
    return fig


def split_lines(points, by_gpus):
    """({line key: [(b, value)] by b}, [(g, b, value)] off the lines) of {(g, b): value}.

    by_gpus: one line, the paper's 8-GPU points (key 8). Else a line per total batch g*b holding two or more points:
    there the settings differ only in how many samples each GPU's statistics see."""
    by_key = {}
    for (g, b), value in points.items():
        by_key.setdefault(g if by_gpus else g * b, []).append((g, b, value))
    lines, rest = {}, []
    for key, members in sorted(by_key.items(), reverse=True):
        if (key == PAPER_LINE_GPUS) if by_gpus else (len(members) > 1):
            lines[key] = sorted((b, value) for _, b, value in members)
        else:
            rest += members
    return lines, sorted(rest)


def _accuracy_panel(ax, heading, cells, metric, reference, by_gpus):
    # (norm, legend name, {(g, b): value}, ours, lines by GPU count, line marker) per table row
    rows = row_order(cells)
    series = [(row.norm, row.label, {s: c.value for s, c in cells[row].items() if c.value is not None}, True, by_gpus,
               RECIPE_MARKERS[[r for r in rows if r.norm == row.norm].index(row) % len(RECIPE_MARKERS)])
              for row in rows]
    if reference:  # the published points keep the paper's own lines (8 GPUs)
        series += [(norm, f"{label(norm)} (paper)", {s: v for s, v in zip(published.SETTINGS, values) if v is not None},
                    False, True, "o") for norm, values in published.TOP1.items()]
    series = [(norm, name, points, ours, gpus, marker, *split_lines(points, gpus))
              for norm, name, points, ours, gpus, marker in series if points]
    other_gpus = sorted({g for *_, rest in series for g, _, _ in rest})
    markers = {g: OTHER_GPU_MARKERS[i % len(OTHER_GPU_MARKERS)] for i, g in enumerate(other_gpus)}
    totals = sorted({key for _, _, _, _, gpus, _, lines, _ in series if not gpus for key in lines}, reverse=True)
    ticks = set()
    for norm, name, points, ours, gpus, marker, lines, rest in series:
        ticks |= {b for _, b in points}
        style = dict(color=COLORS.get(norm, "black"), fillstyle="full" if ours else "none", alpha=1.0 if ours else 0.6)
        for key, line in lines.items():
            what = f"{key} GPUs" if gpus else f"total batch {key}"
            linestyle = "--" if not ours else "-" if gpus else LINE_STYLES[totals.index(key) % len(LINE_STYLES)]
            ax.plot(*zip(*line), marker=marker, linestyle=linestyle, label=f"{name}, {what}", **style)
        if not lines:  # the normalizer still gets a legend entry for its colour
            ax.plot([], [], marker, linestyle="none", label=name, **style)
        for g, b, value in rest:
            ax.plot([b], [value], markers[g], linestyle="none", **style)
            if ours:  # the paper's points share positions; the legend explains their markers
                ax.annotate(f"({g},{b})", (b, value), textcoords="offset points", xytext=(4, 3), fontsize=7,
                            color=style["color"])
    for g, marker in markers.items():  # legend entries explaining the off-line markers
        ax.plot([], [], marker, color="black", fillstyle="none", linestyle="none", label=f"{g} GPU(s), off the lines")
    ax.set_xscale("log", base=2)
    if ticks:
        ax.set_xticks(sorted(ticks), [str(b) for b in sorted(ticks)])
        ax.set_xlim(min(ticks) / math.sqrt(2), max(ticks) * math.sqrt(2))
    ax.minorticks_off()
    ax.set_xlabel("samples per GPU (log2 axis)")
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title(heading, fontsize=10)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # outside the axes: never hides a point
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    else:
        ax.text(0.5, 0.5, "no finished runs", ha="center", va="center", transform=ax.transAxes)


def importance(switch_weights):
    """(layers, {"mean": {branch: [w per layer]}, "var": {...}}) from final.json's switch_weights; BN 0 if absent."""
    layers = list(switch_weights)
    out = {kind: {b: [float(switch_weights[layer].get(f"{kind}_{b}", 0.0)) for layer in layers]
                  for b in BRANCH_COLORS} for kind in ("mean", "var")}
    return layers, out


def plot_importance(run_name, switch_weights, path):
    """Two panels (means, variances): per layer, stacked bars of the IN/LN/BN softmax weights."""
    layers, weights = importance(switch_weights)
    fig, axes = plt.subplots(2, 1, figsize=(max(6.0, 0.2 * len(layers) + 2), 7), sharex=True)
    x = range(len(layers))
    for ax, kind in zip(axes, ("mean", "var")):
        bottom = [0.0] * len(layers)
        for branch, color in BRANCH_COLORS.items():
            heights = weights[kind][branch]
            if any(heights):
                ax.bar(x, heights, bottom=bottom, color=color, width=0.85, label=branch.upper())
                bottom = [a + h for a, h in zip(bottom, heights)]
        ax.set_ylim(0, 1)
        ax.set_ylabel(f"{'mean' if kind == 'mean' else 'variance'} weights")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside: never hides a bar
    axes[1].set_xticks(list(x), layers, rotation=90, fontsize=6)
    axes[0].set_title(f"learned SN importance weights: {run_name}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
