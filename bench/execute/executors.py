"""How a suite's cells are executed: here one after another (`run_suite`'s default), or as tasks on
a Ray cluster: `python -m bench run --suite S --executor ray [--address ADDR]`.

On Ray, each cell is one Ray task that calls the same `run_cell` as the local executor, so resuming,
skipping stored cells, per-cell locks and atomic writes are the run store's, unchanged: two workers
never write one cell. Tasks ask for the resources their model needs (a GPU for models whose
`device` is auto or cuda when the cluster has GPUs; `cpus_per_cell` cores otherwise). The results
folder must be one path every worker reaches (a shared filesystem), and every node must have this
project installed at the same commit (each run.json records its worker's commit and machine).
The driver shows progress, hands each stored cell to `on_cell`, and reports a failed cell with its
error without stopping the others; so does the local executor (with the traceback), except under
torchrun, where one rank that went on would leave the others waiting.
"""
from __future__ import annotations

import errno
import inspect
import math
import os
import signal
import socket
import threading
import traceback
from contextlib import contextmanager
from pathlib import Path

from tqdm.auto import tqdm

from bench.errors import BenchError, optional
from bench.execute.distributed import world
from bench.execute.planned import duration
from bench.execute.runner import Cell, plan, run_cell, validate_plan
from bench.execute.scoring import CellError
from bench.execute.store import RunStore, check_results_folder
from bench.models import make_model, model_class
from bench.suites.load import Suite


def _ray():
    return optional("ray", "--executor ray", "ray")


CONNECT_TIMEOUT_S = 15  # Ray itself retries an unreachable head for ever, a warning every 30 s
# Storage refusing a write (disk full, quota, read-only, no permission): the same line for every cell, no traceback
STORAGE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def check_address(address: str | None) -> None:
    """`--address` must be HOST:PORT (or ray://HOST:PORT, or auto) whose port answers: Ray would
    wait for an unreachable head without end."""
    if address is None or address == "auto":
        return
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit() or any(c.isspace() for c in host):
        raise BenchError(f"--address {address!r}: expected HOST:PORT (or ray://HOST:PORT, or auto)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        raise BenchError(f"--address {address!r}: nothing answers there ({e.strerror or e}); "
                         f"is the Ray head running (ray start --head)?") from None


def check_cpus(cpus_per_cell: float, largest: float, where: str) -> None:
    """A task asking for more CPUs than any node has would wait at 0/1 for ever."""
    if not (math.isfinite(cpus_per_cell) and cpus_per_cell > 0):
        raise BenchError(f"--cpus-per-cell {cpus_per_cell}: must be a number of cores > 0")
    if cpus_per_cell > largest:
        raise BenchError(f"--cpus-per-cell {cpus_per_cell:g}: no node offers that many ({where} has {largest:g})")


def requested_device(cell) -> str:
    """The device a cell's model asks for, unresolved ("auto", "cuda:1", "cpu")."""
    params = cell.variant.params_for(cell.dataset.key)
    default = _device_default(model_class(cell.variant.model))
    if default is not None:
        return str(params.get("device", default))
    cfg = getattr(make_model(cell.variant.model, params), "cfg", None)  # CALRec: grouped config dataclasses
    return str(getattr(getattr(cfg, "training", None), "device", "cpu"))


def _device_default(cls) -> str | None:
    """The `device` default of a model class, where its constructor (or a parent's it passes **kwargs
    to) takes one."""
    from bench.suites.schema import constructors

    for init in constructors(cls):
        if (p := inspect.signature(init).parameters.get("device")) is not None:
            return p.default
    return None


def wants_gpu(cell) -> bool:
    """Whether the cell's model would take a GPU where there is one (`device: auto` or cuda)."""
    device = requested_device(cell)
    return device == "auto" or device.startswith("cuda")


def _run_one(cell, root: str, force: bool, stale: bool) -> tuple[str, str | None]:
    """The task body: (status, None), or (\"\", error) for a failure, so one bad cell stops nothing."""
    try:
        return run_cell(cell, RunStore(Path(root)), force, stale), None
    except Exception as e:  # noqa: BLE001 - reported per cell by the driver
        last = traceback.format_exc().strip().splitlines()[-3:]
        return "", f"{type(e).__name__}: {e} ({' | '.join(s.strip() for s in last[:-1])})"


