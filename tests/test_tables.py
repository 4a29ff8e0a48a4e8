"""Table semantics: marks follow printed values, arrows give the direction, rows are
tested on the seeds they share with the reference, and each row shows its number of seeds."""
import os
import re

import numpy as np
import pandas as pd
import pytest

from bench.cli import main
from bench.report.check import check_tables
from bench.report.results import VariantRuns, capped
from bench.report.tables import CAPPED, Table, _cells, _marks, to_latex, to_markdown

SUITE = """
seeds: [0, 1, 2]
ks: [1, 10]
datasets:
  syn: {spec: synthetic, n_users: 60, n_items: 40, seed: 1}
models:
  pop: {model: pop, seeds: [0]}
  knn: {model: itemknn, params: {neighbours: 10}}
  random: {model: random, seeds: [5]}
reference: pop
"""


def test_marks_follow_the_printed_values_and_ties_share_them():
    col = np.array([0.00741, 0.00744, 0.0074, 0.0051, np.nan])
    assert _marks(col) == ("0.0074", "0.0051")
    t = Table("t", ["M"], list("abcde"), col[:, None], np.full((5, 1), np.nan), np.zeros((5, 1), int), None, [], [1] * 5,
              [False] * 5)
    cells = _cells(t, lambda s: f"*{s}*", lambda s: f"_{s}_", ("+", "-"), lambda sd: sd, "!")
    assert [c[2] for c in cells] == ["*0.0074*", "*0.0074*", "*0.0074*", "_0.0051_", "–"]


def test_arrows_say_which_side_is_better_and_each_row_shows_its_seeds():
    t = Table("t", ["M"], ["up", "down", "same"], np.array([[0.3], [0.1], [0.2]]), np.full((3, 1), np.nan),
              np.array([[1], [-1], [0]]), None, [], [3, 1, 2], [False] * 3)
    md = to_markdown(t)
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in md.splitlines()[4:7]}
    assert rows == {"up": ["3", "**0.3000**↑"], "down": ["1", "0.1000↓"], "same": ["2", "<u>0.2000</u>"]}


def test_user_metric_averages_only_the_requested_seeds():
    frames = [pd.DataFrame({"user": [1, 2], "target": [0, 0], "above": [a, 5], "ties": [0, 0]}) for a in (0, 50)]
    vr = VariantRuns("x", [0, 1], [{}, {}], frames)
    assert vr.user_metric("Recall@1", [1], [0]).tolist() == [1.0, 0.0]
    assert vr.user_metric("Recall@1", [1]).tolist() == [0.5, 0.0]


def test_rows_are_tested_on_the_seeds_they_share_with_the_reference(tmp_path):
    suite = tmp_path / "seeds.yaml"
    suite.write_text(SUITE)
    res = tmp_path / "r"
    assert main(["run", "--suite", str(suite), "--results", str(res)]) == 0
    md = (res / "tables/seeds/syn-main.md").read_text()
    assert "Not tested (no shared seed): random" in md
    assert "against pop's per-user means over all its seeds (the row's scores do not depend on the seed): knn" in md
    assert "Holm-corrected within each metric column (a family of 1 comparisons; 4 tests in this table)" in md
    knn = next(line for line in md.splitlines() if line.startswith("| knn "))
    assert knn.split("|")[2].strip() == "3" and "±" in knn


def test_constant_scores_give_the_readme_recall_with_and_without_masking():
    from bench.evaluate import metrics_from_ranks, ranks_from_scores

    n_items, history = 50, np.array([3, 4, 4, 7])  # 3 distinct history items
    scores = np.zeros((1, n_items))
    for masked, want in ((True, 10 / (n_items - 3)), (False, 10 / n_items)):
        r = ranks_from_scores(scores, np.array([9]), [history] if masked else None)
        assert metrics_from_ranks(r, [10])["Recall@10"][0] == pytest.approx(want)


