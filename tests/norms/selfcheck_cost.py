"""The first-use self-check's cost against a ResNet-50 training step, on this machine's CPU.

Run as `python -m tests.norms.selfcheck_cost`. The check runs the compiled CPU kernels in the place of
the Triton ones (on CUDA it runs the same two small forward+backward steps per layer kind, dtype and
layout); the step is ResNet-50 with SN at batch 8, 224x224, SGD. Prints medians in milliseconds.
"""
import statistics
import time

import torch

import norms
from models import ResNet
from norms import selfcheck


def median_ms(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main():
    for kind in ("sn", "gn"):
        for layout in ("nchw", "channels_last"):
            ms = median_ms(lambda k=kind, l=layout: selfcheck.check(k, "cpu_kernels", "cpu", torch.float32, l), 7)
            print(f"self-check {kind} float32 {layout}: {ms:.1f} ms")
    model = ResNet(50, norm=norms.build_norm("sn"), num_classes=1000)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    images, labels = torch.randn(8, 3, 224, 224), torch.randint(0, 1000, (8,))

    def step():
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()  # warm-up
    print(f"ResNet-50 SN training step, batch 8: {median_ms(step, 5):.0f} ms ({torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
