"""The README front page: its headline table is rebuilt from the stored runs (bench check), its
links to the docs resolve, and it stays a front page."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

from bench.cli import main
from bench.report import findings, plots
from bench.report.headline import END, START, check_readme, replace_block
from bench.report.results import load_runs
from bench.suites.load import load_suite

ROOT = Path(__file__).resolve().parent.parent


def test_the_generated_blocks_are_checked_against_the_stored_runs(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{START}\n{END}\n\nbetween\n\n{findings.START}\n{findings.END}\n\ntext after\n")
    results = ROOT / "results"
    assert len(check_readme(readme, results)) == 2  # empty blocks differ from what the runs give
    assert main(["headline", "--readme", str(readme), "--results", str(results)]) == 0
    text = readme.read_text()
    assert check_readme(readme, results) == [] and "\nbetween\n" in text and text.endswith("text after\n")
    readme.write_text(re.sub(r"0\.2\d\d", "0.999", text, count=1))  # a hand-edited number in the headline
    assert check_readme(readme, results)
    assert main(["check", "--suite", "smoke", "--results", str(results), "--readme", str(readme)]) == 1
    assert "headline table differs" in capsys.readouterr().out
    head, block = text.split(findings.START)
    quoted = re.search(r"\| (\d\.\d{3}) \(per-seed means\)", block).group(1)  # a p-value the findings quote
    readme.write_text(head + findings.START + block.replace(quoted, "0.001", 1))
    assert check_readme(readme, results) == [f"{readme}: the findings table differs from the stored runs "
                                             "(python -m bench headline rewrites it)"]


def test_the_findings_read_every_question_from_the_ablation_tests():
    """Each question's rows come from the ablation tables' tests (the numbers of -tests.md), and a
    row with no run says so instead of vanishing."""
    block = findings.findings_markdown(ROOT / "results")
    questions = load_suite(findings.SUITE).findings["questions"]
    for q in questions:
        assert q["question"] in block
    lines = [line for line in block.splitlines() if line.startswith("| ")]
    assert len(lines) == 1 + sum(len(q["rows"]) for q in questions)  # the header, then a line per row
    tests = (ROOT / "results" / "tables" / "ablation" / "ml-100k-tests.md").read_text()
    stage2 = next(line for line in block.splitlines() if "stage II only (1,200 steps) vs CALRec I+II" in line)
    difference = stage2.split("|")[5].strip()
    assert difference in tests  # the same interval the committed tests file prints


def test_a_findings_row_without_runs_says_not_run(tmp_path):
    suite = load_suite(findings.SUITE)
    question = lambda words: next(q for q in suite.findings["questions"] if words in q["question"])  # noqa: E731
    gone = question("order of a history")["rows"][0]  # the shuffled control, whichever row answers it
    shutil.copytree(ROOT / "results" / "runs" / "ablation", tmp_path / "runs" / "ablation",
                    ignore=shutil.ignore_patterns(gone))
    line = next(line for line in findings.findings_markdown(tmp_path).splitlines()
                if f"| {suite.variant(gone).label} vs" in line)
    assert "| not run |" in line
    losses = question("(ii)")
    row, ref = losses["rows"][-1], suite.ablations[losses["table"]][0]
    dropped = {ref: ("seed0", "seed1"), row: ("seed2",)}  # the row and its reference share no seed
    no_shared = tmp_path / "shared"
    shutil.copytree(ROOT / "results" / "runs" / "ablation", no_shared / "runs" / "ablation",
                    ignore=lambda folder, names: [n for n in names if n in dropped.get(Path(folder).name, ())])
    line = next(line for line in findings.findings_markdown(no_shared).splitlines()
                if f"| {suite.variant(row).label} vs" in line)
    assert "| no seed shared |" in line
    written = plots.findings_plot(suite, "ml-100k", *load_runs(suite, tmp_path, "ml-100k"), tmp_path / "plots")
    assert [p.name for p in written] == ["ml-100k-findings.png", "ml-100k-findings.pdf"]  # the row left out
    assert all(p.stat().st_size for p in written)
    nothing = load_runs(suite, tmp_path / "empty", "ml-100k")
    assert plots.findings_plot(suite, "ml-100k", *nothing, tmp_path / "none") == [] and not (tmp_path / "none").exists()


def test_any_suite_with_findings_gets_its_table_and_forest_plot(tmp_path):
    """The questions are the suite file's (`findings:`), not a list in the code: a suite of one's own
    gets the same table and plot."""
    suite = tmp_path / "mine.yaml"
    suite.write_text(
        "seeds: [0]\nks: [1, 10]\ndatasets:\n  syn: {spec: synthetic, n_users: 60, n_items: 30, seed: 1}\n"
        "models:\n  pop: {model: pop}\n  random: {model: random}\n  itemknn: {model: itemknn}\n"
        "ablations: {t: [pop, random, itemknn]}\n"
        "findings: {note: Two rows., questions: [{question: does it matter, table: t, rows: [random, itemknn]}]}\n")
    results = tmp_path / "results"
    assert main(["run", "--suite", str(suite), "--results", str(results), "--models", "pop,random"]) == 0
    block = findings.findings_markdown(results, str(suite), "syn")
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in block.splitlines() if line.startswith("| ")]
    assert [r[:3] for r in rows[1:]] == [["does it matter", "random vs pop", "0"], ["", "itemknn vs pop", "not run"]]
    assert block.split("\n\n")[1].startswith("Two rows. syn, all test users, the `mine` suite;")
    assert main(["plot", "--suite", str(suite), "--results", str(results)]) == 0
    assert (results / "plots" / "mine" / "syn-findings.png").stat().st_size


def test_a_readme_without_markers_is_one_line(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    assert main(["headline", "--readme", str(readme)]) == 2
    assert "no headline markers" in capsys.readouterr().err
    readme.write_text(f"{START}\n{END}\n")  # the findings block's markers missing
    assert main(["headline", "--readme", str(readme)]) == 2
    assert "no findings markers" in capsys.readouterr().err
    assert replace_block(f"a{START}old{END}b", "new\n", readme) == f"a{START}\nnew\n{END}b"


def test_the_readme_is_a_front_page_whose_links_resolve():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    links = re.findall(r"\]\(([^)#]+)\)", text)
    assert links and all((ROOT / link).is_file() for link in links)
    assert "pip install -e . &&" in text and "python -m pytest -m 'slow or not slow'" in text  # the two commands


def test_a_reader_that_leaves_before_the_output_gets_no_traceback():
    """`python -m bench list | head -0`: the pipe is closed before the command writes (it is still
    importing), so its first print meets a broken pipe; it must stop quietly, not with a traceback."""
    p = subprocess.Popen([sys.executable, "-m", "bench", "list"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()
    _, err = p.communicate(timeout=60)  # bounded: a command that hung would fail here, not hang the suite
    assert p.returncode == 1 and err.decode() == ""


class Outside:
    """A model defined outside the package, named by import path in a suite."""

    def __init__(self, weight: float = 1.0):
        self.weight = weight

    def fit(self, split, ctx):
        import numpy as np

        self.pop = np.bincount(np.concatenate(split.train), minlength=split.n_items).astype(float) * self.weight

    def predict(self, histories, users):
        import numpy as np

        return np.tile(self.pop, (len(histories), 1))


OUTSIDE = """
seeds: [0]
ks: [5, 10]
datasets:
  syn: {spec: synthetic, n_users: 40, n_items: 30, seed: 2}
