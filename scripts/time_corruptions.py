"""Time imagecorruptions' corrupt() per image for each corruption at one size (severities 1..5 in turn)."""
import argparse
import sys
import time

import numpy as np

from data import corruption_names as names
from data.corruptions import SEEDED, corrupt_function


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=32, help="side of the square RGB noise image, px (default 32)")
    parser.add_argument("--reps", type=int, default=50, help="images timed per corruption (default 50)")
    args = parser.parse_args(argv)
    try:
        corrupt = corrupt_function()
    except ImportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    image = np.random.default_rng(0).integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
    total = 0.0
    for c in names.ALL:
        extra = {"seed": 0} if c in SEEDED else {}
        corrupt(image, corruption_name=c, severity=3, **extra)     # warm-up: numba's compile, the frost files
        start = time.perf_counter()
        for rep in range(args.reps):
            corrupt(image, corruption_name=c, severity=1 + rep % 5, **extra)
        ms = (time.perf_counter() - start) / args.reps * 1000
        total += ms
        print(f"{c:18s} {ms:9.2f} ms/image")
    print(f"{'all 19':18s} {total:9.2f} ms/image ({args.size} px, {args.reps} images each)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