def run_on_ray(cells: list, root: Path, force: bool = False, stale: bool = False, address: str | None = None,
               cpus_per_cell: float = 1, on_cell=None, init_kwargs: dict | None = None) -> list[tuple]:
    """Run `cells` as Ray tasks (connecting to `address`, or starting a local cluster); returns
    (cell, status) in completion order, status "failed: ..." for a cell that raised."""
    ray = _ray()
    store = RunStore(root)
    started = not ray.is_initialized()
    if started:
        if address is None:  # a local cluster: this machine's cores, checked before starting it
            check_cpus(cpus_per_cell, (init_kwargs or {}).get("num_cpus") or os.cpu_count() or 1, "this machine")
        check_address(address)
        ray.init(address=address, include_dashboard=False, log_to_driver=False, **(init_kwargs or {}))
    try:
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        check_cpus(cpus_per_cell, max((n.get("CPU", 0) for n in nodes), default=0), "the largest node")
        gpus = ray.cluster_resources().get("GPU", 0) > 0
        task = ray.remote(max_retries=0)(_run_one)
        pending = {}
        for cell in cells:
            opts = {"num_gpus": 1, "num_cpus": 1} if gpus and wants_gpu(cell) else {"num_cpus": cpus_per_cell}
            pending[task.options(**opts).remote(cell, str(Path(root).resolve()), force, stale)] = cell
        done = []
        bar = tqdm(total=len(pending), desc=f"suite {cells[0].suite.name} on Ray", unit="cell")
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            cell = pending.pop(ready[0])
            try:
                status, error = ray.get(ready[0])
            except ray.exceptions.RayError as e:  # the worker died (out of memory, node lost)
                status, error = "", f"{type(e).__name__}: {str(e).splitlines()[0]}"
            if error is not None:
                status = f"failed: {error}"
            tqdm.write(f"{cell.name}: {status}")
            bar.update(1)
            done.append((cell, status))
            if on_cell is not None and error is None and not status.startswith("skipped"):
                on_cell(cell, store.cell_dir(cell.suite.name, cell.dataset.key, cell.variant.key, cell.seed))
        bar.close()
        return done
    finally:
        if started:
            ray.shutdown()


class CellTimeout(Exception):
    """A cell computed longer than the suite's cell_timeout."""


@contextmanager
def time_limit(seconds: float | None):
    """Raise CellTimeout in this (main) thread after `seconds`; a no-op without a limit or off the
    main thread. Python code is interrupted between bytecodes, a torch kernel when it returns."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise CellTimeout()

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_suite(suite: Suite, root: Path, models=None, datasets=None, seeds=None, force=False,
              stale=False, on_cell=None, executor: str = "local", address: str | None = None,
              cpus_per_cell: float = 1, cell_timeout: float | None = None,
              estimates: dict[str, float] | None = None) -> list[tuple[Cell, str]]:
    """Compute (or find stored) every selected cell, here one after another or as tasks on a Ray
    cluster (bench/execute/executors.py); `on_cell(cell, folder)` is called after each stored one (e.g. to
    log it to a tracker). Returns (cell, status) pairs."""
    store = RunStore(root)
    cells = plan(suite, models, datasets, seeds)
    if not cells:
        raise BenchError(f"suite {suite.name}: the filters select no cell")
    validate_plan(cells)
    check_results_folder(root, write=True)
    if executor == "ray":
        return run_on_ray(cells, root, force, stale, address, cpus_per_cell, on_cell)
    if executor != "local":
        raise BenchError(f"unknown executor {executor!r} (local, ray)")
    done = []
    bar = tqdm(cells, desc=f"suite {suite.name}", unit="cell")
    left = sum((estimates or {}).values())  # what `bench plan` estimates for the cells to compute
    for cell in bar:
        # The bar's own rate counts cached cells as seconds each; the plan's estimate says what is left.
        bar.set_postfix_str(cell.name + (f", ~{duration(left)} left by bench plan" if estimates else ""))
        try:
            with time_limit(cell_timeout):
                status = run_cell(cell, store, force, stale)
        except CellTimeout:
            status = f"failed: ran past the cell time limit of {cell_timeout:g} s (a checkpoint, if any, resumes it)"
        except CellError as e:  # this cell's output cannot be scored; the others may be fine
            status = f"failed: model {cell.variant.model!r}: {e}"
        except BenchError:
            raise  # the user's input (a suite, a data file): one line, exit 2
        except SystemExit as e:  # a model that exits must not end the suite as if it had finished
            if world()[1] > 1:
                raise
            status = f"failed: model {cell.variant.model!r} called sys.exit({e.code!r})"
        except Exception as e:  # a bug or a resource limit hit by one cell: the others still run, as on Ray
            if world()[1] > 1:
                raise  # the other ranks wait in a collective this rank will not reach
            if not (isinstance(e, OSError) and e.errno in STORAGE_ERRORS):  # a full or read-only disk: its line says it all
                tqdm.write(traceback.format_exc())
            status = f"failed: {type(e).__name__}: {e}"
        tqdm.write(f"{cell.name}: {status}")
        left = max(0.0, left - (estimates or {}).get(cell.name, 0.0))
        done.append((cell, status))
        if on_cell is not None and not status.startswith("skipped"):
            on_cell(cell, store.cell_dir(suite.name, cell.dataset.key, cell.variant.key, cell.seed))
    return done
