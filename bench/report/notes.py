"""The notes under a result table: data, protocol, seeds and commits, how rows were tested, and
everything a reader must know to trust a row (capped training, tuning, off-pin versions, machines,
stale code, other data, cells not run yet). A pure function of the stored runs."""
from __future__ import annotations

from collections import defaultdict

from bench.report.costs import device
from bench.execute.fingerprint import changed_files, staleness
from bench.execute.provenance import off_pins

ALPHA = 0.05
UP, DOWN = "↑", "↓"  # significantly higher / lower than the reference row
CAPPED = "‡"  # training ended at its budget, not by early stopping
CI_NOTE = ("[low, high]: 95% percentile-bootstrap interval of the mean over the evaluated users (2000 resamples, "
           "seed 0; per-user values averaged over the row's seeds, so seed variance is not in it).")


def protocol_notes(suite, runs, rows, reference, test, n_comparisons, missing, cut, ci) -> list[str]:
    if not rows:
        return ["No stored runs for this table yet."]
    rec = runs[rows[0]].records[0]
    st = rec["dataset_stats"]
    n_eval = rec["evaluated_users"]
    sample = suite.user_sample
    seeds = sorted({s for r in rows for s in runs[r].seeds})
    commits = sorted({x["commit"][:12] + ("-dirty" if x["commit"].endswith("-dirty") else "") for r in rows for x in runs[r].records})
    cold = sorted({x["cold_test_targets_evaluated"] for r in rows for x in runs[r].records if "cold_test_targets_evaluated" in x})
    masked = sorted({x["masked_test_targets_evaluated"] for r in rows for x in runs[r].records if "masked_test_targets_evaluated" in x})
    notes = [
        "Each cell: the mean over the row's seeds, ± the standard deviation over those seeds (no ± with one seed)"
        + (f"; the reference row, against which every arrow is tested: {suite.variant(reference).label}."
           if reference in rows else "."),
        f"Dataset {st['dataset']} ({st['version']}; {st['preprocessing']}): {st['users']} users "
        f"({st['dropped_users']} dropped with < 3 events), {st['items']} items, {st['interactions']} interactions.",
        f"Leave-one-out by time, timestamp ties broken by file order (stable sort); full ranking over all items; "
        f"history masking {'on' if suite.history_masking else 'off'}; score ties: exact expectation over random tie orders.",
        f"Test users: {n_eval}" + (f" (seeded sample, seed {sample['seed']})" if sample and n_eval < st["users"] else " (all)")
        + f"; cold test targets (never in training): {', '.join(map(str, cold)) or 'not recorded'} of the evaluated users, "
        f"{st['cold_test_targets']} in the dataset"
        # recorded by newer runs: targets in the user's own history, which masking makes unrankable
        + (f"; test targets in the user's own (masked) history: {', '.join(map(str, masked))} of the evaluated users"
           if masked and suite.history_masking else "")
        + _ties(rec["config"]["dataset"])
        + f". Seeds: {', '.join(map(str, seeds))}. "
        f"Commits: {', '.join(commits)}.",
    ]
    if reference in rows:
        notes.append(arrow_note(suite, runs, rows, reference, test, n_comparisons))
    if any(cut):
        notes.append(f"{CAPPED}: training ended at its budget (epochs, or steps whose last evaluation was the best), not "
                     f"by early stopping, so the row may be undertrained: "
                     + ", ".join(suite.variant(r).label for r, c in zip(rows, cut) if c) + ".")
    for r in rows:
        tuning = (runs[r].records[0].get("tuning") if runs[r].records else None)
        if tuning:
            counts = ", ".join(f"{n} {state}" for state, n in tuning["trials"].items() if n)
            notes.append(f"{suite.variant(r).label}: hyperparameters searched on validation only (Optuna; study "
                         f"{tuning['study']} in {tuning['storage']}, {counts}); best trial {tuning['trial']}, "
                         f"{tuning['metric']} {tuning['value']:.4f}.")
    if budgets := [f"{suite.variant(r).label}: {b}" for r in rows if runs[r].records and (b := row_budget(runs[r].records))]:
        notes.append("Training budgets, as the stored runs trained (CALRec: optimiser steps x windows a step per stage, "
                     "with the tokens and passes over the stage's training windows of the row's first seed; an "
                     "epoch-trained model: epochs run per seed, early stopping included): " + "; ".join(budgets) + ".")
    if ci:
        notes.append(CI_NOTE)
    off = []
    for r in rows:
        bad, seeds, devices = {}, [], set()
        for seed, rec in zip(runs[r].seeds, runs[r].records):
            if found := off_pins(rec.get("versions", {})):  # name only the seeds and machines off the pins
                bad.update(found)
                seeds.append(str(seed))
                devices.add(device(rec))
        if bad:
            which = f"{_seeds(seeds)}; " if len(seeds) < len(runs[r].records) else ""
            off.append(f"{suite.variant(r).label} ({which}{'; '.join(sorted(devices))}): "
                       + ", ".join(f"{k} {got} (pin {pin})" for k, (got, pin) in sorted(bad.items())))
    if off:
        notes.append("Computed off the pinned versions: " + "; ".join(off) + ".")
    where = seeds_by(suite, runs, rows, device)
    mixed = [f"{label} " + ", ".join(f"{_seeds(s)} on {m}" for m, s in per.items()) for label, per in where.items() if len(per) > 1]
    notes.append("Machines: " + ", ".join(sorted({m for per in where.values() for m in per})) + "." + (
        " Rows whose seeds ran on different machines (floating-point results differ between CPU models and "
        "between a CPU and a GPU, so a seed's numbers repeat exactly only on the same kind): " + "; ".join(mixed) + "." if mixed else ""))
    if precisions := mixed_precision(suite, runs, rows):
        notes.append("Rows whose seeds trained at different precisions (CALRec's `bf16: auto` takes bf16 autocast only "
                     "on a CPU with avx512_bf16 or AMX, or a GPU that supports it): " + "; ".join(precisions) + ".")
    stale, cells = defaultdict(lambda: defaultdict(list)), 0  # changed files -> row label -> seeds
    unknown = defaultdict(list)  # row label -> seeds
    for r in rows:
        for seed, rec in zip(runs[r].seeds, runs[r].records):
            cells += 1
            why = staleness(rec)
            if why and why.startswith("no code fingerprint"):
                unknown[suite.variant(r).label].append(str(seed))
            elif why:
                stale[", ".join(changed_files(rec) or [])][suite.variant(r).label].append(str(seed))
    if stale:
        notes.append("Computed by code that has changed since (`bench run --stale` recomputes them): " + "; ".join(
            ", ".join(_with_seeds(label, seeds) for label, seeds in labels.items())
            + (f": {files} changed" if files else "") for files, labels in stale.items()) + ".")
    if unknown:  # named, so a reader knows which rows the code of today may not reproduce
        n = sum(len(seeds) for seeds in unknown.values())
        notes.append(f"{n} of {cells} cells recorded no code fingerprint (computed before fingerprints were, so "
                     "today's code may not reproduce them; `bench run --stale` recomputes them): "
                     + ", ".join(_with_seeds(label, seeds) for label, seeds in unknown.items()) + ".")
    versions = defaultdict(list)  # data version -> row labels (several only where the files could not be read here)
    for r in rows:
        for v in sorted({(rec.get("dataset_stats") or {}).get("version") for rec in runs[r].records}, key=str):
            versions[v].append(suite.variant(r).label)
    if len(versions) > 1:
        notes.append("Rows computed on different data (their files' content hashes differ; the files could not be read "
                     "here to tell which is current): " + "; ".join(f"{v}: {', '.join(labels)}" for v, labels in versions.items()) + ".")
    if missing.other_data:
        notes.append(f"Left out, computed on other data than the dataset's files give now (`bench run` recomputes them; "
                     f"{_count(missing.other_data)}): {compact_cells(missing.other_data)}.")
    if missing.cells:
        notes.append(f"Not run yet ({_count(missing.cells)}): {compact_cells(missing.cells)}.")
    return notes


