"""Table semantics (issue 15): marks follow printed values, arrows give the direction, rows are
tested on the seeds they share with the reference, and each row shows its number of seeds."""
import numpy as np
import pytest
import pandas as pd

from bench.cli import main
from bench.results import VariantRuns
from bench.tables import Table, _cells, _marks, to_markdown

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
    t = Table("t", ["M"], list("abcde"), col[:, None], np.full((5, 1), np.nan), np.zeros((5, 1), int), None, [], [1] * 5)
    cells = _cells(t, lambda s: f"*{s}*", lambda s: f"_{s}_", ("+", "-"), lambda sd: sd)
    assert [c[2] for c in cells] == ["*0.0074*", "*0.0074*", "*0.0074*", "_0.0051_", "–"]


def test_arrows_say_which_side_is_better_and_each_row_shows_its_seeds():
    t = Table("t", ["M"], ["up", "down", "same"], np.array([[0.3], [0.1], [0.2]]), np.full((3, 1), np.nan),
              np.array([[1], [-1], [0]]), None, [], [3, 1, 2])
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
    assert "each row on the seeds it shares with that row" in md and "Not tested (no shared seed): random" in md
    assert "Holm-corrected within each metric column (a family of 1 comparisons)" in md
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
    from bench import provenance

    monkeypatch.setattr(provenance, "pins", lambda: {"python": ">=3.11,<3.12", "torch": "==2.13.0", "pandas": "==2.3.3"})
    assert provenance.off_pins({"python": "3.11.7", "torch": "2.13.0+cpu", "pandas": "2.3.3"}) == {}
    assert provenance.off_pins({"python": "3.12.3", "torch": "2.11.0", "pandas": "3.0.6", "other": "1"}) == {
        "python": ("3.12.3", ">=3.11,<3.12"), "torch": ("2.11.0", "==2.13.0"), "pandas": ("3.0.6", "==2.3.3")}


def test_the_installed_projects_pins_are_read():
    from bench.provenance import pins

    p = pins()
    assert p["torch"] == "==2.13.0" and p["recbole"] == "==1.2.1" and "3.12" in p["python"]


def test_cells_computed_by_changed_code_are_flagged_and_rerun_with_stale(tmp_path, monkeypatch, capsys):
    from bench import provenance

    suite = tmp_path / "seeds.yaml"
    suite.write_text(SUITE)
    res = tmp_path / "r"
    assert main(["run", "--suite", str(suite), "--results", str(res), "--models", "pop,knn"]) == 0
    md = (res / "tables/seeds/syn-main.md").read_text()
    assert "changed since" not in md and "no code fingerprint" not in md
    from bench import runner

    real = provenance.code_fingerprint
    changed = lambda m: "0" * 16 if m == "itemknn" else real(m)  # noqa: E731 (itemknn's sources "edited")
    monkeypatch.setattr(provenance, "code_fingerprint", changed)
    monkeypatch.setattr(runner, "code_fingerprint", changed)
    capsys.readouterr()
    assert main(["run", "--suite", str(suite), "--results", str(res), "--models", "pop,knn"]) == 0
    md = (res / "tables/seeds/syn-main.md").read_text()
    assert "changed since (`bench run --stale` recomputes them): knn seed 0, knn seed 1, knn seed 2." in md
    assert "recomputing" not in capsys.readouterr().out  # without --stale, stale cells stay
    assert main(["run", "--suite", str(suite), "--results", str(res), "--models", "pop,knn", "--stale"]) == 0
    out = capsys.readouterr().out
    assert out.count("recomputing: code changed since") == 3 and "syn/pop/seed0: cached" in out
    assert "changed since" not in (res / "tables/seeds/syn-main.md").read_text()
