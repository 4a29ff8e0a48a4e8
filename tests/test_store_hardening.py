"""Hostile cases for the run store and the CLI: damaged cells are recomputed, not
trusted; crash debris is cleaned or recovered; filters, keys and seeds are checked before any cell
runs; files follow the umask. Every malformed file is written by the test itself."""
import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cli import main
from bench.execute.store import RunStore

SUITE = """
description: tiny
seeds: [0]
ks: [1, 10]
datasets:
  syn: {spec: synthetic, n_users: 40, n_items: 30, seed: 1}
models:
  pop: {model: pop}
  random: {model: random}
"""
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def suite_file(tmp_path):
    p = tmp_path / "tiny.yaml"
    p.write_text(SUITE)
    return p


def run(suite_file, results, *extra) -> int:
    return main(["run", "--suite", str(suite_file), "--results", str(results), *extra])


def cell(results) -> Path:
    return results / "runs" / "tiny" / "syn" / "pop" / "seed0"


@pytest.mark.parametrize("damage", [
    lambda c: (c / "metrics.json").write_text('{"NDCG@10": 0.'),  # truncated
    lambda c: (c / "metrics.json").write_text("{}"),
    lambda c: (c / "metrics.json").write_text((c / "metrics.json").read_text().replace('"MRR": 0.', '"MRR": 0.9')),
    lambda c: (c / "per_user.csv.gz").write_bytes((c / "per_user.csv.gz").read_bytes()[:20]),  # truncated gzip
    lambda c: (c / "per_user.csv.gz").write_bytes(b"not gzip at all"),
    lambda c: (c / "run.json").write_text("{"),
    lambda c: (c / "metrics.json").unlink(),
])
def test_a_damaged_cell_is_recomputed_with_a_reason(suite_file, tmp_path, capsys, damage):
    results = tmp_path / "r"
    assert run(suite_file, results) == 0
    good = (cell(results) / "metrics.json").read_text()
    damage(cell(results))
    capsys.readouterr()
    assert main(["table", "--suite", str(suite_file), "--results", str(results)]) == 0  # no traceback: listed as missing
    assert run(suite_file, results) == 0
    out = capsys.readouterr()
    assert "syn/pop/seed0: recomputing:" in out.out + out.err
    assert (cell(results) / "metrics.json").read_text() == good
    assert RunStore(results).check_cell(cell(results), __import__("json").loads((cell(results) / "run.json").read_text())["config_hash"]) is None


def test_crash_inside_a_cell_write_is_repaired_by_the_next_run(suite_file, tmp_path, capsys):
    """A process killed between moving the old cell aside and moving the new one in (the one window
    where no complete cell exists): the next run restores the old cell and cleans the temp folder."""
    results = tmp_path / "r"
    assert run(suite_file, results) == 0
    good = (cell(results) / "metrics.json").read_text()
    code = f"""
import os, sys
sys.path.insert(0, {str(ROOT)!r})
real = os.replace
def dying(src, dst):
    real(src, dst)
    if ".old-" in str(dst):
        os._exit(9)  # killed right after the old cell was moved aside
os.replace = dying
from bench.cli import main
main(["run", "--suite", {str(suite_file)!r}, "--results", {str(results)!r}, "--models", "pop", "--force"])
"""
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 9
    parent = cell(results).parent
    assert not cell(results).exists() and list(parent.glob(".seed0.old-*")) and list(parent.glob(".seed0.tmp-*"))
    capsys.readouterr()
    assert run(suite_file, results) == 0
    out = capsys.readouterr()
    assert "syn/pop/seed0: restored seed0 from .seed0.old-" in out.out + out.err  # and says so
    assert (cell(results) / "metrics.json").read_text() == good
    assert not list(parent.glob(".seed0.old-*")) and not list(parent.glob(".seed0.tmp-*"))


