"""Benchmark the norm layers, whole-network training, the input pipeline and the trainer (docs/performance.md)."""
import sys

from benchmarks.cli import main

if __name__ == "__main__":
    sys.exit(main())
