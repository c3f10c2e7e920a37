"""Benchmark the norm layers, whole-network training and the input pipeline (see benchmarks/ and the README)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
