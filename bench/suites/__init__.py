"""Suite files (`*.yaml`: datasets x model variants x seeds, ablation tables, findings), their loader
(load.py) and the schema their fields and model parameters are checked against (schema.py)."""
