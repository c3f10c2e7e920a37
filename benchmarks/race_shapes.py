"""A few small forward+backward passes of the fused SN and GN layers on CUDA, for compute-sanitizer to watch.

  compute-sanitizer --tool racecheck --error-exitcode 1 python -m benchmarks.race_shapes --json OUT.json

Small odd shapes, both memory formats, fp32 and bf16, training (and evaluation in fp32): every mask and
both reduction layouts of the kernels run, in seconds even under the sanitizer's instrumentation.
"""
import argparse
import sys

# (N, C, H, W), groups of the GN layer
SHAPES = [((2, 8, 5, 7), 4), ((3, 32, 9, 9), 8), ((2, 64, 4, 4), 32)]
LAYOUTS = ("nchw", "channels_last")
DTYPES = ("fp32", "bf16")


def parser():
    p = argparse.ArgumentParser(description="Small fused SN and GN forward+backward passes on CUDA (for "
                                "compute-sanitizer); one line per case, --json for the list.")
    p.add_argument("--json", metavar="PATH", help="write the cases run here")
    return p


def cases():
    """(norm, options, shape, layout, dtype, training) of every pass."""
    out = []
    for shape, groups in SHAPES:
        for layout in LAYOUTS:
            for dtype in DTYPES:
                for training in (True, False) if dtype == "fp32" else (True,):
                    out.append(("sn", {"impl": "fused"}, shape, layout, dtype, training))
                out.append(("gn", {"groups": groups, "impl": "fused"}, shape, layout, dtype, True))
    return out


def run_case(norm, options, shape, layout, dtype, training):
    import torch

    import norms
    layer = norms.build_norm(norm, **options)(shape[1]).cuda().train(training)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = torch.randn(shape, device="cuda").to({"fp32": torch.float32, "bf16": torch.bfloat16}[dtype])
    x = x.contiguous(memory_format=fmt).requires_grad_(True)
    y = layer(x)
    y.backward(torch.randn_like(y))
    torch.cuda.synchronize()
    return {"norm": norm, "options": options, "shape": list(shape), "layout": layout, "dtype": dtype,
            "training": training, "grad_fn": type(y.grad_fn).__name__ if y.grad_fn is not None else None}


def main(argv=None):
    args = parser().parse_args(argv)
    import torch

    from .cli import write_json
    if not torch.cuda.is_available():
        print("error: race_shapes needs CUDA (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    done = []
    for case in cases():
        done.append(run_case(*case))
        print(f"{done[-1]['norm']} {done[-1]['shape']} {done[-1]['layout']} {done[-1]['dtype']} "
              f"{'train' if done[-1]['training'] else 'eval'}: {done[-1]['grad_fn']}", flush=True)
    if args.json:
        write_json(args.json, {"cases": done})
    return 0


if __name__ == "__main__":
    sys.exit(main())