def test_versions_off_the_pins_are_flagged(monkeypatch):
    from bench.execute import provenance

    monkeypatch.setattr(provenance, "pins", lambda: {"python": ">=3.11,<3.12", "torch": "==2.13.0", "pandas": "==2.3.3"})
    assert provenance.off_pins({"python": "3.11.7", "torch": "2.13.0+cpu", "pandas": "2.3.3"}) == {}
    assert provenance.off_pins({"python": "3.12.3", "torch": "2.11.0", "pandas": "3.0.6", "other": "1"}) == {
        "python": ("3.12.3", ">=3.11,<3.12"), "torch": ("2.11.0", "==2.13.0"), "pandas": ("3.0.6", "==2.3.3")}


def test_a_gpu_run_records_its_driver_version(monkeypatch, tmp_path):
    import torch  # noqa: F401 -- machine() asks about GPUs only where torch is loaded

    from bench import precision
    from bench.execute import provenance

    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 550.54.15\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setattr(precision, "accelerator", lambda: "NVIDIA H200")
    got = provenance.machine()
    assert got["accelerator"] == "NVIDIA H200" and got["driver"] == "550.54.15" and "cuda" in got
    monkeypatch.setenv("PATH", "/nonexistent")
    assert provenance.machine()["driver"] is None


def test_the_installed_projects_pins_are_read():
    from bench.execute.provenance import pins

    p = pins()
    assert p["torch"] == "==2.13.0" and p["recbole"] == "==1.2.1" and "3.12" in p["python"]


def test_cells_computed_by_changed_code_are_flagged_and_rerun_with_stale(tmp_path, monkeypatch, capsys):
    from bench.execute import fingerprint

    suite = tmp_path / "seeds.yaml"
    suite.write_text(SUITE)
    res = tmp_path / "r"
    assert main(["run", "--suite", str(suite), "--results", str(res), "--models", "pop,knn"]) == 0
    md = (res / "tables/seeds/syn-main.md").read_text()
    assert "changed since" not in md and "no code fingerprint" not in md
    real = fingerprint._sources_now

    def edited(model, dataset, scheme):  # itemknn's module edited on disk (code, not a comment)
        return {rel: b + (b"\nEDITED = 1\n" if model == "itemknn" and rel == "baselines/itemknn.py" else b"")
                for rel, b in real(model, dataset, scheme).items()}

    assert "baselines/itemknn.py" in real("itemknn", "synthetic", fingerprint.SCHEME)
    monkeypatch.setattr(fingerprint, "_sources_now", edited)
    capsys.readouterr()
    assert main(["run", "--suite", str(suite), "--results", str(res), "--models", "pop,knn"]) == 0
    md = (res / "tables/seeds/syn-main.md").read_text()
    assert ("changed since (`bench run --stale` recomputes them): knn (seeds 0, 1, 2): "
            "baselines/itemknn.py changed.") in md
    assert "recomputing" not in capsys.readouterr().out  # without --stale, stale cells stay
    assert main(["run", "--suite", str(suite), "--results", str(res), "--models", "pop,knn", "--stale"]) == 0
    out = capsys.readouterr().out
    assert out.count("recomputing: code changed since") == 3 and "syn/pop/seed0: cached" in out
    assert "changed since" not in (res / "tables/seeds/syn-main.md").read_text()


def test_cells_without_a_code_fingerprint_are_named_in_the_notes(tmp_path, capsys):
    """A count alone ("1 of 4 cells") does not tell a reader which row today's code may not
    reproduce; the note names each row and seed, and --stale recomputes them."""
    import json

    suite = tmp_path / "seeds.yaml"
    suite.write_text(SUITE)
    res = tmp_path / "r"
    assert main(["run", "--suite", str(suite), "--results", str(res), "--models", "pop,knn"]) == 0
    rec_path = res / "runs/seeds/syn/knn/seed1/run.json"
    rec = json.loads(rec_path.read_text())
    del rec["code"]  # as written before fingerprints were
    rec_path.write_text(json.dumps(rec))
    assert main(["table", "--suite", str(suite), "--results", str(res)]) == 0
    md = (res / "tables/seeds/syn-main.md").read_text()
    assert ("1 of 4 cells recorded no code fingerprint (computed before fingerprints were, so today's code may not "
            "reproduce them; `bench run --stale` recomputes them): knn (seed 1).") in md
    capsys.readouterr()
    assert main(["run", "--suite", str(suite), "--results", str(res), "--models", "knn", "--stale"]) == 0
    assert "syn/knn/seed1: recomputing: no code fingerprint" in capsys.readouterr().out
    assert "no code fingerprint" not in (res / "tables/seeds/syn-main.md").read_text()