def test_a_cell_locked_by_another_run_is_skipped(suite_file, tmp_path, capsys):
    results = tmp_path / "r"
    held = RunStore.lock(cell(results))
    try:
        assert run(suite_file, results, "--models", "pop") == 0
        assert "another run is computing this cell" in capsys.readouterr().out
        assert not cell(results).exists()
    finally:
        held.close()
    assert run(suite_file, results, "--models", "pop") == 0 and cell(results).exists()


def test_files_follow_the_umask(suite_file, tmp_path):
    old = os.umask(0o022)
    try:
        assert run(suite_file, tmp_path / "r") == 0
    finally:
        os.umask(old)
    assert cell(tmp_path / "r").stat().st_mode & 0o777 == 0o755
    assert (cell(tmp_path / "r") / "metrics.json").stat().st_mode & 0o777 == 0o644
    table = next((tmp_path / "r" / "tables" / "tiny").glob("*.md"))
    assert table.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("args, message", [
    (["--models", ""], "--models is empty"),
    (["--models", ","], "--models is empty"),
    (["--seeds", ","], "--seeds is empty"),
    (["--datasets", ""], "--datasets is empty"),
])
def test_empty_filters_are_refused(suite_file, tmp_path, capsys, args, message):
    assert run(suite_file, tmp_path / "r", *args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r" / "runs").exists()


@pytest.mark.parametrize("seeds", ["-1", "4294967296"])
def test_out_of_range_seeds_are_refused(suite_file, tmp_path, seeds):
    with pytest.raises(SystemExit) as e:
        run(suite_file, tmp_path / "r", "--seeds", seeds)
    assert e.value.code == 2


@pytest.mark.parametrize("text, message", [
    (SUITE.replace("  pop: {model: pop}", "  ../../escape: {model: pop}"), "not a valid name"),
    (SUITE.replace("  syn: {spec", "  ../syn: {spec"), "not a valid name"),
    (SUITE.replace("  random: {model: random}", "  random: {model: random, params: {nope: 1}}"), "model variant 'random'"),
    (SUITE.replace("  random: {model: random}", "  random: {model: calrec, params: {lamda_nig: 1}}"), "unknown parameter"),
])
def test_the_whole_plan_is_checked_before_any_cell_runs(tmp_path, capsys, text, message):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    assert run(p, tmp_path / "r") == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r" / "runs").exists()  # pop (listed first) did not run either
    assert not list(tmp_path.rglob("escape"))


def test_a_foreign_suite_file_cannot_take_a_committed_suites_name(tmp_path, capsys):
    p = tmp_path / "smoke.yaml"
    p.write_text(SUITE)
    assert run(p, tmp_path / "r") == 2
    assert "rename the file" in capsys.readouterr().err


def test_an_unwritable_results_folder_is_reported_before_running(suite_file, tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    assert run(suite_file, ro) == 2
    assert "not writable" in capsys.readouterr().err


def test_check_notices_what_is_missing(tmp_path, capsys, monkeypatch):
    import json

    from bench.report import check

    results = tmp_path / "r"
    assert main(["check", "--suite", "smoke", "--results", str(results), "--update"]) == 0
    ref = results / "reference" / "smoke.json"
    data = json.loads(ref.read_text())
    first = next(iter(data))
    del data[first]["MRR"]
    ref.write_text(json.dumps(data))
    assert main(["check", "--suite", "smoke", "--results", str(results)]) == 1
    assert "MRR is missing from the reference" in capsys.readouterr().out
    assert check.check_tables("smoke", results) == [f"{results / 'tables' / 'smoke'}: no committed tables to check "
                                                    "(build them with `python -m bench table --suite smoke`)"]


def write_atomic(folder: Path, rows: list[str]) -> Path:
    folder.mkdir()
    (folder / "d.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n" + "".join(r + "\n" for r in rows))
    return folder


def test_duplicate_rows_are_dropped_and_counted(tmp_path):
    from bench.datasets import load_dataset
    from bench.split import leave_one_out

    rows = [f"u{u}\ti{(u + k) % 7}\t{k}" for u in range(5) for k in range(4)]
    d = write_atomic(tmp_path / "a", rows + rows[:4])  # user u0's events twice
    data = load_dataset(f"atomic:{d}")
    assert len(data.user) == len(rows) and "4 exact duplicate rows" in data.preprocessing
    split = leave_one_out(data)
    assert all(split.test[u] not in split.train[u] for u in range(split.n_users))


@pytest.mark.parametrize("body, message", [
    (None, "the file is empty"),
    (["u1\ti1\tnan"], "line 2: timestamp 'nan' is not finite"),
    (["u1\ti1\t1", "u1\ti2\tinf"], "line 3: timestamp 'inf' is not finite"),
    (["u1\ti1\t1", " \ti2\t2"], "line 3: empty user_id"),
])
def test_bad_atomic_files_are_one_line_errors(tmp_path, capsys, body, message):
    d = tmp_path / "a"
    if body is None:
        d.mkdir()
        (d / "d.inter").write_bytes(b"")
    else:
        write_atomic(d, body)
    suite = tmp_path / "s.yaml"
    suite.write_text(f"datasets:\n  d: {{spec: 'atomic:{d}'}}\nmodels:\n  pop: {{model: pop}}\n")
    assert run(suite, tmp_path / "r") == 2
    err = capsys.readouterr().err
    assert message in err and err.count("error:") == 1 and "Traceback" not in err


GOOD_REVIEW = b'{"reviewerID": "u1", "asin": "a1", "unixReviewTime": 1400000000}\n'


def _gz(data: bytes) -> bytes:
    import io

    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as f:
        f.write(data)
    return buf.getvalue()


@pytest.mark.parametrize("name, body, message", [
    ("Beauty_5.json.gz", b"plain text, not gzip\n", "not a gzip file, though named .gz"),
    ("Beauty_5.json.gz", _gz(GOOD_REVIEW * 50)[:-30], "truncated after line"),
    ("Beauty_5.json", _gz(GOOD_REVIEW), "is gzip-compressed; name it Beauty_5.json.gz"),
    ("Beauty_5.json", GOOD_REVIEW + b'{"reviewerID": "u\xff", "asin": "a", "unixReviewTime": 1}\n', "line 2: not UTF-8"),
    ("Beauty_5.json", GOOD_REVIEW + b'{"reviewerID": "u2", "asin": "a", "unixReviewTime": "09 13, 2009"}\n',
     "line 2: unixReviewTime must be a finite number of seconds, not '09 13, 2009'"),
    ("Beauty_5.json", GOOD_REVIEW + b'{"reviewerID": "u2", "asin": "a", "unixReviewTime": NaN}\n', "line 2: unixReviewTime"),
    ("Beauty_5.json", GOOD_REVIEW + b'{"reviewerID": "u2", "asin": "", "unixReviewTime": 1}\n',
     "line 2: field 'asin' must be a non-empty string"),
])
def test_bad_amazon_files_are_one_line_errors_naming_file_and_line(tmp_path, capsys, name, body, message):
    (tmp_path / name).write_bytes(body)
    (tmp_path / "meta_Beauty.json").write_text('{"asin": "a1", "title": "A"}\n')
    suite = tmp_path / "s.yaml"
    suite.write_text(f"datasets:\n  b: {{spec: 'amazon2018:Beauty', directory: '{tmp_path}', k: 1}}\n"
                     "models:\n  pop: {model: pop}\n")
    assert run(suite, tmp_path / "r") == 2
    err = capsys.readouterr().err
    assert message in err and name in err and err.count("error:") == 1 and "Traceback" not in err


@pytest.mark.parametrize("old, new, message", [
    ("seeds: [0]", "seeds: [true]", "seeds.0: input should be a valid integer"),
    ("seeds: [0]", "seeds: [-3]", "seed -3 is outside"),
    ("seeds: [0]", "seeds: []", "seeds: list should have at least 1 item"),
    ("ks: [1, 10]", "ks: [1, '10']", "ks.1: input should be a valid integer"),
    ("ks: [1, 10]", "ks: [0, 10]", "ks: 0 is not a positive cutoff"),
    ("description: tiny", "history_masking: 'yes'", "history_masking: input should be a valid boolean"),
    ("description: tiny", "eval_batch: 0", "eval_batch: input should be greater than or equal to 1"),
    ("description: tiny", "user_sample: {size: '10'}", "user_sample.size: input should be a valid integer"),
    ("description: tiny", "reference: 5", "reference: input should be a valid string"),
    ("description: tiny", "check: {tolerance: {default: 'tight'}}", "check.tolerance.default: input should be a valid number"),
    ("description: tiny", "check: {tolerance: {default: -1.0}}", "must be a number >= 0"),
    ("description: tiny", "ablations: {a: pop}", "ablations.a: input should be a valid list"),
    ("description: tiny", "colour: red", "suite: unknown key 'colour' (allowed: description"),
    ("description: tiny", "findings: {questions: []}", "findings.questions: list should have at least 1 item"),
    ("description: tiny", "findings: {questions: [{question: q, table: t, rows: [random]}]}",
     "findings.questions.0.table: 't' is not an ablation table of this suite (it has none)"),
    ("description: tiny", "ablations: {t: [pop, random]}\nfindings: {questions: [{question: q, table: t, rows: [pop]}]}",
     "findings.questions.0.rows: ablations.t tests no row 'pop' against its reference"),
    ("  pop: {model: pop}", "  pop: {model: pop, label: 5}", "models.pop.label: input should be a valid string"),
    ("  pop: {model: pop}", "  pop: {model: pop, params: [1]}", "models.pop.params: input should be a valid dictionary"),
    ("  pop: {model: pop}", "  pop: {params: {}}", "models.pop: missing 'model'"),
    ("  pop: {model: pop}", "  pop: {model: itemknn, params: {neighbours: 2.5}}",
     "parameter 'neighbours' must be int, not float 2.5"),
    ("  pop: {model: pop}", "  pop: {model: sasrec, params: {lr: 1e-3}}", "write 1.0e-3"),
    ("  pop: {model: pop}", "  pop: {model: sasrec, params: {all_windows: 'no'}}", "parameter 'all_windows' must be bool"),
    ("  pop: {model: pop}", "  pop: {model: bert4rec, params: {hidden: true}}", "parameter 'hidden' must be int"),
    ("  pop: {model: pop}", "  pop: {model: calrec, params: {n_samples: '10'}}", "parameter 'n_samples' must be int"),
    ("n_users: 40", "n_users: '40'", "dataset 'synthetic': parameter 'n_users' must be int"),
])
def test_every_suite_field_is_type_checked_before_any_cell_runs(tmp_path, capsys, old, new, message):
    assert old in SUITE
    p = tmp_path / "bad.yaml"
    p.write_text(SUITE.replace(old, new))
    assert run(p, tmp_path / "r") == 2
    err = capsys.readouterr().err
    assert message in err and err.count("error:") == 1 and "Traceback" not in err
    assert not (tmp_path / "r" / "runs").exists()


def test_a_cell_computed_on_other_data_is_left_out_of_tables_and_recomputed(tmp_path, capsys):
    """Same suite, same config hash, but the dataset's file changed under it (a re-download, a fixed
    row): the stored cells are not this experiment any more."""
    import json

    from bench.execute.plan import plan_markdown
    from bench.execute.runner import _split
    from bench.suites.load import load_suite

    rows = [f"u{u}\ti{(u + k) % 7}\t{k}" for u in range(6) for k in range(5)]
    d = write_atomic(tmp_path / "a", rows)
    suite = tmp_path / "s.yaml"
    suite.write_text(f"seeds: [0]\nks: [1, 10]\ndatasets:\n  d: {{spec: 'atomic:{d}'}}\n"
                     "models:\n  pop: {model: pop}\n  random: {model: random}\n")
    results = tmp_path / "r"
    table = results / "tables" / "s" / "d-main.md"
    assert run(suite, results) == 0
    stored = results / "runs" / "s" / "d" / "pop" / "seed0"
    before = json.loads((stored / "run.json").read_text())["dataset_stats"]["version"]
    (d / "d.inter").write_text((d / "d.inter").read_text() + "u0\ti6\t99\n")  # one more event
    _split.cache_clear()  # a process reads a dataset once; each command below is a new process in real use
    assert main(["table", "--suite", str(suite), "--results", str(results)]) == 0
    assert "No stored runs for this table yet" in table.read_text()
    assert "to run: it was computed on other data" in plan_markdown(load_suite(str(suite)), results)
    assert run(suite, results, "--models", "random") == 0  # pop stays as it was, on the old data
    text = table.read_text()
    assert "| random " in text and "| pop " not in text
    assert "Left out, computed on other data than the dataset's files give now" in text and "d: pop (seed 0)" in text
    capsys.readouterr()
    assert run(suite, results) == 0
    out = capsys.readouterr()
    assert "d/pop/seed0: recomputing: it was computed on other data" in out.out + out.err
    assert json.loads((stored / "run.json").read_text())["dataset_stats"]["version"] != before
    assert "| pop " in table.read_text() and "other data" not in table.read_text()


def test_rows_on_different_data_are_named_where_the_files_cannot_be_read(tmp_path):
    """Without the files (the `paper` suite on a machine without Amazon data) a table cannot tell
    which version is current: it keeps the rows and names each one's data."""
    import shutil

    from bench.execute.runner import _split

    d = write_atomic(tmp_path / "a", [f"u{u}\ti{(u + k) % 7}\t{k}" for u in range(6) for k in range(5)])
    suite = tmp_path / "s.yaml"
    suite.write_text(f"seeds: [0]\nks: [10]\ndatasets:\n  d: {{spec: 'atomic:{d}'}}\n"
                     "models:\n  pop: {model: pop}\n  random: {model: random}\n")
    results = tmp_path / "r"
    assert run(suite, results, "--models", "pop") == 0
    (d / "d.inter").write_text((d / "d.inter").read_text() + "u0\ti6\t99\n")
    _split.cache_clear()
    assert run(suite, results, "--models", "random") == 0
    shutil.rmtree(d)
    _split.cache_clear()
    assert main(["table", "--suite", str(suite), "--results", str(results)]) == 0
    text = (results / "tables" / "s" / "d-main.md").read_text()
    assert "| pop " in text and "| random " in text
    assert "Rows computed on different data" in text and text.count("sha1:") == 3  # the dataset note, then each row's


def _rewrite_per_user(c: Path, df) -> None:
    """Store `df` as the cell's per-user file with metrics.json agreeing, as a careless copy would."""
    import json

    from bench.evaluate import Ranks, metrics_from_ranks
    from bench.execute.store import per_user_csv

    ranks = Ranks(df["above"].to_numpy(), df["ties"].to_numpy())
    (c / "per_user.csv.gz").write_bytes(per_user_csv(df["user"].to_numpy(), df["target"].to_numpy(), ranks))
    (c / "metrics.json").write_text(json.dumps({k: float(v.mean()) for k, v in metrics_from_ranks(ranks, [1, 10]).items()}))


def test_a_cell_whose_per_user_file_lost_users_is_recomputed(suite_file, tmp_path, capsys):
    """per_user.csv.gz and metrics.json agree with each other, but hold fewer users than the run
    evaluated (say, both copied from a smaller run): the count in run.json catches it."""
    results = tmp_path / "r"
    assert run(suite_file, results) == 0
    c = cell(results)
    df = RunStore.read_per_user(c).iloc[:-5]
    _rewrite_per_user(c, df)
    capsys.readouterr()
    assert run(suite_file, results) == 0
    out = capsys.readouterr()
    assert f"holds {len(df)} users, run.json counts {len(df) + 5}" in out.out + out.err
    assert len(RunStore.read_per_user(c)) == len(df) + 5


def test_a_key_written_twice_in_a_suite_is_refused_with_its_line(tmp_path, capsys):
    """YAML keeps the second `pop:` and drops the first without a word: the first variant's cells
    would never run. A `<<` merge may still be overridden."""
    p = tmp_path / "twice.yaml"
    p.write_text(SUITE + "  pop: {model: itemknn}\n")
    assert run(p, tmp_path / "r") == 2
    err = capsys.readouterr().err
    assert "twice.yaml: line 10: not valid YAML (key 'pop' appears twice in one mapping (first on line 8))" in err
    assert err.count("error:") == 1 and not (tmp_path / "r" / "runs").exists()
    merged = tmp_path / "merged.yaml"
    merged.write_text(SUITE.replace("  random: {model: random}", "  knn: &knn {model: itemknn, params: {neighbours: 5}}\n"
                                    "  knn2: {<<: *knn, params: {neighbours: 9}}"))
    assert run(merged, tmp_path / "r2") == 0
    assert __import__("json").loads((tmp_path / "r2/runs/merged/syn/knn2/seed0/run.json").read_text())[
        "config"]["model"]["params"] == {"neighbours": 9}


def test_a_cell_that_counts_one_user_twice_is_recomputed(suite_file, tmp_path, capsys):
    """One user's row copied over another's: the row count and metrics.json still agree."""
    results = tmp_path / "r"
    assert run(suite_file, results) == 0
    c = cell(results)
    df = RunStore.read_per_user(c)
    twice = df.iloc[0]["user"]
    df.loc[1] = df.loc[0]
    _rewrite_per_user(c, df)
    capsys.readouterr()
    assert run(suite_file, results) == 0
    out = capsys.readouterr()
    assert f"holds user {twice!r} twice" in out.out + out.err
    assert not RunStore.read_per_user(c)["user"].duplicated().any()


def test_a_table_refuses_cells_that_scored_other_users(suite_file, tmp_path, capsys):
    """Cells of one dataset pair up by user; one holding a user the others did not score (edited or
    copied from another sample) is named with the cell it disagrees with, and no table is written."""
    results = tmp_path / "r"
    assert run(suite_file, results) == 0
    c = results / "runs" / "tiny" / "syn" / "random" / "seed0"
    df = RunStore.read_per_user(c)
    df.loc[0, "user"] = "someone-else"
    _rewrite_per_user(c, df)
    shutil.rmtree(results / "tables", ignore_errors=True)
    capsys.readouterr()
    assert main(["table", "--suite", str(suite_file), "--results", str(results)]) == 2
    err = capsys.readouterr().err
    assert "syn: random/seed0 scored other test users than pop/seed0 (1 of its 40 are not among that cell's 40)" in err
    assert not (results / "tables" / "tiny").exists()


def test_a_cell_that_crashes_reports_its_traceback_and_the_others_still_run(suite_file, tmp_path, capsys, monkeypatch):
    """A bug in one cell (here the random model's fit) ended the whole local run and its tables, as
    on Ray it does not: the other cells run, the failed one is named with its error and traceback,
    the exit is 1, and a rerun computes only the failed cell."""
    from baselines.simple import RandomScores

    def broken(self, split, ctx):
        raise KeyError("valid_nll")

    monkeypatch.setattr(RandomScores, "fit", broken)
    assert run(suite_file, tmp_path) == 1
    out, err = capsys.readouterr()
    assert "syn/random/seed0: failed: KeyError: 'valid_nll'" in out and "Traceback" in out and "in broken" in out
    assert "1 cell(s) failed: syn/random/seed0" in err
    assert (tmp_path / "runs/tiny/syn/pop/seed0/run.json").is_file()
    assert not (tmp_path / "runs/tiny/syn/random/seed0/run.json").exists()
    assert list((tmp_path / "tables/tiny").glob("syn-main.md"))  # the tables of what ran are written
    monkeypatch.undo()
    assert run(suite_file, tmp_path) == 0
    out = capsys.readouterr().out
    assert "syn/pop/seed0: cached" in out and "syn/random/seed0: R@" in out
