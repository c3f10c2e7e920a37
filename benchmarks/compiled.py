"""Compiled against eager: a ResNet training step (forward, backward, SGD) of every variant, both ways.

Each (variant, mode) model is built and stepped once alone (compilation happens there, timed apart and
with its peak memory), then all of them are timed in one interleaved loop, so eager and compiled steps
share the machine's state alike. Models are compiled with dynamic=False: every batch size gets its own
static graph, as a training run with a fixed batch does.
"""
import gc

import torch

from .network import build, measured_first_step, synthetic_batch, train_step
from .timing import interleaved
from .variants import BASELINE

MODES = ("eager", "compiled")
BACKENDS = ("inductor", "aot_eager", "eager")  # eager: TorchDynamo's graph capture only, for tests


def dynamo_counts():
    """(graph breaks, graphs captured) so far in this process, from TorchDynamo's counters (None if unreadable)."""
    try:
        from torch._dynamo.utils import counters
        return sum(counters["graph_break"].values()), counters["stats"]["unique_graphs"]
    except (ImportError, AttributeError, KeyError, TypeError):
        return None, None


def _difference(after, before):
    return None if after is None or before is None else after - before


def summarize(variants, batch):
    """Fill in rates and ratios from each (variant, mode) record's samples.

    variants: {name: {mode: record}}, a record holding interleaved()'s "median_s" (and "first_step_s") or
    "error".
    Adds median_s, steps_per_s, images_per_s, compile_s (first step minus the median step), the ratio of
    the median to bn's in the same mode, and per variant the compiled speedup (eager median / compiled).
    """
    for modes in variants.values():
        for rec in modes.values():
            if "median_s" in rec:
                rec.update(steps_per_s=1 / rec["median_s"], images_per_s=batch / rec["median_s"])
                if rec.get("first_step_s") is not None:
                    rec["compile_s"] = rec["first_step_s"] - rec["median_s"]
    base = variants.get(BASELINE, {})
    for name, modes in variants.items():
        for mode, rec in modes.items():
            if name != BASELINE and "median_s" in rec and "median_s" in base.get(mode, {}):
                rec["step_ratio_to_bn"] = rec["median_s"] / base[mode]["median_s"]
        eager, compiled = modes.get("eager", {}), modes.get("compiled", {})
        if "median_s" in eager and "median_s" in compiled:
            modes["compiled_speedup"] = eager["median_s"] / compiled["median_s"]
    return variants


def run_config(device, factories, depth, image_size, batch, precision, layout, backend, clock, repeats, warmup,
               num_classes=1000):
    """Every variant eager and compiled at one batch size: first steps apart, then interleaved timing."""
    images, labels = synthetic_batch(device, batch, image_size, layout, num_classes)
    steps, variants = {}, {name: {} for name in factories}
    for name, factory in factories.items():
        for mode in MODES:
            def make(factory=factory, mode=mode):
                net, optimizer = build(factory, depth, batch, layout == "channels_last", False, device,
                                       num_classes)
                if mode == "compiled":
                    net = torch.compile(net, backend=backend, dynamic=False)
                return train_step(net, optimizer, images, labels, precision)
            breaks, graphs = dynamo_counts()
            step, rec = measured_first_step(device, make, clock)
            if mode == "compiled" and "error" not in rec:
                after = dynamo_counts()
                rec.update(graph_breaks=_difference(after[0], breaks), graphs=_difference(after[1], graphs))
            if mode == "eager":
                rec.pop("first_step_s", None)  # nothing is compiled: the first step is only allocations
            variants[name][mode] = rec
            if step is not None:
                steps[f"{name}/{mode}"] = step
    timed = interleaved(steps, clock, repeats, warmup - 1)  # the first step above was one warm-up step
    for key, t in timed.items():
        name, mode = key.split("/")
        variants[name][mode].update(t)
    del steps
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    torch._dynamo.reset()  # the next batch size compiles afresh instead of recompiling these graphs
    return {"depth": depth, "image_size": image_size, "batch": batch, "precision": precision, "layout": layout,
            "backend": backend, "variants": summarize(variants, batch)}


def run_compile(device, factories, depth, image_size, batches, precision, layout, backend, clock, repeats, warmup,
                progress=print, on_run=None):
    """One run_config per batch size; on_run(runs) after each (the caller saves partial results)."""
    runs = []
    for batch in batches:
        progress(f"compile: ResNet-{depth} {image_size}px batch {batch} {precision} {layout}, eager and "
                 f"torch.compile(backend={backend!r})")
        runs.append(run_config(device, factories, depth, image_size, batch, precision, layout, backend, clock,
                               repeats, warmup))
        if on_run is not None:
            on_run(runs)
    return runs
