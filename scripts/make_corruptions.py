"""Write corrupted copies of an ImageFolder split as ImageNet-C: OUT/<corruption>/<severity>/<class>/<stem>.png.

Deterministic (one seed per image), resumable (rerun the same command), PNG. Needs the optional packages:
pip install -r requirements-corruptions.txt -c constraints.txt
"""
import argparse
import sys
import time

from data import corruption_names as names
from data.corruptions import MIN_SIZE, generate, parse_corruptions, parse_severities
from engine.cli import USER_ERRORS, error_line


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="ImageFolder split to corrupt: SOURCE/<class>/<image>")
    parser.add_argument("out", help="output folder (new, or one this script made: a rerun resumes it)")
    parser.add_argument("--corruptions", default="common",
                        help="'common' (the 15 of the mCE, default), 'extra' (the 4 held-out), 'all', or "
                             f"comma-separated names among {','.join(names.ALL)}")
    parser.add_argument("--severities", default=",".join(map(str, names.SEVERITIES)),
                        help="comma-separated severities among 1..5 (default: all five)")
    parser.add_argument("--seed", type=int, default=0, help="seed every image's corruption derives from (default 0)")
    parser.add_argument("--per-class", type=int, metavar="N", help="only the first N images of each class")
    parser.add_argument("--limit", type=int, metavar="N", help="only the first N images (by class, then file)")
    parser.add_argument("--min-size", type=int, default=MIN_SIZE, metavar="PX",
                        help=f"images with a shorter side under PX are scaled up to it first (default and least "
                             f"{MIN_SIZE})")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="processes corrupting images in parallel; the output does not depend on it (default 1)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    start = time.perf_counter()
    try:
        generate(args.source, args.out, parse_corruptions(args.corruptions), parse_severities(args.severities),
                 seed=args.seed, min_size=args.min_size, per_class=args.per_class, limit=args.limit,
                 progress=print, workers=args.workers)
    except USER_ERRORS + (ImportError,) as e:   # ImportError: the optional packages are missing
        print(f"error: {error_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:    # a full disk, a read-only folder: no partial file is left, a rerun resumes
        print(f"error: {e.filename or args.out}: {e.strerror or e}; free space or fix the folder, then rerun to "
              "resume", file=sys.stderr)
        return 2
    print(f"took {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