STAGE_NAMES = {"stage1": "stage I", "stage2": "stage II"}


def row_budget(recs: list[dict]) -> str | None:
    """A row's training budget in a few words (None: nothing trained, or nothing recorded)."""
    info = recs[0].get("model_info") or {}
    if info.get("epochs_run"):
        return "/".join(str(int((r.get("model_info") or {}).get("epochs_run") or 0)) for r in recs) + " epochs"
    batch = ((info.get("config") or {}).get("training") or {}).get("batch_size")
    trained = [(name, t) for name, t in (info.get("timings") or {}).items()
               if name.startswith("stage") and isinstance(t, dict) and t.get("steps")]
    if not trained or not batch:
        return "untrained" if info.get("timings") is not None and not trained else None
    return ", ".join(f"{STAGE_NAMES.get(name, name)} {t['steps']:,} x {batch} ({t.get('tokens', 0) / 1e6:.2f}M tokens, "
                     f"{t.get('epochs', 0):.2f} passes)" for name, t in trained)


def seeds_by(suite, runs, rows, key) -> dict[str, dict[str, list[str]]]:
    """Row label -> key(record) -> the row's seeds with that value (records whose key is None left out)."""
    out = defaultdict(lambda: defaultdict(list))
    for r in rows:
        for seed, rec in zip(runs[r].seeds, runs[r].records):
            if (value := key(rec)) is not None:
                out[suite.variant(r).label][value].append(str(seed))
    return out


