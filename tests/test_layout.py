"""The house's shape: no import circles among our modules (function-level imports included), and a
top level of bench/ that shows the pipeline."""
import ast

from bench.execute.fingerprint import ROOT, _imported

PACKAGES = ("bench", "calrec", "baselines")


def _modules() -> dict[str, tuple]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = (path, parts[-1] == "__init__")
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph = {}
    for name, (path, is_pkg) in mods.items():
        names = _imported(ast.parse(path.read_bytes()), name, is_pkg)
        # `from a import b` names a.b too: keep the modules that exist; a package's own __init__ is not an edge
        graph[name] = {n for n in names if n in mods and n != name and not name.startswith(n + ".")}
    return graph


def test_no_import_circles():
    graph, cycles = _graph(), []
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_bench_top_level_shows_the_pipeline():
    entries = sorted(p.name for p in (ROOT / "bench").iterdir() if p.name != "__pycache__")
    assert len(entries) <= 15, entries
    assert {"datasets", "split.py", "evaluate.py", "models.py", "suites", "execute", "report"} <= set(entries)