def test_rows_cut_by_their_budget_are_marked_and_early_stopped_ones_are_not():
    def rec(name, params, info):
        return {"config": {"model": {"name": name, "params": params}}, "model_info": info}

    assert capped(rec("recbole", {"epochs": 2}, {"epochs_run": 2}))
    assert not capped(rec("recbole", {"epochs": 100}, {"epochs_run": 14}))  # early stopping ended it
    assert capped(rec("sasrec", {}, {"epochs_run": 200}))  # the model's default budget (200 epochs)
    assert not capped(rec("sasrec", {}, {"epochs_run": 20}))
    assert capped(rec("calrec", {}, {"timings": {"stage2": {"steps": 500, "best_step": 500}}}))  # still improving
    assert not capped(rec("calrec", {}, {"timings": {"stage2": {"steps": 500, "best_step": 250}}}))
    assert not capped(rec("calrec", {}, {"timings": {"stage2": {"steps": 0, "best_step": 0}}}))  # zero-shot
    assert not capped(rec("pop", {}, {}))
    t = Table("t", ["M"], ["cut", "stopped"], np.array([[0.3], [0.1]]), np.full((2, 1), np.nan), np.zeros((2, 1), int),
              None, [], [1, 1], [True, False])
    rows = [line.split("|")[1].strip() for line in to_markdown(t).splitlines()[4:6]]
    assert rows == [f"cut {CAPPED}", "stopped"]
    assert r"cut$^\ddagger$ &" in to_latex(t).replace(" $^", "$^")


def test_ci_tables_hold_intervals_around_the_means_and_check_rebuilds_them(tmp_path):
    suite = tmp_path / "seeds.yaml"
    suite.write_text(SUITE)
    res = tmp_path / "r"
    assert main(["run", "--suite", str(suite), "--results", str(res)]) == 0
    assert not list((res / "tables/seeds").glob("*-ci.*"))  # opt-in
    assert main(["table", "--suite", str(suite), "--results", str(res), "--ci"]) == 0
    md = (res / "tables/seeds/syn-main-ci.md").read_text()
    assert "95% percentile-bootstrap interval" in md
    cells = [c for line in md.splitlines() if line.startswith("| ") for c in line.split("|")[3:-1] if "[" in c]
    assert cells
    for c in cells:  # the first number is the mean, then its interval
        mean = float(re.search(r"\d\.\d{4}", c).group())
        lo, hi = map(float, re.search(r"\[(\d\.\d{4}), (\d\.\d{4})\]", c).groups())
        assert lo <= mean <= hi, c
    assert check_tables(str(suite), res) == []
    (res / "tables/seeds/syn-main-ci.md").write_text(md.replace("[", "(", 1))
    assert any("syn-main-ci.md: differs" in f for f in check_tables(str(suite), res))


def test_cold_targets_are_counted_over_the_evaluated_users(tmp_path):
    from bench.execute.runner import cold_test_targets
    from bench.split import Split

    split = Split("d", "v", "none", np.arange(4).astype(str), [{}] * 4, np.array(["a", "b", "c"]),
                  [np.array([0]), np.array([0, 1]), np.array([1])], np.array([1, 0, 0]), np.array([2, 3, 1]), 0)
    assert cold_test_targets(split, np.arange(3)) == 2  # items 2 and 3 never occur in training
    assert cold_test_targets(split, np.array([2])) == 0
    suite = tmp_path / "seeds.yaml"
    suite.write_text(SUITE)
    res = tmp_path / "r"
    assert main(["run", "--suite", str(suite), "--results", str(res), "--models", "pop"]) == 0
    md = (res / "tables/seeds/syn-main.md").read_text()
    assert re.search(r"cold test targets \(never in training\): \d+ of the evaluated users, \d+ in the dataset", md)


