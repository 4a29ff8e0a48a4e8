"""Baselines, each behind the same fit/predict contract (bench.models)."""
