"""Benchmarks that print throughput and ratios (`python -m bench.perf.<name>`); never timed unit tests."""