def test_cells_not_run_are_listed_per_model_with_their_seeds():
    from bench.report.notes import compact_cells

    names = ["ml-1m/sasrec/seed1", "ml-1m/sasrec/seed2", "ml-1m/bert4rec/seed0", "ml-1m/pop/seed0", "x/pop/seed3"]
    assert compact_cells(names) == "ml-1m: sasrec (seeds 1, 2), bert4rec (seed 0), pop (seed 0); x: pop (seed 3)"


def test_tables_name_the_machines_and_rows_whose_seeds_ran_on_different_ones(tmp_path):
    import json
    from bench.report.costs import device

    assert device({"machine": {"cpu_model": "Intel(R) Xeon(R) Platinum 8480C CPU @ 2.00GHz", "cpus": 2}}) \
        == "Intel Xeon Platinum 8480C (2 cores)"
    assert device({"machine": {"cpus": 2}}) == "unrecorded CPU (2 cores)"
    assert device({"machine": {"cpu_model": "AMD EPYC", "cpus": 2, "cpu_flags": ["avx2", "avx512f", "avx512_bf16"]}}) \
        == "AMD EPYC (2 cores, avx512_bf16)"  # two EPYCs of one name, 3-4x apart
    assert device({"machine": {"accelerator": "NVIDIA H200", "cpu_model": "AMD EPYC"}}) == "NVIDIA H200"
    suite = tmp_path / "seeds.yaml"
    suite.write_text(SUITE)
    res = tmp_path / "r"
    assert main(["run", "--suite", str(suite), "--results", str(res), "--models", "pop,knn"]) == 0
    for model, seed, cpu in (("pop", 0, "AMD EPYC"), ("knn", 0, "AMD EPYC"), ("knn", 1, "Intel(R) Xeon(R) Processor"),
                             ("knn", 2, "AMD EPYC")):
        run_json = res / f"runs/seeds/syn/{model}/seed{seed}/run.json"
        rec = json.loads(run_json.read_text())
        versions = {**rec["versions"], "torch": "2.11.0"} if seed == 1 else rec["versions"]  # one seed off the pins
        run_json.write_text(json.dumps({**rec, "versions": versions,
                                        "machine": {**rec["machine"], "cpu_model": cpu, "cpus": 2, "cpu_flags": None}}))
    assert main(["table", "--suite", str(suite), "--results", str(res)]) == 0
    md = (res / "tables/seeds/syn-main.md").read_text()
    # only the seed and machine off the pins are named, not the row's others
    assert "Computed off the pinned versions: knn (seed 1; Intel Xeon (2 cores)): torch 2.11.0 (pin ==2.13.0)." in md
    assert "Machines: AMD EPYC (2 cores), Intel Xeon (2 cores). Rows whose seeds ran on different machines" in md
    assert "knn seeds 0, 2 on AMD EPYC (2 cores), seed 1 on Intel Xeon (2 cores)." in md
    assert "| AMD EPYC (2 cores); Intel Xeon (2 cores) |" in (res / "tables/seeds/syn-cost.md").read_text()


SEEDED = """
seeds: [0, 1, 2]
ks: [1, 10]
datasets:
  syn: {spec: synthetic, n_users: 60, n_items: 40, seed: 1}
models:
  ref: {model: random}
  other: {model: random, params: {}, label: other}
  one: {model: random, seeds: [1], label: one}
  knn: {model: itemknn, params: {neighbours: 10}, seeds: [0]}
reference: ref
"""


