"""This module's home is bench/execute/store.py. The path stays because the model packages import it
(calrec/, baselines/): they are fingerprinted, and editing their imports would mark every stored
cell of theirs as computed by changed code."""
from bench.execute.store import *  # noqa: F401,F403
