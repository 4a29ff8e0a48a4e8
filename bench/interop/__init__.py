"""Models from outside: a suite's model by import path (external.py), a suite's exact split written
out (export.py) and predictions made elsewhere scored as a cell (score.py)."""
