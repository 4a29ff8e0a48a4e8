"""Which sources shape a cell's numbers, and a fingerprint of them, so tables can flag cells computed
by code that has changed since (`bench run --stale` recomputes them).

A cell's sources (scheme 4): CORE (split, item text, evaluator, data model), the module that loads
its dataset with the modules of bench.datasets it imports (MovieLens is parsed by atomic.py), and
its model's module with every module of the model's own package that it imports, directly or
through others. Editing our SASRec then leaves RecBole's and ItemKNN's cells current, and a new
Amazon option leaves MovieLens cells current.
Harness modules outside CORE (runner, tables, store) are taken not to shape numbers; the one to
watch is the runner's validation scoring, which picks the epoch a model keeps but only calls CORE's
evaluator (a change there that moves numbers needs `--force`).

Scheme 5 hashes what each source does, not how it is spelled: the syntax tree without docstrings
(comments and layout are outside the tree already), so documentation and formatting never stale a
cell; any change to code (a name, a constant, an import) still does.

A record of an older scheme stays current while today's code gives the fingerprint it recorded,
computed the old way. `bench refingerprint` rewrites such records in today's scheme where that is
provable: equal fingerprints mean the files the old scheme hashed are the ones the cell ran on, and
a file today's scheme adds (scheme 4's loader imports) must be byte-equal at the commit the cell
recorded (a clean one: a "-dirty" commit does not say what ran). A later edit elsewhere in a
package then no longer stales them.
"""
from __future__ import annotations

import ast
import hashlib
import inspect
import subprocess
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Sources that shape every model's numbers: the split, item text, the evaluator, the data model.
CORE = ("bench/evaluate.py", "bench/split.py", "bench/text.py", "bench/models.py", "bench/precision.py",
        "bench/datasets/base.py")
# 1: all of bench/datasets/ for every cell; 2: the cell's loader module and its model's whole package;
# 3: the loader and the model's module with what it imports from its own package; 4: as 3, and the
# modules of bench.datasets that the loader imports; 5: 4's files, each hashed as its syntax tree
# without docstrings.
SCHEME = 5
# Model packages: a model's closure follows its imports into any of them (never into bench/, the harness).
MODEL_PACKAGES = ("baselines", "calrec")
READABLE = (2, 3, 4, 5)  # schemes whose fingerprints can still be recomputed


def _module_file(name: str) -> Path | None:
    path = ROOT.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    if name.split(".")[0] in ("bench", *MODEL_PACKAGES):
        return None  # ours and not a module (a class imported from one): nothing to import to find out
    # Anything else is found where Python finds it, even when a folder of this checkout shares its
    # top-level name (a model package named `tests` must not be taken for ours and go unhashed).
    return _installed_file(name)


def _installed_file(name: str) -> Path | None:
    """A module outside this repository (a model named by import path in a suite): its source file,
    wherever Python finds it. None for what is not a Python source (builtins, extensions)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    origin = Path(spec.origin) if spec is not None and spec.origin else None
    return origin if origin is not None and origin.suffix == ".py" and origin.is_file() else None


def _shown(path: Path) -> str:
    """Repo-relative where it can be; a module installed elsewhere keeps its absolute path."""
    path = path.resolve()
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.as_posix()


def _imported(tree: ast.AST, module: str, is_package: bool) -> list[str]:
    """Every module name an import statement of `module` may load, function-level imports included.
    `from a import b` yields a and a.b, since b may be a module."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing module's package
                parts = module.split(".") if is_package else module.split(".")[:-1]
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            names += [base] + [f"{base}.{a.name}" for a in node.names]
    return names


