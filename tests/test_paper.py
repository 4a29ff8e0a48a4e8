"""The `paper` suite: it plans without data, says which files it lacks, and its
published-numbers tables put our rows beside the papers' on fixture data in the real format."""
from pathlib import Path

import pytest
import yaml

from bench.cli import main
from bench.errors import BenchError
from bench.report.published import PUBLISHED_DIR, load_published
from bench.execute.runner import plan, validate_plan
from bench.suites.load import load_suite

FIXTURES = Path(__file__).parent / "fixtures" / "amazon2018"


def test_paper_suite_plans_without_data_and_names_every_missing_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # data/amazon2018 does not exist here
    suite = load_suite("paper")
    assert {d.key for d in suite.datasets} == {"scientific", "instruments", "arts", "office", "games", "pet"}
    assert len(plan(suite)) > 0
    with pytest.raises(BenchError) as e:
        validate_plan(plan(suite))
    msg = str(e.value)
    assert "\n" not in msg and "26 input files missing" in msg and "nijianmo.github.io/amazon" in msg
    assert "data/amazon2018/meta_Pet_Supplies.json.gz" in msg and "data/amazon2018/Movies_and_TV_5.json.gz" in msg
    assert main(["run", "--suite", "paper", "--results", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert main(["plan", "--suite", "paper", "--results", str(tmp_path / "r")]) == 0  # plans without the data
    out = capsys.readouterr().out
    assert "0 of 264 cells done" in out and "| scientific/calrec/seed0 " in out and "no estimate" in out


def test_published_numbers_match_the_issue_and_every_target_has_every_method():
    pub = load_published("recformer_amazon2018")
    assert pub.metrics == ["NDCG@10", "Recall@10"]
    assert pub.targets["scientific"]["CALRec"] == [0.0788, 0.1124]
    assert pub.targets["instruments"]["SASRec"] == [0.0634, 0.0995]
    assert pub.targets["pet"]["RecFormer"] == [0.0972, 0.1162]
    assert all(set(rows) == set(pub.methods) for rows in pub.targets.values()) and len(pub.methods) == 12


def test_a_published_file_with_an_unlisted_method_is_one_line(tmp_path, monkeypatch):
    raw = yaml.safe_load((PUBLISHED_DIR / "movielens1m_sasrec.yaml").read_text())
    raw["targets"]["ml-1m"]["BERT4Rec"] = [0.1, 0.2]
    monkeypatch.setattr("bench.report.published.PUBLISHED_DIR", tmp_path)
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(BenchError, match=r"bad.yaml: targets.ml-1m.BERT4Rec: not listed under methods$"):
        load_published("bad")
    with pytest.raises(BenchError, match="no file"):
        load_published("nothing")


def test_published_table_puts_our_rows_beside_the_papers(tmp_path):
    suite = tmp_path / "paperlet.yaml"
    suite.write_text(f"""
seeds: [0]
ks: [1, 10]
history_masking: false
published: recformer_amazon2018
datasets:
  scientific: {{spec: "amazon2018:Industrial_and_Scientific", directory: {FIXTURES}, recipe: recformer, user_fraction: 1.0}}
models:
  pop: {{model: pop, label: Popularity}}
  bm25: {{model: bm25-text, label: BM25 (text)}}
reference: pop
""")
    res = tmp_path / "r"
    assert main(["run", "--suite", str(suite), "--results", str(res), "--models", "pop"]) == 0
    md = (res / "tables/paperlet/scientific-published.md").read_text()
    lines = md.splitlines()
    assert any(line.startswith("| CALRec ") and "CALRec paper (RecSys 2024)" in line and "0.0788" in line for line in lines)
    pop = next(line for line in lines if line.startswith("| Popularity "))
    assert "this harness (1 seed)" in pop
    assert any(line.startswith("| BM25 (text) ") and "not run yet" in line for line in lines)
    assert "history masking off" in md and "unseeded" in md
