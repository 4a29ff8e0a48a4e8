"""Each cell's fit and scoring run with a scratch folder of their own as the working directory, so a
model that writes relative paths (logs, checkpoints, `saved/`) never writes into the user's folder.

Paths the user wrote relative to where they launched the command (an `atomic:` dataset folder, a
backbone folder) are read through `launch_path`, which resolves them against that folder.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from tqdm import tqdm

_launch: list[Path] = []  # the working directories scratch_cwd left, innermost last


def launch_path(path: str | Path) -> Path:
    """`path` as the user meant it: relative to the folder the command was launched from."""
    p = Path(path).expanduser()
    return p if p.is_absolute() or not _launch else _launch[0] / p


@contextmanager
def scratch_cwd(name: str):
    """Work inside a new temporary folder; on leaving, say what the model left there and remove it."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-cell-"))
    _launch.append(Path.cwd())
    os.chdir(tmp)
    try:
        yield tmp
    finally:
        os.chdir(_launch.pop())
        left = sorted(p.name for p in tmp.iterdir())
        if left:
            tqdm.write(f"{name}: the model wrote {len(left)} entr{'y' if len(left) == 1 else 'ies'} into its working "
                       f"folder ({', '.join(left[:3])}{', ...' if len(left) > 3 else ''}); removed (the cell's workdir keeps files)")
        shutil.rmtree(tmp, ignore_errors=True)
