"""CALRec's validation NLL per item against CPU minutes, beside the numbers it must beat on the same
targets: popularity's and a uniform guess's cross-entropy, and our SASRec's (its full softmax over
the catalog is the same kind of number: -log p(target | history) per validation target).

    python -m bench.perf.calrec_nll_curve [--suite quick --variant calrec] [--old CURVES.csv]

Reads the curve a stored CALRec cell recorded while it trained (every evaluation: validation NLL
on the suite's validation users, training seconds so far) and its one-time frozen-cache time;
trains the suite's SASRec (seed 0) on the same split here and scores the same validation targets.
`--old` adds another curve (e.g. an older recipe's curves.csv, from git). Writes
results/perf/calrec_nll_curve.json and .png. CPU minutes: training time plus the frozen cache's
build; validation time is left out of both models' minutes.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bench.models import FitContext, make_model
from bench.execute.provenance import machine
from bench.execute.runner import get_split, git_commit, sample_users, seed_everything
from bench.execute.store import RunStore, atomic_write_text
from bench.suites.load import load_suite

RESULTS = Path(__file__).resolve().parents[2] / "results"


def sasrec_nll(suite, dataset: str, users: np.ndarray) -> dict:
    """Our SASRec with the suite's settings, fitted here; its per-item NLL of the validation targets
    under a softmax over every item (no history masking, as CALRec's trie scores every item)."""
    variant = suite.variant("sasrec")
    split = get_split(next(d for d in suite.datasets if d.key == dataset))
    model = make_model("sasrec", variant.params_for(dataset))
    seed_everything(0)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        model.fit(split, FitContext(seed=0, workdir=Path(tmp), valid_users=users, ks=suite.ks))
        minutes = (time.perf_counter() - t0) / 60
    scores = np.concatenate([model.predict(split.inputs("valid", users[s : s + 256]), users[s : s + 256])
                             for s in range(0, len(users), 256)])
    logp = torch.log_softmax(torch.from_numpy(scores).double(), dim=-1).numpy()
    nll = float(-logp[np.arange(len(users)), split.valid[users]].mean())
    return {"valid_nll": round(nll, 4), "fit_minutes": round(minutes, 2), "params": variant.params_for(dataset)}


def calrec_curve(curves: pd.DataFrame, offset_minutes: float) -> list[dict]:
    rows = curves.dropna(subset=["valid_nll"])
    return [{"step": int(r.step), "cpu_minutes": round(offset_minutes + r.train_seconds / 60, 2),
             "valid_nll": float(r.valid_nll)} for r in rows.itertuples()]


def plot(out: Path, curves: dict[str, list[dict]], lines: dict[str, float], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, pts in curves.items():
        ax.plot([p["cpu_minutes"] for p in pts], [p["valid_nll"] for p in pts], marker="o", label=name)
    for (name, value), style in zip(lines.items(), ("--", ":", "-.")):
        ax.axhline(value, ls=style, color="grey", lw=1)
        ax.annotate(f"{name} {value:.2f}", (ax.get_xlim()[1], value), xytext=(-4, 3), textcoords="offset points",
                    ha="right", fontsize=8, color="dimgrey")
    ax.set_xlabel("CPU minutes (training + frozen-cache build; validation not counted)")
    ax.set_ylabel("validation NLL per item (nats)")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--suite", default="quick")
    ap.add_argument("--variant", default="calrec")
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--old", type=Path, help="another curves.csv to draw beside it (an older recipe's)")
    ap.add_argument("--old-label", default="old recipe")
    ap.add_argument("--out", type=Path, default=RESULTS / "perf" / "calrec_nll_curve")
    args = ap.parse_args()
    suite = load_suite(args.suite)
    cell = RunStore(RESULTS).cell_dir(suite.name, args.dataset, args.variant, 0)
    record = json.loads((cell / "run.json").read_text())
    curves = pd.read_csv(cell / "curves.csv")
    cache_minutes = sum((record["model_info"]["timings"].get("frozen_cache_seconds") or {}).values()) / 60
    drawn = {f"{suite.variant(args.variant).label}": calrec_curve(curves, cache_minutes)}
    if args.old is not None:
        drawn[args.old_label] = calrec_curve(pd.read_csv(args.old), 0.0)
    last = curves.dropna(subset=["valid_nll"]).iloc[-1]
    split = get_split(next(d for d in suite.datasets if d.key == args.dataset))
    users = sample_users(split.n_users, suite.valid_sample)
    sas = sasrec_nll(suite, args.dataset, users)
    lines = {"popularity": float(last.popularity_nll), "uniform": float(last.uniform_nll),
             f"SASRec ({sas['fit_minutes']:.0f} min)": sas["valid_nll"]}
    out = {"command": f"python -m bench.perf.calrec_nll_curve --suite {args.suite} --variant {args.variant}"
                      + (f" --old {args.old}" if args.old else ""),
           "commit": git_commit(), "machine": machine(), "cell": str(cell.relative_to(RESULTS.parent)),
           "cell_commit": record["commit"], "validation_users": int(len(users)), "cache_minutes": round(cache_minutes, 2),
           "curves": drawn, "popularity_nll": lines["popularity"], "uniform_nll": lines["uniform"], "sasrec": sas}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out.with_suffix(".json"), json.dumps(out, indent=1) + "\n")
    plot(args.out.with_suffix(".png"), drawn, lines,
         f"{args.dataset}: validation NLL per item on {len(users)} users ({suite.name}/{args.variant}, seed 0)")
    for name, pts in drawn.items():
        print(name + ": " + ", ".join(f"{p['cpu_minutes']:.0f} min {p['valid_nll']:.3f}" for p in pts))
    print("reference: " + ", ".join(f"{k} {v:.3f}" for k, v in lines.items()))
    print(f"written: {args.out.with_suffix('.json')}, {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