def test_arrows_of_three_seed_rows_follow_a_seed_level_test_and_partial_rows_are_marked(tmp_path):
    """Rows with >= 3 shared seeds: a paired t-test over seed means; a stochastic row with fewer
    seeds than the reference: marked, with the seeds it was tested on; a deterministic one: against
    the reference's mean over all its seeds. `--family table` corrects over every test at once."""
    from bench.report.stats import seed_means_pvalue
    from bench.suites.load import load_suite
    from bench.report.comparisons import comparison
    from bench.report.results import load_runs

    suite = tmp_path / "seeded.yaml"
    suite.write_text(SEEDED)
    res = tmp_path / "r"
    assert main(["run", "--suite", str(suite), "--results", str(res)]) == 0
    md = (res / "tables/seeded/syn-main.md").read_text()
    assert "a paired t-test over the per-seed means, seed by seed" in md and "random seed effect): other" in md
    assert "| one §" in md and "§: tested on fewer seeds than ref ran: one (seeds 1 of 0, 1, 2)" in md
    s = load_suite(str(suite))
    runs, _ = load_runs(s, res, "syn")
    kind, pair = comparison(s, runs, "other", "ref")
    a, b = pair("NDCG@10")
    assert kind == "seeds" and len(a) == 3 and np.allclose(a, [m["NDCG@10"] for m in runs["other"].metrics])
    assert seed_means_pvalue(np.array([0.1, 0.2, 0.3]), np.array([0.1, 0.2, 0.3])) == 1.0
    kind, pair = comparison(s, runs, "knn", "ref")
    assert kind == "deterministic" and np.allclose(pair("NDCG@10")[1], runs["ref"].user_metric("NDCG@10", s.ks))
    assert main(["table", "--suite", str(suite), "--results", str(res), "--family", "table"]) == 0
    assert "Holm-corrected over the whole table (a family of 12 comparisons)" in (res / "tables/seeded/syn-main.md").read_text()


def test_an_improvement_row_resting_on_flagged_cells_is_marked(tmp_path):
    import json

    suite = tmp_path / "seeds.yaml"
    suite.write_text(SUITE.replace("  knn: {model: itemknn, params: {neighbours: 10}}",
                                   "  knn: {model: itemknn, params: {neighbours: 10}, group: ours}"))
    res = tmp_path / "r"
    assert main(["run", "--suite", str(suite), "--results", str(res), "--models", "pop,knn"]) == 0
    md = (res / "tables/seeds/syn-main.md").read_text()
    assert "| Improvement (best row of the studied method vs best baseline row) |" in md and "†" not in md
    for seed in (0, 1, 2):  # the studied row's cells lose their fingerprint
        rec_path = res / f"runs/seeds/syn/knn/seed{seed}/run.json"
        rec = json.loads(rec_path.read_text())
        del rec["code"]
        rec_path.write_text(json.dumps(rec))
    assert main(["table", "--suite", str(suite), "--results", str(res)]) == 0
    md = (res / "tables/seeds/syn-main.md").read_text()
    assert "| Improvement (best row of the studied method vs best baseline row) † |" in md
    assert "†: the Improvement row is computed from rows with flagged cells" in md and "): knn." in md


def test_which_rows_ignore_the_seed():
    """Seed-independent rows are tested per user against the reference's seed mean: the classic
    deterministic models, and CALRec only when untrained on pretrained weights and ranked exactly."""
    from bench.report.results import seed_independent

    def v(model, **params):
        return model, params

    zero = {"stage2_steps": 0, "inference": "likelihood", "candidates": "all"}
    assert seed_independent(*v("pop")) and seed_independent(*v("itemknn")) and not seed_independent(*v("sasrec"))
    assert seed_independent(*v("calrec", **zero))
    assert not seed_independent(*v("calrec", **{**zero, "stage2_steps": 10}))  # trained: the seed draws its batches
    assert not seed_independent(*v("calrec", **{**zero, "stage1": {"steps": 5}}))
    assert not seed_independent(*v("calrec", **{**zero, "inference": "qrr"}))  # sampled
    assert not seed_independent(*v("calrec", **{**zero, "candidates": {"qrr": 30}}))  # a sampled pool
    assert not seed_independent(*v("calrec", **{**zero, "backbone": "tiny"}))  # random weights from the seed


