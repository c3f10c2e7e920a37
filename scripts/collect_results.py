"""Collect training runs into the SN paper's table (results.md, results.csv) and figures (PNG), and robustness
records into their table (robustness.md, robustness.csv) and figures.

  python scripts/collect_results.py RUNS_DIR [--out DIR] [--reference paper] [--metric top1|best_top1]
                                    [--sn-run NAME|all]
  python scripts/collect_results.py [RUNS_DIR] --robustness PATH [PATH ...] [--baseline RUN] [--out DIR]

Reads only config.yaml and final.json of every run folder under RUNS_DIR (no torch needed). A cell averages only
replicates, runs whose config.yaml agree except for the seed and keys that do not change the result; runs of
other recipes get rows of their own (results/recipe.py). --robustness reads eval.py's records (JSON files with
"kind": "robustness", or folders of them; results/robustness.py).
"""
import argparse
import os
import sys

from results import ResultsError, collect


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs_dir", nargs="?", help="folder holding the run folders (log.out_dir)")
    parser.add_argument("--out", help="where to write results.md, results.csv and the PNGs (default: RUNS_DIR; "
                                      "robustness alone: the first --robustness folder, or a record's folder)")
    parser.add_argument("--reference", choices=["paper"],
                        help="add the published ResNet-50 table as reference rows (every table then has the paper's "
                             "nine columns)")
    parser.add_argument("--metric", choices=["top1", "best_top1"], default="top1",
                        help="final-epoch top-1 (default) or the best validation top-1 of each run")
    parser.add_argument("--sn-run", metavar="NAME",
                        help="SN run whose importance weights sn_importance.png shows (default: the finished SN "
                             "run with the most samples per GPU, then the most GPUs); 'all': one "
                             "sn_importance_<run>.png per SN run")
    parser.add_argument("--robustness", nargs="+", metavar="PATH",
                        help="robustness records (*.json) or folders of them: write robustness.md, robustness.csv "
                             "and the robustness figures")
    parser.add_argument("--baseline", metavar="RUN",
                        help="with --robustness: the run (record `run`) whose corruption errors normalize the others "
                             "(relative mCE; its source record, else its only one)")
    args = parser.parse_args(argv)
    try:
        if args.baseline is not None and not args.robustness:
            raise ResultsError("--baseline needs --robustness PATH: it normalizes robustness records")
        if args.runs_dir is None and not args.robustness:
            raise ResultsError("no RUNS_DIR and no --robustness PATH: name a runs folder, records, or both")
        text = ""
        if args.runs_dir is not None:
            text += collect(args.runs_dir, args.out, args.metric, args.reference, args.sn_run,
                            log=lambda line: print(line, file=sys.stderr))
        if args.robustness:
            from results.robustness import collect_robustness
            first = args.robustness[0]
            out = args.out or args.runs_dir or (first if os.path.isdir(first) else os.path.dirname(first) or ".")
            text += collect_robustness(args.robustness, out, args.baseline,
                                       log=lambda line: print(line, file=sys.stderr))
    except (ResultsError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
