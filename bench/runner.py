"""This module's home is bench/execute/runner.py (validation scoring: bench/execute/scoring.py). The
path stays because the model packages import it (calrec/, baselines/): they are fingerprinted, and
editing their imports would mark every stored cell of theirs as computed by changed code."""
from bench.execute.runner import *  # noqa: F401,F403
from bench.execute.scoring import validation_metrics, validation_ndcg10  # noqa: F401
