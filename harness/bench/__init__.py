"""Throughput benchmarks: the harness's data path and training step against the authors' pipeline."""

from harness.bench.runner import BenchResult, run_bench, save

__all__ = ["BenchResult", "run_bench", "save"]
