"""`bench export` writes the exact split a suite scores on; `bench score` scores another toolkit's
predictions made on it through the one evaluator and stores them as a cell. Round trip: popularity
counted from the exported train.csv, scored from a file, equals the built-in popularity cell."""
import csv
import json
from collections import Counter

import pytest

from bench.cli import main

SUITE = """
seeds: [0]
ks: [5, 10]
user_sample: {size: 30, seed: 0}
datasets:
  syn: {spec: synthetic, n_users: 40, n_items: 30, seed: 2}
models:
  pop: {model: pop}
reference: pop
"""


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def exported(tmp_path):
    suite = tmp_path / "ext.yaml"
    suite.write_text(SUITE)
    out = tmp_path / "split"
    assert main(["export", "--suite", str(suite), "--dataset", "syn", "--out", str(out)]) == 0
    return suite, out


def popularity_file(out, path, top=None):
    """Popularity from the exported files alone: what another toolkit would compute."""
    counts = Counter(r["item"] for r in rows(out / "train.csv"))
    items = [r["item"] for r in rows(out / "items.csv")]
    ranked = sorted(items, key=lambda i: -counts[i])[:top]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user_id", "item_id", "score"])
        for r in rows(out / "test_users.csv"):
            w.writerows([r["user"], i, counts[i]] for i in ranked)
    return path


def test_export_writes_the_split_and_refuses_a_used_folder(exported, capsys):
    suite, out = exported
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["files"]) <= {p.name for p in out.iterdir()}
    assert manifest["test_users"] == len(rows(out / "test_users.csv")) == 30
    n_users = manifest["stats"]["users"]
    assert len(rows(out / "test.csv")) == len(rows(out / "valid.csv")) == n_users
    assert len(rows(out / "train.csv")) + 2 * n_users == manifest["stats"]["interactions"]
    test_inter = (out / "syn.test.inter").read_text().splitlines()
    assert test_inter[0] == "user_id:token\titem_id_list:token_seq\titem_id:token" and len(test_inter) == n_users + 1
    first = rows(out / "test.csv")[0]
    assert test_inter[1].split("\t")[0] == first["user"] and test_inter[1].split("\t")[2] == first["item"]
    assert main(["export", "--suite", str(suite), "--dataset", "syn", "--out", str(out)]) == 2
    assert "not an empty folder" in capsys.readouterr().err


def test_scored_predictions_equal_the_same_model_run_here(exported, tmp_path):
    suite, out = exported
    res = tmp_path / "r"
    assert main(["run", "--suite", str(suite), "--results", str(res)]) == 0
    file = popularity_file(out, tmp_path / "pop.csv")
    assert main(["score", "--suite", str(suite), "--dataset", "syn", "--name", "their-pop", "--predictions", str(file),
                 "--declared", "popularity from train.csv", "--results", str(res)]) == 0
    cell = res / "runs/ext/syn/their-pop/seed0"
    assert json.loads((cell / "metrics.json").read_text()) == json.loads((res / "runs/ext/syn/pop/seed0/metrics.json").read_text())
    record = json.loads((cell / "run.json").read_text())
    assert record["model_info"]["declared"] == "popularity from train.csv" and len(record["model_info"]["sha256"]) == 64
    assert "baselines/predictions.py" in record["code"]["files"]
    assert "their-pop" in (res / "tables/ext/syn-main.md").read_text()
    # ranked lists (top 10, one row per user) are scored too; a changed file is refused, not rescored
    top = tmp_path / "top.csv"
    lines = rows(popularity_file(out, tmp_path / "p2.csv", top=10))
    by_user = {}
    for r in lines:
        by_user.setdefault(r["user_id"], []).append(r["item_id"])
    top.write_text("user,items\n" + "".join(f"{u},{' '.join(i)}\n" for u, i in by_user.items()))
    assert main(["score", "--suite", str(suite), "--dataset", "syn", "--name", "top10", "--predictions", str(top),
                 "--results", str(res)]) == 0
    top.write_text(top.read_text() + "\n")
    assert main(["run", "--suite", str(suite), "--results", str(res), "--models", "top10", "--force"]) == 2


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("\n", "\nnobody,x,1\n", 1), "{file}:2: unknown user 'nobody'"),
    (lambda t: t.replace("\n", "\n" + t.splitlines()[1].split(",")[0] + ",nothing,1\n", 1), "{file}:2: unknown item 'nothing'"),
    (lambda t: t.replace("score\n", "score\n" + t.splitlines()[1] + "\n"), "{file}:3: item"),
    (lambda t: t.rsplit(",", 1)[0] + ",nan\n", "score 'nan' is not a number"),
    (lambda t: "\n".join(t.splitlines()[:5]) + "\n", "no prediction for user"),
    (lambda t: t.replace("score", "weight", 1), "needs the columns user,item,score"),
])
def test_a_bad_predictions_file_is_one_line_naming_it(exported, tmp_path, capsys, edit, message):
    suite, out = exported
    file = popularity_file(out, tmp_path / "pop.csv")
    file.write_text(edit(file.read_text()))
    code = main(["score", "--suite", str(suite), "--dataset", "syn", "--name", "bad", "--predictions", str(file),
                 "--results", str(tmp_path / "r")])
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]  # after the progress bar
    assert code == 2 and last.startswith("error: ") and message.format(file=file) in last, last


