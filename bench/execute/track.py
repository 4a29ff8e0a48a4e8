"""`--track mlflow[:URI]`: stored cells and tuning trials as MLflow runs.

A cell becomes one run in the experiment `<suite>`: params = its resolved config (flattened),
metrics = its test metrics plus each training-curve column per step, tags = commit, device, config
hash, code fingerprint and the cell's name; artifacts = run.json, metrics.json, per_user.csv.gz and
curves.csv. Runs are logged from the stored files after a cell is computed or found stored, and a
cell whose (name, config hash, start time) is already logged is not logged twice, so `--track` on a
finished suite fills a tracker with what the store holds.

The default store is a local SQLite database under results/mlflow/ (ignored by git; MLflow 3 keeps
its plain-file store only behind an opt-out). MLflow's metric names may not contain '@', so
NDCG@10 is logged as NDCG_at_10.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import urlparse

from bench.errors import BenchError, optional

CELL_TAG = "bench.cell"
KEY_TAG = "bench.key"  # what makes a logged run the same one: logged once


def _mlflow():
    return optional("mlflow", "--track mlflow", "track")


def metric_key(name: str) -> str:
    return name.replace("@", "_at_")


def flatten(obj, prefix: str = "") -> dict[str, str]:
    """Nested config -> {'model.params.lr': '0.002', ...} (MLflow params are strings)."""
    if isinstance(obj, dict) and obj:
        out = {}
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: json.dumps(obj) if isinstance(obj, (list, dict)) else str(obj)}


# A tracking server that does not answer must not hold a run for ever (MLflow's defaults: 7 retries
# with exponential backoff, 120 s each): a few seconds' retries, 20 s a request. A user's own
# setting of these variables wins.
HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
               "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "file", "databricks")


def tracker(spec: str, results: Path, experiment: str | None = None):
    """`mlflow` or `mlflow:URI` -> a tracker, its store probed (reached, and written where
    `experiment` is given) before anything is computed; any problem is a one-line error."""
    kind, _, uri = spec.partition(":")
    if kind != "mlflow":
        raise BenchError(f"--track {spec!r}: unknown tracker (supported: mlflow, mlflow:URI)")
    if uri and urlparse(uri).scheme.split("+")[0] not in SCHEMES:
        raise BenchError(f"--track {spec!r}: {uri!r} is not a tracking URI (e.g. http://host:5000, sqlite:///path/mlflow.db)")
    t = MlflowTracker(uri or None, results)
    t.probe(spec, experiment)
    return t


class MlflowTracker:
    def __init__(self, uri: str | None, results: Path):
        _mlflow()
        for k, v in HTTP_LIMITS.items():
            os.environ.setdefault(k, v)
        from mlflow.tracking import MlflowClient

        self.local = uri is None
        folder = (Path(results) / "mlflow").resolve()
        if self.local:
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise BenchError(f"--track: cannot create the tracking store's folder {folder} ({e.strerror})") from None
            uri = f"sqlite:///{folder / 'mlflow.db'}"
        self.uri = uri
        self.artifacts = artifact_root(uri, folder)
        self.client = MlflowClient(tracking_uri=uri)

    def probe(self, spec: str, experiment: str | None) -> None:
        """Reach the store now, not after the first cell is computed; with `experiment`, also
        create it (or find it), so a store that cannot be written says so now."""
        try:
            self.client.search_experiments(max_results=1)
            if experiment is not None:
                self.experiment(experiment)
        except Exception as e:  # noqa: BLE001 -- MLflow raises many kinds (connection, SQL, permission)
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise BenchError(f"--track {spec!r}: the tracking store {self.uri} cannot be used: {first[:300]}") from None

    def experiment(self, name: str) -> str:
        """The experiment's id, created where missing (with its artifacts under `self.artifacts`)."""
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        return self.client.create_experiment(name, artifact_location=self.artifacts and f"{self.artifacts}/{name}")

    def _logged(self, experiment: str, key: str) -> bool:
        return bool(self.client.search_runs([experiment], filter_string=f"tags.`{KEY_TAG}` = '{key}'", max_results=1))

    def _log(self, experiment: str, run_name: str, tags: dict, params: dict, metrics: dict[str, float],
             curves: list[dict], files: list[Path]) -> str:
        from mlflow.entities import Metric, Param, RunTag

        run = self.client.create_run(experiment, run_name=run_name, tags=tags)
        rid, now = run.info.run_id, run.info.start_time
        points = [Metric(metric_key(k), float(v), now, 0) for k, v in metrics.items()]
        for i, row in enumerate(curves):
            step = int(row.get("epoch", row.get("step", i)))
            points += [Metric(metric_key(f"curve.{k}"), float(v), now, step) for k, v in row.items()
                       if k not in ("epoch", "step") and isinstance(v, (int, float)) and not isinstance(v, bool)]
        items = [Param(k[:250], v[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):  # MLflow's limits per log_batch call
            self.client.log_batch(rid, params=items[start : start + 100])
        for start in range(0, len(points), 1000):
            self.client.log_batch(rid, metrics=points[start : start + 1000])
        self.client.log_batch(rid, tags=[RunTag(k, str(v)) for k, v in tags.items()])
        for f in files:
            if f.is_file():
                self.client.log_artifact(rid, str(f))
        self.client.set_terminated(rid)
        return rid

    def log_cell(self, cell, folder: Path) -> str | None:
        """Log one stored cell (skipped if this exact run is already logged). Returns the run id."""
        import pandas as pd

        rec = json.loads((folder / "run.json").read_text())
        info = rec.get("model_info") or {}
        host = rec.get("machine") or {}
        tags = {CELL_TAG: cell.name, "config_hash": rec["config_hash"], "started": rec.get("started", ""),
                "commit": rec.get("commit", ""), "code_fingerprint": (rec.get("code") or {}).get("fingerprint", ""),
                "device": info.get("device") or host.get("accelerator") or f"cpu: {host.get('cpu_model') or host.get('processor')}",
                "suite": cell.suite.name, "dataset": cell.dataset.key, "variant": cell.variant.key, "seed": cell.seed}
        if "tuning" in rec:
            tags["tuned_from"] = f"{rec['tuning']['study']} trial {rec['tuning']['trial']}"
        tags[KEY_TAG] = f"{cell.name}|{rec['config_hash']}|{rec.get('started', '')}"
        experiment = self.experiment(cell.suite.name)
        if self._logged(experiment, tags[KEY_TAG]):
            return None
        metrics = json.loads((folder / "metrics.json").read_text())
        metrics.update({"fit_seconds": rec["fit_seconds"], "predict_seconds": rec["predict_seconds"]})
        metrics.update({k: v for k, v in (rec.get("memory") or {}).items() if k.endswith("_peak_mb") and v is not None})
        curves = pd.read_csv(folder / "curves.csv").to_dict("records") if (folder / "curves.csv").is_file() else []
        files = [folder / n for n in ("run.json", "metrics.json", "per_user.csv.gz", "curves.csv")]
        return self._log(experiment, cell.name, tags, flatten(rec["config"]), metrics, curves, files)

    def trial_callback(self, search):
        """An Optuna callback: each finished trial as a run in the experiment `tune/<suite>/<study>`
        (sampled params, validation metrics, the pruning curve as `curve.valid`)."""
        name = f"tune/{search.suite.name}/{search.study_name}"

        def log_trial(study, trial) -> None:
            experiment = self.experiment(name)
            started = trial.datetime_start.isoformat() if trial.datetime_start else ""
            tags = {CELL_TAG: f"{search.study_name}/trial{trial.number}", "study": study.study_name,
                    "state": trial.state.name, KEY_TAG: f"{search.study_name}/trial{trial.number}|{started}"}
            if self._logged(experiment, tags[KEY_TAG]):
                return
            metrics = {k: v for k, v in trial.user_attrs.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            if trial.value is not None:
                metrics["objective"] = trial.value
            curve = [{"epoch": step, "valid": v} for step, v in sorted(trial.intermediate_values.items())]
            params = {k: str(v) for k, v in trial.params.items()}
            self._log(experiment, f"trial {trial.number}", tags, params, metrics, curve, [])

        return log_trial


def artifact_root(uri: str, results_mlflow: Path) -> str | None:
    """Where new experiments keep their artifacts: a database store has no artifact root of its own
    (MLflow would write to ./mlruns in the working directory), so beside a SQLite file, else under
    the results folder's mlflow/. A server or a file store has its own (None: theirs)."""
    scheme = urlparse(uri).scheme.split("+")[0]
    if scheme == "sqlite":
        from sqlalchemy.engine import make_url

        db = make_url(uri).database
        return (Path(db).parent / "artifacts").resolve().as_uri() if db and db != ":memory:" else (results_mlflow / "artifacts").as_uri()
    if scheme in ("postgresql", "mysql", "mssql"):
        return (results_mlflow / "artifacts").as_uri()
    return None
