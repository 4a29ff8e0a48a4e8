"""What a stored run's record (run.json) says about its cost: the training it asked for and ran,
its wall times, its device, and the model family that other runs must share to inform an estimate.
`bench plan` reads stored runs only through these."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from bench.execute.store import RunStore
from bench.report.results import epoch_budget


def budget(model: str, params: dict) -> float | None:
    """Training units the config asks for: epochs, or CALRec's stage steps (None: not a trained model)."""
    if model == "calrec":
        from calrec.config import CALRecConfig, stage1_settings

        t = CALRecConfig.from_params(params).training
        return float((stage1_settings(t.stage1)["steps"] if t.stage1 else 0) + t.stage2_steps)
    epochs = epoch_budget(model, params)
    return None if epochs is None else float(epochs)


def timings(rec: dict) -> dict:
    return (rec.get("model_info") or {}).get("timings") or {}


def stages(rec: dict) -> list[dict]:
    return [t for t in timings(rec).values() if isinstance(t, dict)]


def units_run(rec: dict) -> float | None:
    """Training units a stored run actually ran: epochs, or CALRec's stage steps."""
    info = rec.get("model_info") or {}
    if info.get("epochs_run"):
        return float(info["epochs_run"])
    return float(sum(t.get("steps", 0) for t in stages(rec))) or None


def tokens_run(rec: dict) -> float | None:
    """Tokens a stored CALRec run trained on (None where its record does not say)."""
    return float(sum(t.get("tokens", 0) for t in stages(rec))) or None


def record_device(rec: dict) -> str:
    return "gpu" if (rec.get("machine") or {}).get("accelerator") else "cpu"


def train_seconds(rec: dict) -> float:
    """Training wall time of a record; for CALRec the stages' own times (a cached stage costs its original)."""
    ran = stages(rec)
    if rec["config"]["model"]["name"] == "calrec" and ran:
        return float(sum(t.get("train_seconds", 0.0) for t in ran))
    return float(rec["fit_seconds"])


def fit_seconds(rec: dict) -> float:
    """What fitting the same cell again costs: the record's whole fit (for CALRec its validations too,
    an uncached paper-template validation alone took an hour) plus the training of stages it loaded
    from the shared cache instead of training them, less the building of CALRec's frozen-layer cache,
    which the cells after the first reuse (`frozen_cache_seconds` says what a build costs)."""
    reused = sum(t.get("train_seconds", 0.0) for t in stages(rec) if t.get("cached"))
    return float(rec["fit_seconds"]) + float(reused) - frozen_cache_seconds(rec)


def frozen_cache_seconds(rec: dict) -> float:
    """Seconds a CALRec run spent building (or, ~1 s, loading) its frozen-layer cache."""
    return float(sum((timings(rec).get("frozen_cache_seconds") or {}).values()))


def family(model: str, params: dict) -> str:
    """What a stored run must share to inform an estimate: the model, and the architecture for a
    wrapper of several (RecBole's `model: SASRec`, `model: STAMP`, ...)."""
    inner = params.get("model")
    return f"{model}:{inner}" if isinstance(inner, str) else model


def stored_records(root: Path) -> dict[tuple[str, str], list[dict]]:
    """(model family, dataset spec) -> every stored run.json under root/runs, any suite."""
    out = defaultdict(list)
    for cell in RunStore(root).cells():
        rec = RunStore.record(cell)
        try:
            model = rec["config"]["model"]
            out[(family(model["name"], model["params"]), rec["config"]["dataset"]["spec"])].append(rec)
        except (TypeError, KeyError):  # unreadable (None) or incomplete
            continue
    return out
