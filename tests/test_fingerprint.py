"""Code fingerprints: which sources a cell hashes, older schemes, and when the record is taken."""
import json
import subprocess

from bench.execute import fingerprint
from bench.cli import main
from bench.execute.fingerprint import code_content, code_fingerprint, code_sources, package_closure, staleness, upgraded

SUITE = """
seeds: [0]
ks: [10]
datasets:
  syn: {spec: synthetic, n_users: 40, n_items: 30, seed: 1}
models:
  pop: {model: pop}
  knn: {model: itemknn, params: {neighbours: 10}}
"""


def test_a_cell_hashes_its_loader_and_what_its_model_module_imports_from_its_package():
    ml = code_sources("sasrec", "ml-100k")
    assert "bench/datasets/movielens.py" in ml and "bench/datasets/amazon.py" not in ml
    assert {"baselines/sasrec.py", "baselines/neural.py", "baselines/dropout.py", "bench/evaluate.py"} <= set(ml)
    assert not any(f.startswith("calrec/") for f in ml)
    # Editing our SASRec's training loop must not stale RecBole's or ItemKNN's cells.
    assert "baselines/neural.py" not in code_sources("recbole", "ml-100k")
    assert "baselines/recbole_compat.py" in code_sources("recbole", "ml-100k")
    assert "baselines/neural.py" not in code_sources("itemknn", "ml-100k")
    assert "baselines/sasrec.py" in code_sources("bert4rec", "ml-100k")  # BERT4Rec subclasses it
    amazon = code_sources("calrec", "amazon2018:Beauty")
    assert "bench/datasets/amazon.py" in amazon and "bench/datasets/movielens.py" not in amazon
    assert {"calrec/recommender.py", "calrec/train.py", "calrec/retrieve.py"} <= set(amazon)
    # Scheme 2 hashed the whole package.
    assert "baselines/neural.py" in code_sources("recbole", "ml-100k", scheme=2)


def test_the_closure_follows_absolute_relative_and_function_level_imports(tmp_path, monkeypatch):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "import numpy\ndef f():\n    from pkg.b import g\n    return g\n",
        "b.py": "from . import c\nfrom .sub import e\n",
        "c.py": "import pkg.sub.deep\n",
        "d.py": "x = 1  # imported by nobody\n",
        "sub/__init__.py": "",
        "sub/e.py": "from ..d2 import y\n",
        "sub/deep.py": "",
        "d2.py": "y = 2\n",
    }
    for rel, text in files.items():
        (pkg / rel).write_text(text)
    monkeypatch.setattr(fingerprint, "ROOT", tmp_path)
    assert package_closure("pkg.a") == ["pkg/__init__.py", "pkg/a.py", "pkg/b.py", "pkg/c.py", "pkg/d2.py",
                                        "pkg/sub/__init__.py", "pkg/sub/deep.py", "pkg/sub/e.py"]
    assert package_closure("pkg.d") == ["pkg/__init__.py", "pkg/d.py"]


def _head() -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=fingerprint.ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()


def _record(model, code, commit=None):
    return {"config": {"model": {"name": model}, "dataset": {"spec": "ml-100k"}}, "code": code,
            "commit": commit or _head()}


def test_a_movielens_cell_hashes_the_atomic_reader_that_parses_its_files():
    """Scheme 3 missed it: an edit to atomic.py (how MovieLens rows are read) left MovieLens cells current."""
    assert "bench/datasets/atomic.py" in code_sources("sasrec", "ml-1m")
    assert "bench/datasets/atomic.py" not in code_sources("sasrec", "ml-1m", scheme=3)
    assert "bench/datasets/atomic.py" not in code_sources("sasrec", "synthetic")
    assert "bench/datasets/__init__.py" not in code_sources("sasrec", "ml-1m")  # it imports every loader


def test_an_older_record_is_upgraded_only_where_its_commit_vouches_for_the_files_it_did_not_hash():
    old = {"fingerprint": code_fingerprint("sasrec", "ml-100k", 3), "scheme": 3}
    assert staleness(_record("sasrec", old)) is None  # current either way
    assert upgraded(_record("sasrec", old))["upgraded_from"] == old  # HEAD holds today's atomic.py
    assert upgraded(_record("sasrec", old, commit=_head() + "-dirty")) is None  # what ran is unknown
    assert upgraded(_record("sasrec", old, commit="0" * 40)) is None  # no such commit
    first = subprocess.run(["git", "log", "--format=%H", "--diff-filter=A", "--", "bench/datasets/atomic.py"],
                           cwd=fingerprint.ROOT, capture_output=True, text=True, check=True).stdout.split()
    if first and not fingerprint.unchanged_since(first[-1], ["bench/datasets/atomic.py"]):
        assert upgraded(_record("sasrec", old, commit=first[-1])) is None  # atomic.py changed since


