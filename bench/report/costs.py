"""What each model cost to run: a markdown table per dataset from the stored `run.json` records
(wall times, epochs, parameters, device), beside the metric tables. A pure function of the stored
runs, like the metric tables, so `bench check` can rebuild it byte for byte."""
from __future__ import annotations

import re

import numpy as np
from tabulate import tabulate

from bench.report.results import VariantRuns
from bench.suites.load import Suite


def device(record: dict) -> str:
    """Where a run ran: the accelerator, else the CPU's model and cores ("Intel Xeon (2 cores)"), since
    floating-point results differ between CPU models too."""
    m = record.get("machine", {})
    if m.get("accelerator"):
        return m["accelerator"]
    cpu = " ".join(re.sub(r"\((R|TM)\)|\b(Processor|CPU)\b|@.*", " ", m.get("cpu_model") or "").split())
    # The widest vector feature recorded (newer records): one model name covers CPUs 3-4x apart.
    best = [f for f in ("amx_bf16", "avx512_bf16", "avx512f", "avx2") if f in (m.get("cpu_flags") or [])][:1]
    return f"{cpu or 'unrecorded CPU'} ({m.get('cpus', '?')} cores{''.join(', ' + f for f in best)})"


def _mean_sd(values: list[float], fmt: str) -> str:
    if not values:
        return ""
    text = format(float(np.mean(values)), fmt)
    return text + (f" ±{format(float(np.std(values, ddof=1)), fmt)}" if len(values) > 1 else "")


def cost_rows(suite: Suite, runs: dict[str, VariantRuns]) -> list[list[str]]:
    labels = {v.key: v.label for v in suite.variants}
    rows = []
    for key in [v.key for v in suite.variants if v.key in runs]:
        records = runs[key].records
        info = [r.get("model_info") or {} for r in records]
        epochs = [i["epochs_run"] for i in info if i.get("epochs_run") is not None]
        best = [i["best_epoch"] for i in info if i.get("best_epoch") is not None]
        params = sorted({i["parameters"] for i in info if i.get("parameters") is not None})
        rows.append([labels[key], ", ".join(map(str, runs[key].seeds)),
                     _mean_sd([r["fit_seconds"] for r in records], ".1f"),
                     _mean_sd([r["predict_seconds"] for r in records], ".1f"),
                     _mean_sd(epochs, ".0f"), _mean_sd(best, ".0f"),
                     ", ".join(f"{p:,}" for p in params), peak_memory(records), "; ".join(sorted({device(r) for r in records}))])
    return rows


def peak_memory(records: list[dict]) -> str:
    """The highest peak over a row's seeds, in GB: the host's resident set, and a GPU's allocation where
    one ran it ("" for runs stored before runs recorded it)."""
    out = []
    for name, prefix in (("host_peak_mb", ""), ("gpu_peak_mb", "GPU ")):
        peaks = [m[name] for r in records if (m := r.get("memory")) and m.get(name)]
        if peaks:
            out.append(f"{prefix}{max(peaks) / 1024:.1f}")
    return "; ".join(out)


def cost_markdown(suite: Suite, dataset: str, runs: dict[str, VariantRuns]) -> str:
    headers = ["Model", "Seeds", "Fit (s)", "Predict (s)", "Epochs run", "Best epoch", "Parameters", "Peak memory (GB)",
               "Device"]
    rows = cost_rows(suite, runs)
    shown = any(row[7] for row in rows)  # where no run of this table recorded it, no empty column
    if not shown:
        headers, rows = headers[:7] + headers[8:], [row[:7] + row[8:] for row in rows]
    body = tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True,
                    colalign=("left", "left") + ("right",) * (len(headers) - 3) + ("left",))
    memory = ("Peak memory: the highest over the row's seeds of the process's peak resident set over fit and scoring "
              "(and a GPU's peak allocation), blank for runs stored before runs recorded it. " if shown else "")
    return (f"### {suite.name}: {dataset}, cost per run\n\n{body}\n\n"
            "- Wall time of `fit` (training, with validation for early stopping) and of `predict` (scoring the test "
            "users), from each run's `run.json`; mean ± standard deviation over seeds. Predict covers the suite's test "
            "users only (a sample where the suite says so). Device says where the model ran; times also depend on what "
            "else the machine ran then. Variants that reuse cached weights (CALRec's stage and inference ablations) "
            "show only their own work. " + memory).rstrip() + "\n"
