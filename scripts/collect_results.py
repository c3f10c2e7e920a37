"""Collect training runs into the SN paper's table (results.md, results.csv) and figures (PNG).

  python scripts/collect_results.py RUNS_DIR [--out DIR] [--reference paper] [--metric top1|best_top1]
                                    [--sn-run NAME|all]

Reads only config.yaml and final.json of every run folder under RUNS_DIR (no torch needed). A cell averages only
replicates, runs whose config.yaml agree except for the seed and keys that do not change the result; runs of
other recipes get rows of their own (results/recipe.py).
"""
import argparse
import sys

from results import ResultsError, collect


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs_dir", help="folder holding the run folders (log.out_dir)")
    parser.add_argument("--out", help="where to write results.md, results.csv and the PNGs (default: RUNS_DIR)")
    parser.add_argument("--reference", choices=["paper"],
                        help="add the published ResNet-50 table as reference rows (every table then has the paper's "
                             "nine columns)")
    parser.add_argument("--metric", choices=["top1", "best_top1"], default="top1",
                        help="final-epoch top-1 (default) or the best validation top-1 of each run")
    parser.add_argument("--sn-run", metavar="NAME",
                        help="SN run whose importance weights sn_importance.png shows (default: the finished SN "
                             "run with the most samples per GPU, then the most GPUs); 'all': one "
                             "sn_importance_<run>.png per SN run")
    args = parser.parse_args(argv)
    try:
        text = collect(args.runs_dir, args.out, args.metric, args.reference, args.sn_run,
                       log=lambda line: print(line, file=sys.stderr))
    except (ResultsError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