def precision(rec: dict) -> str | None:
    """How a run trained: bf16 autocast or fp32 (None: its model records no `bf16` choice)."""
    bf16 = (rec.get("model_info") or {}).get("bf16")
    return None if bf16 is None else "bf16 autocast" if bf16 else "fp32"


def mixed_precision(suite, runs, rows) -> list[str]:
    """Rows whose seeds ran at different precisions, as `label seeds 0, 2 in bf16 autocast, seed 1 in fp32`."""
    return [f"{label} " + ", ".join(f"{_seeds(s)} in {p}" for p, s in per.items())
            for label, per in seeds_by(suite, runs, rows, precision).items() if len(per) > 1]


def _ties(dataset: dict) -> str:
    """Test targets that file order picked (their timestamp ties with another event of the user)."""
    from bench.suites.load import DatasetEntry
    from bench.report.ties import tied_test_targets

    got = tied_test_targets(DatasetEntry(dataset["key"], dataset["spec"], dataset.get("params") or {}))
    return (f"; test targets tied in time with another event of the user (so file order picked them): {got[0]} of "
            f"{got[1]} users" if got else "")


PARTIAL = "§"  # a stochastic row tested on fewer seeds than the reference has


def arrow_note(suite, runs, rows, reference, test, tested: dict) -> str:
    """Which test each row's arrows come from, and over which family Holm corrects."""
    label = lambda r: suite.variant(r).label
    kinds = tested["kinds"]
    ref = runs[reference]
    by = lambda kind: [label(r) for r in rows if kinds.get(r) == kind]
    parts = []
    if by("users"):
        parts.append(f"a paired {test} on per-user values over the seeds both rows ran (per-user values averaged over "
                     f"those seeds): {', '.join(by('users'))}")
    if by("seeds"):
        parts.append("a paired t-test over the per-seed means, seed by seed (3 or more shared seeds: the variance "
                     "between training runs counts, as in a mixed model with a random seed effect): " + ", ".join(by("seeds")))
    if by("deterministic"):
        parts.append(f"a paired {test} on per-user values against {label(reference)}'s per-user means over all its "
                     f"seeds (the row's scores do not depend on the seed): {', '.join(by('deterministic'))}")
    partial = [f"{label(r)} (seeds {', '.join(map(str, [s for s in runs[r].seeds if s in ref.seeds]))} of "
               f"{', '.join(map(str, ref.seeds))})" for r in rows if kinds.get(r) == "users"
               and len([s for s in runs[r].seeds if s in ref.seeds]) < len(ref.seeds)]
    unshared = [label(r) for r in rows if r != reference and r not in kinds]
    if not parts:  # the reference alone has runs so far
        return (f"{UP}/{DOWN}: higher/lower than {label(reference)}; no other row is tested against it yet"
                + (f" (no shared seed: {', '.join(unshared)})." if unshared else "."))
    family = ("within each metric column (a family of {size} comparisons; {total} tests in this table)"
              if tested["family"] == "column" else "over the whole table (a family of {total} comparisons)").format(**tested)
    return (f"{UP}/{DOWN}: higher/lower than {label(reference)}, by " + "; by ".join(parts)
            + f". Holm-corrected {family}, alpha={ALPHA}."
            + (f" {PARTIAL}: tested on fewer seeds than {label(reference)} ran: {'; '.join(partial)}." if partial else "")
            + (f" Not tested (no shared seed): {', '.join(unshared)}." if unshared else ""))


def compact_cells(names: list[str]) -> str:
    """Cell names (`dataset/variant/seedN`) grouped by dataset and variant, in their order:
    `ml-1m: sasrec (seeds 1, 2), pop (seed 0)`, so a list of a hundred cells stays readable."""
    groups: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for name in names:
        dataset, variant, seed = name.split("/")
        groups[dataset][variant].append(seed.removeprefix("seed"))
    return "; ".join(f"{dataset}: " + ", ".join(_with_seeds(variant, seeds) for variant, seeds in variants.items())
                     for dataset, variants in groups.items())


def _count(cells: list[str]) -> str:
    return f"{len(cells)} cell{'s' if len(cells) != 1 else ''}"


def _seeds(seeds: list[str]) -> str:
    return f"seed{'s' if len(seeds) > 1 else ''} {', '.join(seeds)}"


def _with_seeds(name: str, seeds: list[str]) -> str:
    return f"{name} ({_seeds(seeds)})"
