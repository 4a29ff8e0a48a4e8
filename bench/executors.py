"""Cells as tasks on a Ray cluster: `python -m bench run --suite S --executor ray [--address ADDR]`.

Each cell is one Ray task that calls the same `run_cell` as the local executor, so resuming,
skipping stored cells, per-cell locks and atomic writes are the run store's, unchanged: two workers
never write one cell. Tasks ask for the resources their model needs (a GPU for models whose
`device` is auto or cuda when the cluster has GPUs; `cpus_per_cell` cores otherwise). The results
folder must be one path every worker reaches (a shared filesystem), and every node must have this
project installed at the same commit (each run.json records its worker's commit and machine).
The driver shows progress, hands each stored cell to `on_cell`, and reports a failed cell with its
error without stopping the others.
"""
from __future__ import annotations

import inspect
import traceback
from pathlib import Path

from tqdm.auto import tqdm

from bench.errors import optional
from bench.models import make_model, model_class


def _ray():
    return optional("ray", "--executor ray", "ray")


def requested_device(cell) -> str:
    """The device a cell's model asks for, unresolved ("auto", "cuda:1", "cpu")."""
    params = cell.variant.params_for(cell.dataset.key)
    default = inspect.signature(model_class(cell.variant.model)).parameters.get("device")
    if default is not None:
        return str(params.get("device", default.default))
    cfg = getattr(make_model(cell.variant.model, params), "cfg", None)  # CALRec: grouped config dataclasses
    return str(getattr(getattr(cfg, "training", None), "device", "cpu"))


def wants_gpu(cell) -> bool:
    """Whether the cell's model would take a GPU where there is one (`device: auto` or cuda)."""
    device = requested_device(cell)
    return device == "auto" or device.startswith("cuda")


def _run_one(cell, root: str, force: bool, stale: bool) -> tuple[str, str | None]:
    """The task body: (status, None), or (\"\", error) for a failure, so one bad cell stops nothing."""
    from bench.runner import run_cell
    from bench.store import RunStore

    try:
        return run_cell(cell, RunStore(Path(root)), force, stale), None
    except Exception as e:  # noqa: BLE001 - reported per cell by the driver
        last = traceback.format_exc().strip().splitlines()[-3:]
        return "", f"{type(e).__name__}: {e} ({' | '.join(s.strip() for s in last[:-1])})"


def run_on_ray(cells: list, root: Path, force: bool = False, stale: bool = False, address: str | None = None,
               cpus_per_cell: float = 1, on_cell=None, init_kwargs: dict | None = None) -> list[tuple]:
    """Run `cells` as Ray tasks (connecting to `address`, or starting a local cluster); returns
    (cell, status) in completion order, status "failed: ..." for a cell that raised."""
    from bench.store import RunStore

    ray = _ray()
    store = RunStore(root)
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, **(init_kwargs or {}))
    try:
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
