"""The recipe probes side by side: validation NLL per item against passes over the training data
(epochs), for every probe `python -m bench.perf.calrec_curve` appended to results/perf/calrec_curves.jsonl
with 943 validation users, beside the stored `quick` CALRec cell's curve (the current recipe).

    python -m bench.perf.calrec_probes [--since COMMIT]

Epochs, not minutes, on the x-axis: probes ran on different machines and beside other work, and a
recipe is chosen by how well it generalises per pass. Writes results/perf/calrec_probes.png and
prints each curve with its command, commit and machine.
"""
from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path

import pandas as pd

RESULTS = Path(__file__).resolve().parents[2] / "results"
QUICK_CELL = RESULTS / "runs/quick/ml-100k/calrec/seed0"


def epoch_sizes(params: dict) -> list[int]:
    """ML-100k training windows of max_history + 1 items in each epoch, one entry per window tiling (the
    epochs take the tilings in turn; their sizes differ, as a shifted tiling adds the window ending last)."""
    from bench.execute.runner import get_split
    from bench.suites.load import load_suite
    from calrec.train import StageConfig, epoch_positions, tiling_shifts

    split = get_split(load_suite("quick").datasets[0])
    cfg = StageConfig(steps=1, nig_targets=params.get("nig_targets", "all"), examples="epochs",
                      window_tilings=params.get("window_tilings", 1))
    window = params.get("max_history", 20) + 1
    return [len(epoch_positions(split.train, cfg, window, s)) for s in tiling_shifts(cfg, window)]


def passes(windows: int, sizes: list[int]) -> float:
    """Epochs after `windows` training windows: whole epochs, tilings in turn, plus the running one's share."""
    done = 0
    while windows >= sizes[done % len(sizes)]:
        windows -= sizes[done % len(sizes)]
        done += 1
    return done + windows / sizes[done % len(sizes)]


def curves(since: str | None) -> dict[str, dict]:
    out = {}
    record = json.loads((QUICK_CELL / "run.json").read_text())
    params = record["config"]["model"]["params"]
    sizes = epoch_sizes(params)
    rows = pd.read_csv(QUICK_CELL / "curves.csv").dropna(subset=["valid_nll"])
    out["current recipe (quick cell)"] = {
        "points": [(passes(r.step * params["batch_size"], sizes), r.valid_nll) for r in rows.itertuples()],
        "command": record["command"], "commit": record["commit"][:12], "machine": record["machine"].get("cpu_flags")}
    lines = (RESULTS / "perf/calrec_curves.jsonl").read_text().splitlines()
    seen = since is None
    for line in lines:
        probe = json.loads(line)
        seen = seen or probe["commit"].startswith(since)
        if not seen or probe["params"].get("valid_users", 0) < 943 or not probe["curve"]:
            continue
        p = probe["params"]
        sizes = epoch_sizes(p)
        out[probe["change"]] = {"points": [(passes(c["step"] * p["batch_size"], sizes), c["valid_nll"]) for c in probe["curve"]],
                                "command": probe["command"], "commit": probe["commit"][:12],
                                "machine": probe["machine"].get("cpu_flags") or probe["machine"].get("cpu_model")}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--since", help="only probes recorded at or after this commit")
    ap.add_argument("--out", type=Path, default=RESULTS / "perf" / "calrec_probes.png")
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawn = curves(args.since)
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for name, c in drawn.items():
        xs, ys = zip(*c["points"])
        ax.plot(xs, ys, marker="o", label=textwrap.fill(name.replace(",", ", "), 40))  # whole, wrapped
        print(f"{name}: " + ", ".join(f"{x:.2f} ep {y:.3f}" for x, y in c["points"])
              + f"\n    {c['command']} (commit {c['commit']}, {c['machine']})")
    ax.set_xlabel("passes over ML-100k's training windows (epochs)")
    ax.set_ylabel("validation NLL per item (nats, 943 users)")
    ax.set_title("CALRec recipe probes: validation NLL by epoch (lower is better)", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))  # outside: long curves run top right
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