def test_tables_name_rows_whose_seeds_trained_at_different_precisions():
    from types import SimpleNamespace as NS
    from bench.report.notes import mixed_precision

    rec = lambda bf16: {"model_info": {"bf16": bf16}}
    runs = {"calrec": NS(seeds=[0, 1, 2], records=[rec(True), rec(False), rec(True)]),
            "same": NS(seeds=[0, 1], records=[rec(False), rec(False)]),
            "pop": NS(seeds=[0], records=[{"model_info": {}}])}
    suite = NS(variant=lambda r: NS(label=f"row {r}"))
    assert mixed_precision(suite, runs, ["calrec", "same", "pop"]) == [
        "row calrec seeds 0, 2 in bf16 autocast, seed 1 in fp32"]


def test_the_arrow_note_of_a_table_whose_reference_alone_has_runs():
    from types import SimpleNamespace as NS
    from bench.report.notes import arrow_note

    suite = NS(variant=lambda r: NS(label=f"row {r}"))
    runs = {"a": NS(seeds=[0]), "b": NS(seeds=[1])}
    tested = {"kinds": {}, "family": "column", "size": 0, "total": 0}
    assert arrow_note(suite, runs, ["a"], "a", "t-test", tested) == (
        "↑/↓: higher/lower than row a; no other row is tested against it yet.")
    assert arrow_note(suite, runs, ["a", "b"], "a", "t-test", tested).endswith("(no shared seed: row b).")


def test_a_rows_budget_is_read_from_its_runs():
    """The notes say what each row trained on: CALRec's steps x windows per stage with tokens and
    passes, an epoch model's epochs per seed; nothing for an untrained or unrecorded row."""
    from bench.report.notes import row_budget

    stage = lambda steps, tokens, epochs: {"steps": steps, "tokens": tokens, "epochs": epochs, "train_seconds": 1.0}
    calrec = {"model_info": {"config": {"training": {"batch_size": 16}}, "timings": {
        "frozen_cache_seconds": {"ml-100k": 9.0}, "stage1": stage(400, 715_713, 1.0062), "stage2": stage(800, 1_387_483, 2.5073)}}}
    assert row_budget([calrec]) == ("stage I 400 x 16 (0.72M tokens, 1.01 passes), "
                                    "stage II 800 x 16 (1.39M tokens, 2.51 passes)")
    zero = {"model_info": {"config": {"training": {"batch_size": 16}}, "timings": {"frozen_cache_seconds": {}}}}
    assert row_budget([zero]) == "untrained"
    assert row_budget([{"model_info": {"epochs_run": 17}}, {"model_info": {"epochs_run": 20}}]) == "17/20 epochs"
    assert row_budget([{"model_info": {}}]) is None and row_budget([{}]) is None


def test_the_seeds_table_shows_every_cell_and_tells_unrun_seeds_from_unplanned_ones(tmp_path):
    import json

    suite = tmp_path / "seeds.yaml"
    suite.write_text(SUITE)
    res = tmp_path / "r"
    assert main(["run", "--suite", str(suite), "--results", str(res), "--models", "pop,knn", "--seeds", "0,1"]) == 0
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in (res / "tables/seeds/syn-seeds.md").read_text().splitlines() if line.startswith("| ")}
    metrics = lambda model, seed: json.loads((res / f"runs/seeds/syn/{model}/seed{seed}/metrics.json").read_text())
    shown = lambda m: f"{m['NDCG@10']:.4f} / {m['Recall@10']:.4f} (a)"  # one machine here: footnote (a)
    assert rows["pop"][:3] == [shown(metrics("pop", 0)), "", ""]  # pop runs seed 0 only: blank, not missing
    assert rows["knn"][:3] == [shown(metrics("knn", 0)), shown(metrics("knn", 1)), "–"]  # seed 2 not run yet
    ndcg = [metrics("knn", s)["NDCG@10"] for s in (0, 1)]
    assert rows["knn"][3:] == [f"{np.mean(ndcg):.4f}", f"{np.std(ndcg, ddof=1):.4f}"]
    one = tmp_path / "one.yaml"
    one.write_text(SUITE.replace("seeds: [0, 1, 2]", "seeds: [0]"))
    assert main(["run", "--suite", str(one), "--results", str(res), "--models", "pop"]) == 0
    assert not (res / "tables/one/syn-seeds.md").exists()  # one seed: the main table says it all


