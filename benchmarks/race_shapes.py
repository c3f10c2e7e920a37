"""A few small forward+backward passes of the fused SN and GN layers on CUDA, for compute-sanitizer to watch.

  compute-sanitizer --tool racecheck --error-exitcode 1 python -m benchmarks.race_shapes --json OUT.json

Small odd shapes, both memory formats, fp32 and bf16, training and evaluation: every mask and both
reduction layouts of the kernels run, in seconds even under the sanitizer's instrumentation.
"""
import argparse
import sys

# (N, C, H, W), groups of the GN layer
SHAPES = [((2, 8, 5, 7), 4), ((3, 32, 9, 9), 8), ((2, 64, 4, 4), 32)]
# (norm, layout, dtype, training) run at every shape: both layouts in fp32, channels_last in bf16, SN in eval too
PASSES = [("sn", "nchw", "fp32", True), ("sn", "channels_last", "fp32", True), ("sn", "nchw", "fp32", False),
          ("sn", "channels_last", "bf16", True), ("gn", "nchw", "fp32", True), ("gn", "channels_last", "bf16", True)]


def parser():
    p = argparse.ArgumentParser(description="Small fused SN and GN forward+backward passes on CUDA (for "
                                "compute-sanitizer); one line per case, --json for the list.")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                   help="cpu: the same passes on the CPU (with TRITON_INTERPRET=1, the kernels interpreted), to test "
                   "this program")
    p.add_argument("--first", type=int, help="run only the first N passes (tests)")
    p.add_argument("--json", metavar="PATH", help="write the cases run here")
    return p


def cases():
    """(norm, options, shape, layout, dtype, training) of every pass."""
    out = []
    for shape, groups in SHAPES:
        for norm, layout, dtype, training in PASSES:
            options = {"impl": "fused"} if norm == "sn" else {"groups": groups, "impl": "fused"}
            out.append((norm, options, shape, layout, dtype, training))
    return out


def run_case(norm, options, shape, layout, dtype, training, device="cuda"):
    import torch

    import norms
    layer = norms.build_norm(norm, **options)(shape[1]).to(device).train(training)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = torch.randn(shape, device=device).to({"fp32": torch.float32, "bf16": torch.bfloat16}[dtype])
    x = x.contiguous(memory_format=fmt).requires_grad_(True)
    y = layer(x)
    y.backward(torch.randn_like(y))
    if device == "cuda":
        torch.cuda.synchronize()
    return {"norm": norm, "options": options, "shape": list(shape), "layout": layout, "dtype": dtype,
            "training": training, "grad_fn": type(y.grad_fn).__name__ if y.grad_fn is not None else None}


def main(argv=None):
    args = parser().parse_args(argv)
    import torch

    from .cli import write_json
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: race_shapes needs CUDA (torch.cuda.is_available() is False); --device cpu runs the passes "
              "on the CPU", file=sys.stderr)
        return 2
    done = []
    for case in cases()[:args.first]:
        done.append(run_case(*case, device=args.device))
        print(f"{done[-1]['norm']} {done[-1]['shape']} {done[-1]['layout']} {done[-1]['dtype']} "
              f"{'train' if done[-1]['training'] else 'eval'}: {done[-1]['grad_fn']}", flush=True)
    if args.json:
        from norms import backends
        write_json(args.json, {"cases": done, "kernel_self_checks": backends.self_checks()})
    # a pass that did not reach the Triton kernels (a fallback to the reference) checked nothing
    missed = [c for c in done if "triton" not in (c["grad_fn"] or "").lower()]
    if missed:
        print(f"error: {len(missed)} of {len(done)} passes did not run the Triton kernels (grad_fn "
              f"{missed[0]['grad_fn']}): the race check did not check them", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