def package_closure(module: str, within: str | None = None) -> list[str]:
    """Repo-relative files of `module` and of every module of its top-level package (or of another
    model package: a baseline built on CALRec's backbone loader) that it imports, directly or not,
    the packages' __init__ files included. With `within` (a package), only the
    modules inside it and no __init__ files: bench.datasets' __init__ imports every loader."""
    packages = (within,) if within else (module.split(".")[0], *MODEL_PACKAGES)
    seen: dict[str, Path] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen or not any(name == p or name.startswith(p + ".") for p in packages) or (within and name == within):
            continue
        path = _module_file(name)
        if path is None or (within and path.name == "__init__.py"):
            continue
        seen[name] = path
        parts = name.split(".")
        if within is None:
            todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # importing a.b runs a/__init__.py
        tree = ast.parse(path.read_bytes(), filename=str(path))
        todo += _imported(tree, name, path.name == "__init__.py")
    return sorted(_shown(p) for p in seen.values())


def _without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                node.body = node.body[1:] or [ast.Pass()]
    return tree


def code_content(source: bytes, scheme: int = SCHEME) -> bytes:
    """What scheme `scheme` hashes of one source file: its bytes (schemes 2-4), or from scheme 5 the
    dump of its syntax tree without docstrings or positions. A file that does not parse is hashed
    as bytes: a syntax error is a change too."""
    if scheme < 5:
        return source
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return source
    return ast.dump(_without_docstrings(tree), include_attributes=False).encode()


def model_target(model: str) -> str | None:
    """The `module:Class` a stored model name stands for: the registry's entry, or the name itself for a
    model named by import path; None for a name no longer registered."""
    from bench.models import MODELS

    return MODELS.get(model, model if ":" in model else None)


def code_sources(model: str, dataset: str, scheme: int = SCHEME) -> list[str]:
    """Repo-relative sources that shape one cell's numbers under `scheme`."""
    from bench.datasets import loader_of
    from bench.models import MODELS

    loader = loader_of(dataset)
    loader_file = Path(inspect.getsourcefile(loader)).resolve().relative_to(ROOT).as_posix()
    files = [*CORE, loader_file]
    target = model_target(model)
    if target is None:
        raise KeyError(model)
    module = target.split(":")[0]
    if scheme == 2:
        files += [f.relative_to(ROOT).as_posix() for f in sorted((ROOT / module.split(".")[0]).rglob("*.py"))]
    elif scheme in (3, 4, 5):
        files += package_closure(module)
        if scheme >= 4:
            files += package_closure(loader_file.removesuffix(".py").replace("/", "."), within="bench.datasets")
    else:
        raise ValueError(f"code fingerprint scheme {scheme} cannot be recomputed")
    return sorted(set(files))


def fingerprint_of(sources: dict[str, bytes]) -> str:
    """sha1 over (path, content) pairs: the same files with the same bytes give the same value."""
    h = hashlib.sha1()
    for rel in sorted(sources):
        h.update(rel.encode() + b"\0" + sources[rel] + b"\0")
    return h.hexdigest()[:16]


@lru_cache(maxsize=None)
def _sources_now(model: str, dataset: str, scheme: int) -> dict[str, bytes]:
    """This cell's sources as they are now (read once per process: the code a process runs is the
    code it imported)."""
    return {rel: (ROOT / rel).read_bytes() for rel in code_sources(model, dataset, scheme)}


def code_fingerprint(model: str, dataset: str, scheme: int = SCHEME) -> str:
    return fingerprint_of({rel: code_content(b, scheme) for rel, b in _sources_now(model, dataset, scheme).items()})


def file_hashes(model: str, dataset: str, scheme: int = SCHEME) -> dict[str, str]:
    """A short hash per source, so a stale cell can say which files changed."""
    return {rel: hashlib.sha1(code_content(b, scheme)).hexdigest()[:12]
            for rel, b in _sources_now(model, dataset, scheme).items()}


def code_record(model: str, dataset: str) -> dict:
    return {"fingerprint": code_fingerprint(model, dataset), "scheme": SCHEME, "files": file_hashes(model, dataset)}


def checkpoint_key(chash: str, model: str, dataset: str) -> str:
    """Under which a cell's model may save its training state and resume from it: same config, same code."""
    return f"{chash}-{code_fingerprint(model, dataset)}"


def _cell(record: dict) -> tuple[str, str]:
    return record["config"]["model"]["name"], record["config"]["dataset"]["spec"]