models:
  pop: {model: pop}
  outside: {model: "MODULE:Outside", params: {weight: 2.0}}
reference: pop
"""


def test_a_model_named_by_import_path_runs_is_checked_and_fingerprinted(tmp_path, capsys):
    import json

    from bench.execute.fingerprint import code_sources

    suite = tmp_path / "ext.yaml"
    suite.write_text(OUTSIDE.replace("MODULE", __name__))
    res = tmp_path / "r"
    assert main(["run", "--suite", str(suite), "--results", str(res)]) == 0
    rec = json.loads((res / "runs/ext/syn/outside/seed0/run.json").read_text())
    pop = json.loads((res / "runs/ext/syn/pop/seed0/metrics.json").read_text())
    assert json.loads((res / "runs/ext/syn/outside/seed0/metrics.json").read_text()) == pop  # same ranking
    assert f"tests/{__name__}.py" in rec["code"]["files"]  # its own source is fingerprinted
    assert f"tests/{__name__}.py" in code_sources(f"{__name__}:Outside", "synthetic")
    capsys.readouterr()
    for model, message in ((f"{__name__}:Nothing", "has no 'Nothing'"), ("nosuchpkg.mod:X", "cannot import nosuchpkg.mod"),
                           ("not a path!:X", "nor an import path"), (f"{__name__}:OUTSIDE", "not a class with fit")):
        suite.write_text(OUTSIDE.replace('"MODULE:Outside"', repr(model)))
        assert main(["run", "--suite", str(suite), "--results", str(res)]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "models.outside" in err and "\n" not in err
    suite.write_text(OUTSIDE.replace("MODULE", __name__).replace("weight: 2.0", "weight: fast"))
    assert main(["run", "--suite", str(suite), "--results", str(res)]) == 2
    assert "parameter 'weight' must be float" in capsys.readouterr().err


GUARDED = """
seeds: [0]
ks: [10]
datasets:
  syn: {spec: synthetic, n_users: 40, n_items: 30, seed: 1}
