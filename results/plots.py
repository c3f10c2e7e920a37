"""PNG figures: top-1 against samples per GPU, and the learned SN importance weights per layer (Agg backend)."""
import math

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402

from . import published  # noqa: E402
from .table import label, norm_order  # noqa: E402

LINE_GPUS = 8  # the paper's main sweep: 8 GPUs, samples per GPU varied; other GPU counts are separate markers
COLORS = {"bn": "tab:blue", "gn": "tab:green", "sn": "tab:red", "syncbn": "tab:purple", "syncsn": "tab:orange",
          "in": "tab:brown", "ln": "tab:gray"}
OTHER_GPU_MARKERS = "s^Dv<>ph"
BRANCH_COLORS = {"in": "#4c72b0", "ln": "#55a868", "bn": "#c44e52"}


def plot_accuracy(groups, path, metric, reference=False):
    """One panel per model group; `groups` is [(heading, {norm: {setting: Cell}})]."""
    panels = groups or [(f"{published.MODEL} (published)", {})]
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 4.2 * len(panels)), squeeze=False)
    for ax, (heading, cells) in zip(axes[:, 0], panels):
        _accuracy_panel(ax, heading, cells, metric, reference)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _accuracy_panel(ax, heading, cells, metric, reference):
    other_gpus = sorted({g for per_norm in cells.values() for (g, _), c in per_norm.items()
                         if g != LINE_GPUS and c.value is not None}
                        | ({g for g, _ in published.SETTINGS if g != LINE_GPUS} if reference else set()))
    markers = {g: OTHER_GPU_MARKERS[i % len(OTHER_GPU_MARKERS)] for i, g in enumerate(other_gpus)}
    ticks = set()
    for norm in norm_order(cells):
        points = {s: c.value for s, c in cells[norm].items() if c.value is not None}
        ticks |= {b for _, b in points}
        _series(ax, norm, points, markers, label(norm), filled=True)
    if reference:
        for norm, values in published.TOP1.items():
            points = {s: v for s, v in zip(published.SETTINGS, values) if v is not None}
            ticks |= {b for _, b in points}
            _series(ax, norm, points, markers, f"{label(norm)} (paper)", filled=False)
    for g, marker in markers.items():  # legend entries explaining the non-line markers
        ax.plot([], [], marker, color="black", fillstyle="none", linestyle="none", label=f"{g} GPU(s), not on the lines")
    ax.set_xscale("log", base=2)
    if ticks:
        ax.set_xticks(sorted(ticks), [str(b) for b in sorted(ticks)])
        ax.set_xlim(min(ticks) / math.sqrt(2), max(ticks) * math.sqrt(2))
    ax.minorticks_off()
    ax.set_xlabel("samples per GPU (log2); lines: 8 GPUs")
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title(heading, fontsize=10)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, ncol=2)
    else:
        ax.text(0.5, 0.5, "no finished runs", ha="center", va="center", transform=ax.transAxes)


def _series(ax, norm, points, markers, name, filled):
    if not points:
        return
    style = dict(color=COLORS.get(norm, "black"), fillstyle="full" if filled else "none", alpha=1.0 if filled else 0.6)
    line = sorted((b, v) for (g, b), v in points.items() if g == LINE_GPUS)
    ax.plot(*(zip(*line) if line else ([], [])), "o-" if filled else "o--", label=name, **style)
    for (g, b), v in sorted(points.items()):
        if g != LINE_GPUS:
            ax.plot([b], [v], markers[g], linestyle="none", **style)
            if filled:  # the paper's points share positions; the legend explains their markers
                ax.annotate(f"({g},{b})", (b, v), textcoords="offset points", xytext=(4, 3), fontsize=7,
                            color=style["color"])


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