def staleness(record: dict) -> str | None:
    """None when the cell's recorded code fingerprint is what its sources give today, else why not."""
    code = record.get("code") or {}
    got, scheme = code.get("fingerprint"), code.get("scheme")
    if got is None:
        return "no code fingerprint recorded (computed before fingerprints were)"
    if scheme not in READABLE:
        return f"code fingerprint {got} of an older scheme (cannot tell whether its code changed)"
    try:
        now = code_fingerprint(*_cell(record), scheme)
    except KeyError:
        return f"model {_cell(record)[0]!r} is no longer in the registry (cannot tell whether its code changed)"
    if got == now:
        return None
    changed = changed_files(record)
    return "code changed since" + (f" in {', '.join(changed)}" if changed else "") + f" (fingerprint {got} -> {now})"


def changed_files(record: dict) -> list[str] | None:
    """The sources that differ from the ones a cell ran on, a file the cell's code now reaches and did
    not then marked "(added)", one it no longer reaches "(removed)"; None where its record kept no
    per-file hashes (recorded before they were)."""
    code = record.get("code") or {}
    if "files" not in code or code.get("scheme") not in READABLE:
        return None
    then, now = code["files"], file_hashes(*_cell(record), code["scheme"])
    return [f + (" (added)" if f not in then else " (removed)" if f not in now else "")
            for f in sorted(then.keys() | now.keys()) if then.get(f) != now.get(f)]


def upgraded(record: dict) -> dict | None:
    """The record's `code` entry rewritten in today's scheme (with per-file hashes), or None when
    there is nothing to do (today's scheme, files kept) or nothing that can be proven (stale, or no
    fingerprint). Sound because a current fingerprint means today's files are the ones it ran on."""
    code = record.get("code") or {}
    if (code.get("scheme") == SCHEME and "files" in code) or staleness(record) is not None:
        return None
    if code.get("scheme") == SCHEME:
        return {**code, "files": file_hashes(*_cell(record))}
    added = set(code_sources(*_cell(record))) - set(code_sources(*_cell(record), code["scheme"]))
    if added and not unchanged_since(record.get("commit"), sorted(added)):
        return None  # the old scheme did not hash them, and the commit cannot vouch for them
    return {**code_record(*_cell(record)), "upgraded_from": {k: code[k] for k in ("fingerprint", "scheme")}}


def unchanged_since(commit: str | None, files: list[str]) -> bool:
    """Whether each file is byte-equal today to its version at `commit` (a clean commit of this
    repository; False where git cannot say)."""
    if not commit or commit.endswith("-dirty") or commit == "unknown":
        return False
    for rel in files:
        try:
            then = subprocess.run(["git", "show", f"{commit}:{rel}"], cwd=ROOT, capture_output=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            return False
        if then != (ROOT / rel).read_bytes():
            return False
    return True


def refingerprint(results: Path) -> dict[str, list[str]]:
    """Rewrite in today's scheme the code record of every stored cell whose older-scheme fingerprint
    still matches today's code; leave the others. Returns the cells by outcome."""
    from bench.execute.store import RunStore, atomic_write_text, dumps

    store = RunStore(results)
    out: dict[str, list[str]] = {"upgraded": [], "current": [], "kept in an older scheme": [], "stale": [],
                                 "no fingerprint": [], "locked": []}
    for cell in store.cells():
        name = cell.relative_to(store.root / "runs").as_posix()
        lock = store.lock(cell)  # a suite computing this cell now will write its own record
        if lock is None:
            out["locked"].append(name)
            continue
        try:
            record = store.record(cell)
            if record is None:
                continue
            code = upgraded(record)
            if code is not None:
                atomic_write_text(cell / "run.json", dumps({**record, "code": code}))
                out["upgraded"].append(name)
            elif (record.get("code") or {}).get("fingerprint") is None:
                out["no fingerprint"].append(name)
            elif staleness(record) is not None:
                out["stale"].append(name)
            else:  # current; in an older scheme where today's added files cannot be vouched for
                out["current" if record["code"].get("scheme") == SCHEME else "kept in an older scheme"].append(name)
        finally:
            lock.close()
    return out
