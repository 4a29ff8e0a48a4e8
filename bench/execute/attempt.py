"""A cell's attempt, recorded beside it while it computes.

A process killed outright (the kernel's out-of-memory killer, SIGKILL, a lost machine) writes no cell
and no error: the next `bench run` or `bench plan` saw only "not run yet". The record it leaves
(`.seedN.attempt.json`, beside the cell's lock; not committed) says when it started, where, and the
peak resident memory it had reached when last read, so a cell killed for memory is named as such.
"""
from __future__ import annotations

import json
import os
import shlex
import socket
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from bench.execute.provenance import peak_memory
from bench.execute.store import atomic_write_text

EVERY_S = 30.0  # how often a running cell's peak is written down: a kill loses at most this much of it


def attempt_file(cell: Path) -> Path:
    return cell.parent / f".{cell.name}.attempt.json"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@contextmanager
def recorded_attempt(cell: Path, every: float = EVERY_S):
    """Keep the attempt's record while the block runs; an ending the process sees (a result, an error,
    Ctrl-C) removes it, so only a process killed outright leaves one."""
    path = attempt_file(cell)
    info = {"started": _now(), "host": socket.gethostname(), "pid": os.getpid(),
            "command": shlex.join(["python", "-m", "bench", *sys.argv[1:]])}
    stop = threading.Event()

    def note() -> None:
        info.update(peak_memory(), updated=_now())  # the cell's peak once the runner resets it before fit
        atomic_write_text(path, json.dumps(info, indent=1) + "\n")

    def keep() -> None:
        while not stop.wait(every):
            try:
                note()
            except OSError:  # a full disk must not end the cell it only describes
                pass

    note()
    thread = threading.Thread(target=keep, name="bench-attempt", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        path.unlink(missing_ok=True)


def read_attempt(cell: Path) -> dict | None:
    """The record an earlier attempt left, or None. Only meaningful while no process holds the cell's
    lock (a live attempt keeps its record too)."""
    try:
        got = json.loads(attempt_file(cell).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # cut short mid-write cannot happen (atomic), but a hand-edited file can
    return got if isinstance(got, dict) else {}


def describe(info: dict) -> str:
    """One clause: what the record says of the attempt that left it."""
    peak, total = info.get("host_peak_mb"), info.get("host_total_mb")
    known = isinstance(peak, (int, float)) and isinstance(total, (int, float))
    memory = (f", at a peak of {peak / 1024:.1f} GB resident of the machine's {total / 1024:.1f} GB when last read"
              f" ({info.get('updated', '?')})" if known else "")
    killed = ("likely killed for memory" if known and peak > 0.85 * total
              else "killed outright (`dmesg` names the out-of-memory killer if it was that)")
    return (f"an earlier attempt (started {info.get('started', '?')} on {info.get('host', '?')}, pid {info.get('pid', '?')}) "
            f"ended without a result or an error{memory}: {killed}")
