"""Whole-network training throughput: ResNet steps on synthetic data already on the device, SGD included."""
import gc

import torch
import torch.nn.functional as F

import models
from configs.schema import OptimConfig
from engine.optim import build_optimizer
from engine.precision import autocast

from .timing import interleaved
from .variants import BASELINE

CPU_MEMORY_NOTE = ("n/a on CPU: the only per-process figure, ru_maxrss, is a high-water mark of the whole "
                   "process and cannot be attributed to one of the models built in the same run")


def train_step(net, optimizer, images, labels, precision):
    """One SGD training step as the trainer takes it (autocast forward, fp32 master weights)."""
    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast(precision, images.device.type):
            loss = F.cross_entropy(net(images), labels)
        loss.backward()
        optimizer.step()
    return step


def build(factory, depth, batch, channels_last, compile, device, num_classes):
    """(network, optimizer) of a ResNet v1 with the variant's norm layers, seeded so every variant starts alike."""
    torch.manual_seed(0)
    model = models.ResNet(depth, "v1", num_classes=num_classes, norm=factory).to(device).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    # The recipe's optimizer: momentum 0.9, weight decay 1e-4 on everything, lr 0.1 per 256 images.
    optimizer = build_optimizer(model, OptimConfig(), lr=0.1 * batch / 256)
    return (torch.compile(model) if compile else model), optimizer


def synthetic_batch(device, batch, image_size, layout, num_classes):
    """(images, labels): a fixed random batch already on the device, in the layout's memory format."""
    generator = torch.Generator(device=device).manual_seed(0)
    images = torch.randn(batch, 3, image_size, image_size, generator=generator, device=device)
    if layout == "channels_last":
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, num_classes, (batch,), generator=generator, device=device)
    return images, labels


def measured_first_step(device, make, clock):
    """(step, record): step = make() called once, timed, with the peak memory that model added on CUDA.

    record: first_step_s and peak_memory_bytes (None on the CPU, with the reason in memory_note), or
    {"error"} and step None when building or the first step raised (a variant under development must
    not take the others down).
    """
    try:
        # Memory is taken per model before the interleaved timing, counting only what this model added.
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            before = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
        step = make()
        token = clock.start()
        step()
        record = {"first_step_s": clock.stop(token)}
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            record.update(peak_memory_bytes=torch.cuda.max_memory_allocated(device) - before,
                          memory_note="torch.cuda.max_memory_allocated over the model's build and first step, "
                          "minus what was allocated before")
        else:
            record.update(peak_memory_bytes=None, memory_note=CPU_MEMORY_NOTE)
        return step, record
    except Exception as error:
        return None, {"error": f"{type(error).__name__}: {error}".splitlines()[0]}


def run_config(device, factories, depth, image_size, batch, precision, layout, compile, clock, repeats,
               warmup, num_classes=1000):
    """Steps/s, images/s and peak memory of every variant for one (precision, layout) setting."""
    images, labels = synthetic_batch(device, batch, image_size, layout, num_classes)
    steps, out = {}, {}
    for name, factory in factories.items():
        def make(factory=factory):
            net, optimizer = build(factory, depth, batch, layout == "channels_last", compile, device, num_classes)
            return train_step(net, optimizer, images, labels, precision)
        step, out[name] = measured_first_step(device, make, clock)
        out[name].pop("first_step_s", None)
        if step is not None:
            steps[name] = step
    timed = interleaved(steps, clock, repeats, warmup - 1)  # the first step above was one warm-up step
    for name, t in timed.items():
        out[name].update(t)
        if "median_s" in t:
            out[name].update(steps_per_s=1 / t["median_s"], images_per_s=batch / t["median_s"])
    if BASELINE in steps and "median_s" in out[BASELINE]:
        for name in steps:
            if name != BASELINE and "median_s" in out[name]:
                out[name]["step_ratio_to_bn"] = out[name]["median_s"] / out[BASELINE]["median_s"]
    del steps
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"depth": depth, "image_size": image_size, "batch": batch, "precision": precision, "layout": layout,
            "compile": compile, "variants": {name: out[name] for name in factories}}


def run_network(device, factories, depth, image_size, batches, precisions, layouts, compile, clock, repeats,
                warmup, progress=print):
    """One run_config per (batch, precision, layout)."""
    runs = []
    for batch in batches:
        for precision in precisions:
            for layout in layouts:
                progress(f"network: ResNet-{depth} {image_size}px batch {batch} {precision} {layout}"
                         f"{' compiled' if compile else ''}")
                runs.append(run_config(device, factories, depth, image_size, batch, precision, layout, compile,
                                       clock, repeats, warmup))
    return runs
