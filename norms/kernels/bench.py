"""Forward+backward time of SN / GN (reference vs fused) and BN at ResNet-50 shapes: `python -m norms.kernels.bench`."""
import argparse
import time

import torch

from .. import BatchNorm2d, GroupNorm2d, SwitchNorm2d

SHAPES = [(32, 64, 56, 56), (32, 256, 56, 56), (32, 512, 28, 28), (32, 2048, 7, 7)]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def layers(c):
    return {
        "bn": BatchNorm2d(c),
        "sn-reference": SwitchNorm2d(c, impl="reference"),
        "sn-fused": SwitchNorm2d(c, impl="fused"),
        "gn-reference": GroupNorm2d(32, c, impl="reference"),
        "gn-fused": GroupNorm2d(32, c, impl="fused"),
    }


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_step(layer, x, dy, repeats, autocast):
    """Median seconds of one forward+backward of `layer` on x (under autocast to x's dtype when it is low precision)."""
    times = []
    for i in range(repeats + 1):
        x.grad = None
        _sync(x.device)
        start = time.perf_counter()
        with torch.autocast(x.device.type, x.dtype, enabled=autocast):
            y = layer(x)
        y.backward(dy.to(y.dtype))
        _sync(x.device)
        if i:  # the first call warms up (kernel compilation, allocator)
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--only", nargs="*", help="layer names to time (default: all)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    print(f"device={device} dtype={args.dtype} channels_last={args.channels_last} threads={torch.get_num_threads()}")
    for n, c, h, w in SHAPES:
        n = args.batch
        x = torch.randn(n, c, h, w, device=device).to(DTYPES[args.dtype]).contiguous(memory_format=fmt)
        x.requires_grad_()
        dy = torch.randn_like(x)
        row = []
        for name, layer in layers(c).items():
            if args.only and name not in args.only:
                continue
            layer = layer.to(device).train()
            seconds = time_step(layer, x, dy, args.repeats, args.dtype != "fp32")
            row.append(f"{name} {1e3 * seconds:8.2f} ms")
        print(f"({n}, {c}, {h}, {w}): " + " | ".join(row), flush=True)


if __name__ == "__main__":
    main()