@pytest.mark.parametrize("second, message", [("1", "rank '1' given twice for user"),
                                             ("inf", "rank 'inf' is not a positive integer"),  # was OverflowError
                                             ("1e999", "rank '1e999' is not a positive integer")])
def test_a_bad_rank_is_one_line(exported, tmp_path, capsys, second, message):
    suite, out = exported
    users, items = rows(out / "test_users.csv"), rows(out / "items.csv")
    file = tmp_path / "ranks.csv"
    file.write_text(f"user,rank,item\n{users[0]['user']},1,{items[0]['item']}\n{users[0]['user']},{second},{items[1]['item']}\n")
    assert main(["score", "--suite", str(suite), "--dataset", "syn", "--name", "r", "--predictions", str(file),
                 "--results", str(tmp_path / "r")]) == 2
    assert f"{file}:3: {message}" in capsys.readouterr().err


def test_score_refuses_a_name_the_suite_has_and_an_unknown_dataset(exported, tmp_path, capsys):
    suite, out = exported
    file = popularity_file(out, tmp_path / "pop.csv")
    for args, message in ((["--name", "pop", "--dataset", "syn"], "has a model variant of that name"),
                          (["--name", "x", "--dataset", "ml-1m"], "no dataset 'ml-1m'")):
        assert main(["score", "--suite", str(suite), "--predictions", str(file), "--results", str(tmp_path / "r"), *args]) == 2
        assert message in capsys.readouterr().err


