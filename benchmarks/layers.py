"""Per-layer forward+backward time of every normalizer at ResNet-50's normalization input shapes."""
import math

import torch

from engine.precision import autocast

from .timing import interleaved
from .variants import BASELINE

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}
LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
# Ideal traffic of one forward+backward: forward reads x twice (statistics, then normalize) and writes y;
# backward reads x and dy twice (reductions, then dx) and writes dx.
PASSES = 8


def layer_step(layer, x, dy, precision):
    """One training-mode forward+backward of `layer` on x, returning nothing (grads are not accumulated)."""
    inputs = [x] + list(layer.parameters())

    def step():
        with autocast(precision, x.device.type):
            y = layer(x)
        torch.autograd.grad(y, inputs, dy)
    return step


def make_input(shape, precision, layout, device, generator):
    x = torch.randn(shape, generator=generator, device=device).to(PRECISIONS[precision])
    return x.contiguous(memory_format=LAYOUTS[layout]).requires_grad_(True)


def _gradient_like(layer, x, precision, cache, generator):
    """A fixed random dy with the dtype, shape and strides of the layer's output (autocast may change its dtype)."""
    with torch.no_grad(), autocast(precision, x.device.type):
        y = layer(x)
    key = (y.dtype, tuple(y.shape), y.stride())
    if key not in cache:
        dy = torch.randn(y.shape, generator=generator, device=y.device).to(y.dtype)
        cache[key] = torch.empty_like(y).copy_(dy)  # empty_like keeps y's memory format
    return cache[key]


def measure_shape(shape, precision, layout, device, factories, clock, repeats, warmup, min_sample_s):
    """interleaved() result for one (N, C, H, W) over the available variants, and the input's element size."""
    generator = torch.Generator(device=device).manual_seed(0)
    x = make_input(shape, precision, layout, device, generator)
    steps, cache, failed = {}, {}, {}
    for name, factory in factories.items():
        try:
            layer = factory(shape[1]).to(device).train()
            steps[name] = layer_step(layer, x, _gradient_like(layer, x, precision, cache, generator), precision)
        except Exception as error:  # a variant under development must not take the others down
            failed[name] = {"error": f"{type(error).__name__}: {error}".splitlines()[0]}
    timed = interleaved(steps, clock, repeats, warmup, min_sample_s)
    return {name: timed.get(name) or failed[name] for name in factories}, x.element_size()


def summarize_shape(shape, count, element_size, timed, rate):
    """Per-shape record: medians, ratios to BN and the fraction of the memory-traffic floor reached."""
    floor_bytes = PASSES * math.prod(shape) * element_size
    medians = {v: t["median_s"] for v, t in timed.items() if "median_s" in t}
    record = {"shape": list(shape), "count": count, "element_size": element_size, "floor_bytes": floor_bytes,
              "median_s": medians, "samples_s": {v: t["samples_s"] for v, t in timed.items() if "median_s" in t},
              "inner": {v: t["inner"] for v, t in timed.items() if "median_s" in t},
              "errors": {v: t["error"] for v, t in timed.items() if "error" in t},
              "bandwidth_fraction": {v: floor_bytes / (m * rate) for v, m in medians.items()}}
    if BASELINE in medians:
        record["ratio_to_bn"] = {v: m / medians[BASELINE] for v, m in medians.items() if v != BASELINE}
    return record


def summarize_run(records, variants, rate):
    """Totals over the network (each shape weighted by its layer count) and the worst per-layer ratio."""
    complete = [v for v in variants if all(v in r["median_s"] for r in records)]
    total = {v: sum(r["count"] * r["median_s"][v] for r in records) for v in complete}
    floor = sum(r["count"] * r["floor_bytes"] for r in records)
    out = {"total_s": total, "total_floor_bytes": floor,
           "total_bandwidth_fraction": {v: floor / (t * rate) for v, t in total.items()}}
    if BASELINE in total:
        out["total_ratio_to_bn"] = {v: t / total[BASELINE] for v, t in total.items() if v != BASELINE}
        out["max_ratio_to_bn"] = {}
        for v in complete:
            if v != BASELINE:
                worst = max(records, key=lambda r: r["ratio_to_bn"][v])
                out["max_ratio_to_bn"][v] = {"ratio": worst["ratio_to_bn"][v], "shape": worst["shape"]}
    return out


def run_layers(device, shapes, batches, precisions, layouts, factories, clock, repeats, warmup, min_sample_s,
               rate, progress=print):
    """Every (batch, precision, layout) configuration; `rate` is the measured copy rate in bytes/s."""
    runs = []
    for batch in batches:
        for precision in precisions:
            for layout in layouts:
                progress(f"layers: N={batch} {precision} {layout}")
                records = []
                for chw, count in shapes:
                    shape = (batch, *chw)
                    timed, size = measure_shape(shape, precision, layout, device, factories, clock, repeats,
                                                warmup, min_sample_s)
                    records.append(summarize_shape(shape, count, size, timed, rate))
                run = {"batch": batch, "precision": precision, "layout": layout, "shapes": records}
                run.update(summarize_run(records, list(factories), rate))
                runs.append(run)
    return runs
