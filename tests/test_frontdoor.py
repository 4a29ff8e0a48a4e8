"""The README front page: its headline table is rebuilt from the stored runs (bench check), its
links to the docs resolve, and it stays a front page."""
import re
from pathlib import Path

from bench.cli import main
from bench.headline import END, START, check_readme, replace_block

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