def test_parquet_predictions_are_scored_like_csv(exported, tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    suite, out = exported
    res = tmp_path / "r"
    file = popularity_file(out, tmp_path / "pop.csv")
    pd.read_csv(file, dtype=str).to_parquet(tmp_path / "pop.parquet")
    for name, path in (("csv", file), ("pq", tmp_path / "pop.parquet")):
        assert main(["score", "--suite", str(suite), "--dataset", "syn", "--name", name, "--predictions", str(path),
                     "--results", str(res)]) == 0
    metrics = lambda name: json.loads((res / f"runs/ext/syn/{name}/seed0/metrics.json").read_text())  # noqa: E731
    assert metrics("csv") == metrics("pq")


def test_a_refused_file_registers_nothing_and_later_runs_still_work(exported, tmp_path, capsys):
    """A refused file used to be registered first: every later run, table and score of the suite
    then failed until overlay.yaml was edited by hand."""
    suite, out = exported
    res = tmp_path / "r"
    users, items = rows(out / "test_users.csv"), rows(out / "items.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text(f"user,item,score\n{users[0]['user']},no-such-item,1.0\n")
    assert main(["score", "--suite", str(suite), "--dataset", "syn", "--name", "x", "--predictions", str(bad),
                 "--results", str(res)]) == 2
    assert not (res / "scored").exists()
    empty = tmp_path / "empty.csv"
    empty.write_text("user,items\n" + "".join(f"{u['user']},\n" for u in users))
    assert main(["score", "--suite", str(suite), "--dataset", "syn", "--name", "x", "--predictions", str(empty),
                 "--results", str(res)]) == 2
    assert "every user's item list is empty" in capsys.readouterr().err
    partial = tmp_path / "partial.csv"
    partial.write_text(f"user,item,score\n{users[0]['user']},{items[0]['item']},1.0\n")
    assert main(["score", "--suite", str(suite), "--dataset", "syn", "--name", "x", "--predictions", str(partial),
                 "--results", str(res)]) == 2
    assert "of the 30 users the suite evaluates" in capsys.readouterr().err
    assert not (res / "scored").exists()
    assert main(["run", "--suite", str(suite), "--results", str(res)]) == 0


def test_rescoring_keeps_what_was_declared(exported, tmp_path):
    import yaml

    suite, out = exported
    res = tmp_path / "r"
    file = popularity_file(out, tmp_path / "pop.csv")
    base = ["score", "--suite", str(suite), "--dataset", "syn", "--name", "mine", "--predictions", str(file), "--results", str(res)]
    assert main([*base, "--declared", "counted from train.csv"]) == 0
    assert main(base) == 0
    overlay = yaml.safe_load((res / "scored/ext/overlay.yaml").read_text())
    assert overlay["models"]["mine"]["datasets"]["syn"]["declared"] == "counted from train.csv"


def test_score_into_a_folder_of_ones_own_compares_with_another_results_folder(exported, tmp_path):
    suite, out = exported
    committed, mine = tmp_path / "committed", tmp_path / "mine"
    assert main(["run", "--suite", str(suite), "--results", str(committed)]) == 0
    file = popularity_file(out, tmp_path / "pop.csv")
    assert main(["score", "--suite", str(suite), "--dataset", "syn", "--name", "mine", "--predictions", str(file),
                 "--results", str(mine), "--compare-with", str(committed)]) == 0
    table = (mine / "tables/ext/syn-main.md").read_text()
    assert "| pop " in table and "| mine " in table  # the other folder's row beside this one's
    assert not (mine / "runs/ext/syn/pop").exists()  # read, not copied
    assert not (committed / "runs/ext/syn/mine").exists()  # and never written


def test_export_never_half_writes_and_ends_with_one_line_where_it_cannot_write(tmp_path, capsys):
    """A missing or non-folder parent, a dangling link and an unwritable parent each end with one line
    (they raised OSError tracebacks); nothing is left behind."""
    import os

    suite = tmp_path / "ext.yaml"
    suite.write_text(SUITE)
    (tmp_path / "afile").write_text("")
    (tmp_path / "link").symlink_to(tmp_path / "gone/deeper")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    cases = {"afile/sub": "is not a folder", "nodir/sub": "does not exist", "link": "symbolic link to a missing path"}
    if os.geteuid() != 0:  # root writes anywhere
        cases["locked/out"] = "permission denied"
    before = sorted(p.name for p in tmp_path.iterdir())
    for out, why in cases.items():
        assert main(["export", "--suite", str(suite), "--dataset", "syn", "--out", str(tmp_path / out)]) == 2
        assert why in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == before and not any(locked.iterdir())


def test_a_second_export_into_one_new_folder_is_refused_not_mixed(tmp_path, monkeypatch, capsys):
    """Two exports into one new folder both succeeded, their files mixed: the files are written in a
    hidden sibling folder renamed into place whole, and the later rename is refused."""
    from bench.interop import export

    suite = tmp_path / "ext.yaml"
    suite.write_text(SUITE)
    out = tmp_path / "split"
    real = export._write_whole

    def racing(target, files):  # another export lands between this one's check and its rename
        real(target, {"other.csv": "x\n"})
        real(target, files)

    monkeypatch.setattr(export, "_write_whole", racing)
    assert main(["export", "--suite", str(suite), "--dataset", "syn", "--out", str(out)]) == 2
    assert "another export filled it meanwhile" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["other.csv"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_item_ids_with_spaces_are_exported_without_ambiguity(tmp_path):
    """RecBole's sequences are space-separated: 'a b' read back as two items. The atomic files are
    left out (the manifest says why) and the CSV files keep every id whole."""
    d = tmp_path / "toy"
    d.mkdir()
    (d / "toy.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n" +
                                 "".join(f"u{u}\titem {(u + k) % 5}\t{k}\n" for u in range(6) for k in range(5)))
    suite = tmp_path / "sp.yaml"
    suite.write_text(f"datasets:\n  toy: {{spec: 'atomic:{d}'}}\nmodels:\n  pop: {{model: pop}}\n")
    out = tmp_path / "split"
    assert main(["export", "--suite", str(suite), "--dataset", "toy", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert "holds whitespace" in manifest["recbole_files"] and not list(out.glob("*.inter"))
    assert sorted(manifest["files"]) == sorted(p.name for p in out.iterdir())
    assert {r["item"] for r in rows(out / "items.csv")} == {f"item {i}" for i in range(5)}


def test_refingerprint_reads_a_store_holding_a_scored_cell(exported, tmp_path, capsys):
    """It stopped with KeyError: the scored cell's model, named by import path, is not in the registry."""
    suite, out = exported
    res = tmp_path / "r"
    file = popularity_file(out, tmp_path / "pop.csv")
    assert main(["score", "--suite", str(suite), "--dataset", "syn", "--name", "their-pop", "--predictions", str(file),
                 "--results", str(res)]) == 0
    record = res / "runs/ext/syn/their-pop/seed0/run.json"
    gone = json.loads(record.read_text())
    gone["config"]["model"]["name"] = "a-model-since-removed"
    (res / "runs/ext/syn/gone/seed0").mkdir(parents=True)
    (res / "runs/ext/syn/gone/seed0/run.json").write_text(json.dumps(gone))
    capsys.readouterr()
    for extra in ([], ["--verify"]):
        assert main(["refingerprint", "--results", str(res), *extra]) == 0
    said = capsys.readouterr().out
    assert "1 current" in said and "1 stale" in said