def test_the_tests_file_prints_the_numbers_behind_every_arrow(tmp_path):
    from bench.report.comparisons import compare_rows
    from bench.report.results import load_runs
    from bench.report.stats import paired_pvalue, seed_means_pvalue
    from bench.report.tables import table_metrics
    from bench.suites.load import load_suite

    path = tmp_path / "seeded.yaml"
    path.write_text(SEEDED)
    res = tmp_path / "r"
    assert main(["run", "--suite", str(path), "--results", str(res)]) == 0
    suite = load_suite(str(path))
    runs, _ = load_runs(suite, res, "syn")
    tests = {(c.row, c.metric): c for c in compare_rows(suite, runs, list(runs), "ref", table_metrics(suite.ks))}
    other, one, knn = (tests[(r, "NDCG@10")] for r in ("other", "one", "knn"))
    assert (other.kind, other.seeds, one.kind, one.seeds, knn.kind) == ("seeds", [0, 1, 2], "users", [1], "deterministic")
    per_seed = lambda r: np.array([m["NDCG@10"] for m in runs[r].metrics])
    assert other.p == seed_means_pvalue(per_seed("other"), per_seed("ref"))
    mine, ref = runs["one"].user_metric("NDCG@10", suite.ks, [1]), runs["ref"].user_metric("NDCG@10", suite.ks, [1])
    assert one.p == paired_pvalue(mine, ref) and np.isclose(one.difference, mine.mean() - ref.mean())
    for c in tests.values():
        low, high = c.interval()
        assert c.p <= c.p_holm <= 1 and low <= c.difference <= high
    md = (res / "tables/seeded/syn-tests.md").read_text()
    assert "### seeded: syn, all models: each row against ref" in md
    line = next(row for row in md.splitlines() if row.startswith("| one "))
    low, high = one.interval()
    assert f"{one.difference:+.4f} [{low:+.4f}, {high:+.4f}]" in line and "| 1 " in line
    # the table's arrows are the tests file's (NDCG@10 column of each)
    main_md = (res / "tables/seeded/syn-main.md").read_text().splitlines()
    col = [h.strip() for h in main_md[2].split("|")].index("NDCG@10")
    for r in ("other", "one", "knn"):
        label = suite.variant(r).label
        cell = next(x for x in main_md if x.startswith(f"| {label} ")).split("|")[col]
        shown = next(x for x in md.splitlines() if x.startswith(f"| {label} ")).split("|")[7]  # NDCG@10 p (Holm)
        assert [a for a in "↑↓" if a in cell] == [a for a in "↑↓" if a in shown] == (
            [] if not tests[(r, "NDCG@10")].significant else ["↑" if tests[(r, "NDCG@10")].significant > 0 else "↓"])
    from bench.report.comparisons import Comparison

    seeds = Comparison("r", "NDCG@10", "seeds", [0, 1, 2], 0.6, 0.4, 0.1, a=np.array([0.5, 0.6, 0.7]), b=np.array([0.4] * 3))
    low, high = seeds.interval()  # t-interval over three seed differences 0.1, 0.2, 0.3: 0.2 -+ 4.303 * 0.1 / sqrt(3)
    assert np.allclose([low, high], [0.2 - 0.248414, 0.2 + 0.248414], atol=1e-6)


def test_a_suite_without_k_10_is_refused_before_anything_runs(tmp_path, capsys):
    path = tmp_path / "k5.yaml"
    path.write_text(SEEDED.replace("ks: [1, 10]", "ks: [1, 5]"))
    res = tmp_path / "r"
    assert main(["run", "--suite", str(path), "--results", str(res)]) == 2
    assert f"{path}: ks: [1, 5] lacks 10" in capsys.readouterr().err and not res.exists()
