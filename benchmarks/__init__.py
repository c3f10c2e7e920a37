"""Benchmark harness behind scripts/benchmark.py: norm layers, whole network, input pipeline."""
