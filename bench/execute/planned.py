"""A cell as the plan sees it (state, device, estimate), shared by the plan and the sitting it
fills (bench/execute/plan.py, sitting.py)."""
from __future__ import annotations

from dataclasses import dataclass

from bench.execute.runner import Cell


@dataclass
class PlannedCell:
    cell: Cell
    state: str  # "done", "done (no code fingerprint)", "to run: <why>[; running now ...]" or "stale (--stale reruns): <why>"
    device: str
    train_s: float | None
    predict_s: float | None
    basis: str
    after: str | None = None  # the earlier to-run cell whose training this one reuses: run them together
    peak_mb: int = 0  # the highest peak resident memory of stored runs of the same settings (0: none recorded)

    @property
    def seconds(self) -> float | None:
        """Training and scoring together; None where either has no estimate."""
        return None if self.train_s is None or self.predict_s is None else self.train_s + self.predict_s


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "no estimate"
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"
