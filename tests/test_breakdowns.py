"""Breakdowns by target popularity and history length."""
import numpy as np

from bench.report.breakdowns import history_groups, popularity_groups
from bench.report.check import check_tables
from bench.cli import main
from bench.split import Split


def split_of(train: list[list[int]], n_items: int, test: list[int]) -> Split:
    return Split("d", "v", "p", np.array([f"i{k}" for k in range(n_items)]), [{}] * n_items,
                 np.array([f"u{k}" for k in range(len(train))]), [np.array(t) for t in train],
                 np.zeros(len(train), dtype=int), np.array(test), 0)


def test_popularity_groups_are_equal_thirds_of_training_interactions_and_cold():
    # item 0: 6 interactions, 1: 3, 2: 2, 3: 1, 4: none (of 12): shares before each 0, 0.5, 0.75, 0.92
    train = [[0, 0, 0, 1, 2], [0, 0, 0, 1, 1, 2, 3]]
    g = popularity_groups(split_of(train, 5, [4, 4]))
    assert g == {"i0": "head", "i1": "middle", "i2": "tail", "i3": "tail", "i4": "cold"}


def test_history_groups_are_quartiles_of_the_evaluated_users():
    train = [[0] * n for n in (2, 9, 4, 7, 5, 3, 8, 6)]
    s = split_of(train, 1, [0] * 8)
    groups, labels = history_groups(s, [f"u{k}" for k in range(8)])
    assert labels == ["Q1 (3-4)", "Q2 (5-6)", "Q3 (7-8)", "Q4 (9-10)"]  # history = train + the validation item
    assert [groups[f"u{k}"] for k in (0, 5)] == ["Q1 (3-4)"] * 2 and groups["u1"] == "Q4 (9-10)"


def test_every_suite_table_has_its_breakdowns_and_check_rebuilds_them(tmp_path):
    res = tmp_path / "r"
    assert main(["run", "--suite", "smoke", "--results", str(res)]) == 0
    folder = res / "tables/smoke"
    for name in ("synthetic-by-popularity", "synthetic-by-history"):
        md = (folder / f"{name}.md").read_text()
        assert (folder / f"{name}.tex").is_file()
        assert "(n=" in md and "Popularity" in md and "[" in md  # user counts, rows, intervals
    md = (folder / "synthetic-by-popularity.md").read_text()
    counts = sum(int(x) for x in __import__("re").findall(r"Recall@10 \w+ \(n=(\d+)\)", md))
    assert counts == 300  # every evaluated user in exactly one group
    assert check_tables("smoke", res) == []
    assert main(["plot", "--suite", "smoke", "--results", str(res)]) == 0
    assert (res / "plots/smoke/synthetic-by-history.png").is_file()


def test_test_targets_tied_in_time_are_counted_in_the_notes(tmp_path):
    from bench.suites.load import DatasetEntry
    from bench.report.ties import tied_test_targets

    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for u in range(5):  # users 0-1: the last two events share a timestamp; user 4: too short, dropped
        times = [1, 2, 3, 3] if u < 2 else ([1, 2, 3, 4] if u < 4 else [1, 1])
        lines += [f"u{u}\ti{u + k}\t{t}" for k, t in enumerate(times)]
    (tmp_path / "d").mkdir()
    (tmp_path / "d/d.inter").write_text("\n".join(lines) + "\n")
    spec = f"atomic:{tmp_path / 'd'}"
    assert tied_test_targets(DatasetEntry("d", spec, {})) == (2, 4)
    suite = tmp_path / "t.yaml"
    suite.write_text(f"datasets:\n  d: {{spec: '{spec}'}}\nmodels:\n  pop: {{model: pop}}\n")
    assert main(["run", "--suite", str(suite), "--results", str(tmp_path / "r")]) == 0
    md = (tmp_path / "r/tables/t/d-main.md").read_text()
    assert "test targets tied in time with another event of the user (so file order picked them): 2 of 4 users" in md


def test_memorisation_is_measured_per_backbone_and_dataset_and_reported_in_tables(tmp_path):
    """On a tiny random LLM: the counts are consistent, a second call measures nothing new, and the
    tables of a suite with LLM rows carry the note and a small table."""
    import json

    from bench.report.memorisation import measure
    from calrec.backbone import load_backbone

    titles = ["red rake", "blue hose planter", "solo", "quiet bright lamp"]
    model, tok = load_backbone("tiny", titles)
    got = measure(model, tok, titles, "item")
    assert got["items"] == 4 and got["measured"] == 3 and 0 <= got["completed"] <= 3 and got["mean_title_nll"] > 0
    suite = tmp_path / "llm.yaml"
    suite.write_text("datasets:\n  syn: {spec: synthetic, n_users: 30, n_items: 20, seed: 1}\nmodels:\n  pop: {model: pop}\n"
                     "  llm: {model: calrec, params: {backbone: tiny, stage2_steps: 0, inference: dense, device: cpu, bf16: false}}\n")
    res = tmp_path / "r"
    assert main(["memorise", "--suite", str(suite), "--results", str(res)]) == 0
    stored = json.loads((res / "memorisation/tiny/syn.json").read_text())
    assert stored["measured"] == 20 and stored["backbone"] == "tiny"
    assert main(["memorise", "--suite", str(suite), "--results", str(res)]) == 0  # stored: nothing new
    assert main(["run", "--suite", str(suite), "--results", str(res), "--models", "pop"]) == 0
    md = (res / "tables/llm/syn-main.md").read_text()
    assert "Not run yet" in md and "memorisation" not in md  # no LLM row in the table yet
    assert "| tiny " in (res / "tables/llm/syn-memorisation.md").read_text()
    # a damaged record (valid JSON, not a whole record) is never shown, and is measured again
    (res / "memorisation/tiny/syn.json").write_text('{"data_version": 3}')
    from bench.report.memorisation import memorisation_note
    from bench.suites.load import load_suite

    assert "tiny: not measured" in memorisation_note(load_suite(str(suite)), res, "syn")
    assert main(["memorise", "--suite", str(suite), "--results", str(res)]) == 0
    assert json.loads((res / "memorisation/tiny/syn.json").read_text())["measured"] == 20
