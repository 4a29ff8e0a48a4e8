"""The README front page: its headline table is rebuilt from the stored runs (bench check), its
links to the docs resolve, and it stays a front page."""
import re
import subprocess
import sys
from pathlib import Path

from bench.cli import main
from bench.report.headline import END, START, check_readme, replace_block

ROOT = Path(__file__).resolve().parent.parent


def test_the_headline_table_is_checked_against_the_stored_runs(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{START}\n{END}\n\ntext after\n")
    results = ROOT / "results"
    assert check_readme(readme, results)  # an empty block differs from what the runs give
    assert main(["headline", "--readme", str(readme), "--results", str(results)]) == 0
    assert check_readme(readme, results) == [] and readme.read_text().endswith("text after\n")
    text = readme.read_text()
    readme.write_text(re.sub(r"0\.2\d\d", "0.999", text, count=1))  # a hand-edited number
    assert check_readme(readme, results)
    assert main(["check", "--suite", "smoke", "--results", str(results), "--readme", str(readme)]) == 1
    assert "headline table differs" in capsys.readouterr().out


def test_a_readme_without_markers_is_one_line(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    assert main(["headline", "--readme", str(readme)]) == 2
    assert "no headline markers" in capsys.readouterr().err
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
