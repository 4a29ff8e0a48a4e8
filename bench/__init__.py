"""Benchmark and ablation harness for LLM-based sequential recommendation (CALRec vs ID-based models)."""