def test_older_scheme_records_stay_current_while_their_code_is_unchanged_and_can_be_upgraded():
    old = {"fingerprint": code_fingerprint("recbole", "ml-100k", 2), "scheme": 2}
    assert staleness(_record("recbole", old)) is None
    new = upgraded(_record("recbole", old))
    assert new == {"fingerprint": code_fingerprint("recbole", "ml-100k"), "scheme": fingerprint.SCHEME,
                   "files": fingerprint.file_hashes("recbole", "ml-100k"), "upgraded_from": old}
    assert staleness(_record("recbole", new)) is None and upgraded(_record("recbole", new)) is None
    before_files = {k: v for k, v in new.items() if k != "files"}  # today's scheme, recorded before per-file hashes
    assert upgraded(_record("recbole", before_files)) == new
    edited = {"fingerprint": "0" * 16, "scheme": 2}
    assert staleness(_record("recbole", edited)).startswith("code changed since (fingerprint")  # no per-file hashes
    assert upgraded(_record("recbole", edited)) is None  # nothing proves what it ran on
    assert upgraded(_record("recbole", None)) is None
    assert "older scheme" in staleness(_record("recbole", {"fingerprint": "ab", "scheme": 1}))


def test_refingerprint_rewrites_only_records_whose_code_is_proven_unchanged(tmp_path, capsys):
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE)
    res = tmp_path / "r"
    assert main(["run", "--suite", str(suite), "--results", str(res)]) == 0
    cells = {m: res / "runs/s/syn" / m / "seed0/run.json" for m in ("pop", "knn")}
    before = {}
    for model, path in cells.items():
        rec = json.loads(path.read_text())
        assert rec["code"]["scheme"] == fingerprint.SCHEME
        name = rec["config"]["model"]["name"]
        rec["code"] = {"fingerprint": code_fingerprint(name, "synthetic", 2) if model == "pop" else "f" * 16, "scheme": 2}
        path.write_text(json.dumps(rec))
        before[model] = rec
    capsys.readouterr()
    assert main(["refingerprint", "--results", str(res)]) == 0
    assert "1 upgraded, 0 current, 0 kept in an older scheme, 1 stale" in capsys.readouterr().out
    pop = json.loads(cells["pop"].read_text())
    assert pop["code"]["scheme"] == fingerprint.SCHEME and pop["code"]["upgraded_from"]["scheme"] == 2
    assert {k: v for k, v in pop.items() if k != "code"} == {k: v for k, v in before["pop"].items() if k != "code"}
    assert json.loads(cells["knn"].read_text()) == before["knn"]  # stale: left as it was
    assert main(["refingerprint", "--results", str(res)]) == 0
    assert "0 upgraded, 1 current, 0 kept in an older scheme, 1 stale" in capsys.readouterr().out


def test_the_record_names_the_code_read_before_the_model_trained(tmp_path, monkeypatch):
    """A file edited while a long cell computes must not be recorded as the code it ran on."""
    from baselines.simple import Popularity
    from bench.execute import runner

    edited, seen = [], []
    real_fit = Popularity.fit

    def fit(self, split, ctx):
        seen.append(ctx.extra["code_fingerprint"])  # what a cache shared across cells is keyed by
        edited.append(True)  # stands for a source file changed on disk during training
        return real_fit(self, split, ctx)

    monkeypatch.setattr(Popularity, "fit", fit)
    monkeypatch.setattr(runner, "code_record", lambda m, d: {"fingerprint": "after" if edited else "before", "scheme": 3})
    monkeypatch.setattr(runner, "git_commit", lambda: "after" if edited else "before")
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE)
    assert main(["run", "--suite", str(suite), "--results", str(tmp_path / "r"), "--models", "pop"]) == 0
    rec = json.loads((tmp_path / "r/runs/s/syn/pop/seed0/run.json").read_text())
    assert rec["code"]["fingerprint"] == "before" and rec["commit"] == "before" and seen == ["before"]


def test_a_stale_cell_names_the_files_that_changed(monkeypatch):
    rec = _record("sasrec", fingerprint.code_record("sasrec", "ml-100k"))
    assert staleness(rec) is None and fingerprint.changed_files(rec) == []
    then = rec["code"]["files"]
    gone = {k: v for k, v in then.items() if k != "baselines/dropout.py"}
    edited = {**gone, "baselines/neural.py": "0" * 12, "baselines/new.py": "1" * 12}
    rec["code"] = {**rec["code"], "fingerprint": "0" * 16, "files": edited}
    assert fingerprint.changed_files(rec) == ["baselines/dropout.py (added)", "baselines/neural.py", "baselines/new.py (removed)"]
    assert staleness(rec).startswith(
        "code changed since in baselines/dropout.py (added), baselines/neural.py, baselines/new.py (removed) (")


def test_scheme_5_hashes_what_the_code_does_not_how_it_is_spelled():
    src = b'"""Module doc."""\nimport math\n\n\ndef f(x):\n    """Doc."""\n    return math.sqrt(x) + 1  # why\n'
    respelled = (b'"""Another module doc,\nlonger."""\nimport math\n# a comment\n\ndef f(x):\n'
                 b'    """Other doc."""\n\n    return math.sqrt( x ) + 1\n')
    assert code_content(src) == code_content(respelled)
    for moved in (src.replace(b"+ 1", b"+ 2"), src.replace(b"def f(x)", b"def g(x)"), src.replace(b"import math", b"import cmath as math")):
        assert code_content(moved) != code_content(src)
    only_doc = b'def f():\n    """Doc."""\n'  # a body of a docstring alone is a `pass`
    assert code_content(only_doc) == code_content(b"def f():\n    pass\n")
    assert code_content(b"def f(:\n") == b"def f(:\n"  # does not parse: its bytes
    assert code_content(src, scheme=4) == src  # older schemes hash bytes
