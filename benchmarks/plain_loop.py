"""A minimal DDP training loop: the yardstick that `scripts/benchmark.py --what trainer` holds train.py against.

  torchrun --standalone --nproc_per_node=W benchmarks/plain_loop.py --data ROOT|synthetic --out TIMES.json [...]

Nothing but the training itself: a DataLoader over a DistributedSampler, the model and transforms this
repository builds, torch.optim.SGD, DDP. Rank 0 takes time.time() after every `--record-every`-th step
(after a device synchronization on CUDA) and writes them to --out as {"times": {step: seconds}, ...}.
"""
import argparse
import dataclasses
import json
import os
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
import torchvision
from torch.nn.parallel import DistributedDataParallel

import models
import norms
from configs.schema import DataConfig, ModelConfig, NormConfig
from data.loaders import SYNTHETIC_TRAIN
from data.synthetic import SyntheticDataset
from data.transforms import train_transform


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="ImageFolder root holding train/, or 'synthetic'")
    p.add_argument("--out", required=True, help="JSON file for rank 0's step times")
    p.add_argument("--depth", type=int, default=18)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--small-stem", action="store_true")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--norm", default="bn")
    p.add_argument("--crop", type=int, default=32, help="RandomResizedCrop size (synthetic: image size)")
    p.add_argument("--batch", type=int, default=32, help="images per process and step")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--record-every", type=int, default=20)
    return p.parse_args(argv)


def build(depth, width, small_stem, num_classes, norm, lr, device):
    """The plain loop's model (this repository's builder) and torch.optim.SGD on all its parameters."""
    model = models.build_model(ModelConfig(depth=depth, width=width, small_stem=small_stem, num_classes=num_classes),
                               norms.build_norm(**dataclasses.asdict(NormConfig(type=norm)))).to(device)
    return model, torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)


def make_step(net, optimizer, device, precision):
    """The plain loop's step on a batch: forward, cross-entropy, zero_grad, backward, SGD."""
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    def step(images, targets):
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        with autocast:
            loss = F.cross_entropy(net(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def main(argv=None):
    args = parse_args(argv)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True  # as the trainer does
    else:
        device = torch.device("cpu")
    if world > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    torch.manual_seed(0)

    if args.data == "synthetic":  # the trainer's synthetic training set (data/loaders.py)
        dataset = SyntheticDataset(max(SYNTHETIC_TRAIN, world * args.batch), args.num_classes, args.crop)
    else:
        transform = train_transform(DataConfig(train_crop=args.crop))
        dataset = torchvision.datasets.ImageFolder(os.path.join(args.data, "train"), transform)
    sampler = torch.utils.data.distributed.DistributedSampler(dataset, world, rank, shuffle=True, drop_last=True)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch, sampler=sampler, num_workers=args.workers,
                                         pin_memory=device.type == "cuda", drop_last=True)

    model, optimizer = build(args.depth, args.width, args.small_stem, args.num_classes, args.norm, args.lr, device)
    net = model
    if world > 1:  # running statistics stay per process, as in the trainer (no buffer broadcast per forward)
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                      broadcast_buffers=False)
    step_on = make_step(net, optimizer, device, args.precision)

    times, step, epoch = {}, 0, 0
    model.train()
    while step < args.steps:
        sampler.set_epoch(epoch)
        for images, targets, *_ in loader:
            step_on(images, targets)
            step += 1
            if step % args.record_every == 0:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                times[step] = time.time()
            if step == args.steps:
                break
        epoch += 1

    if rank == 0:
        with open(args.out, "w") as f:
            json.dump({"times": times, "world": world, "batch": args.batch, "steps_per_epoch": len(loader),
                       "device": str(device)}, f)
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