models:
  pop: {model: pop}
"""


def test_a_run_longer_than_the_threshold_asks_or_needs_yes(tmp_path, monkeypatch, capsys):
    from bench.execute import guard

    suite = tmp_path / "g.yaml"
    suite.write_text(GUARDED)
    monkeypatch.setattr(guard, "ASK_ABOVE_S", -1.0)  # every estimate is "long"
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO(""))  # not a terminal (CI, a batch job)
    res = tmp_path / "r"
    assert main(["run", "--suite", str(suite), "--results", str(res)]) == 2
    said = capsys.readouterr()
    assert "1 cell(s) to compute (1 on cpu)" in said.out and "--yes starts it all" in said.err
    assert not (res / "runs").exists()  # nothing started
    assert main(["run", "--suite", str(suite), "--results", str(res), "--yes"]) == 0
    assert (res / "runs/g/syn/pop/seed0/run.json").is_file()
    # stored now: nothing to compute, so no question
    assert main(["run", "--suite", str(suite), "--results", str(res)]) == 0
    capsys.readouterr()
    # recomputed: the bar says what the plan estimates is left, from the stored run's time
    assert main(["run", "--suite", str(suite), "--results", str(res), "--force", "--yes"]) == 0
    assert "left by bench plan" in capsys.readouterr().err


def test_at_a_terminal_the_run_asks_and_a_no_starts_nothing(tmp_path, monkeypatch):
    import io

    from bench.execute import guard

    suite = tmp_path / "g.yaml"
    suite.write_text(GUARDED)
    monkeypatch.setattr(guard, "ASK_ABOVE_S", -1.0)
    fake = io.StringIO("n\n")
    fake.isatty = lambda: True
    monkeypatch.setattr("sys.stdin", fake)
    assert main(["run", "--suite", str(suite), "--results", str(tmp_path / "r")]) == 2
    fake = io.StringIO("y\n")
    fake.isatty = lambda: True
    monkeypatch.setattr("sys.stdin", fake)
    assert main(["run", "--suite", str(suite), "--results", str(tmp_path / "r")]) == 0
