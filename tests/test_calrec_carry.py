"""A verified re-fingerprint carries CALRec's cached stage weights to today's key, so a row that
shares them reads them instead of training again; nothing a verified cell did not train or read moves."""
import io
import json
import subprocess
from pathlib import Path

import torch

from bench.cli import main
from bench.execute.verify_carry import verified_chain
from calrec.cache import stage_path, validation_path, write_cache
from calrec.carry import VerifiedCell, carry_weights

SUITE = """
seeds: [0]
ks: [10]
valid_sample: {size: 8, seed: 1}
datasets:
  syn: {spec: synthetic, n_users: 30, n_items: 20, seed: 1}
models:
  both: {model: calrec, params: {backbone: tiny, stage1: {datasets: [synthetic], steps: 3}, stage2_steps: 3, eval_every: 1,
                                 n_samples: 2, valid_users: 8}}
  both-dense: {model: calrec, params: {backbone: tiny, stage1: {datasets: [synthetic], steps: 3}, stage2_steps: 3,
                                       eval_every: 1, n_samples: 2, valid_users: 8, inference: dense}}
"""
OLD = "0123456789abcdef"


def _entries(shared: Path) -> dict[Path, dict]:
    return {p: torch.load(p, weights_only=False) for p in sorted(shared.glob("calrec-stage*/*.pt"))}


def _as_if_trained_under(shared: Path, code: str) -> None:
    """Move every stage entry and the final weights' validation numbers to the key of another code
    fingerprint: what the cache holds after a refactor that `refingerprint --verify` then vouches for."""
    for path, saved in _entries(shared).items():
        stage, new_key = path.parent.name.removeprefix("calrec-"), {**saved["key"], "code": code}
        buf = io.BytesIO()
        torch.save({**saved, "key": new_key}, buf)
        write_cache(stage_path(shared, stage, new_key), buf.getvalue())
        if stage == "stage2":
            valid = saved["key"]["stage2"]["valid"]
            validation_path(shared, saved["key"], valid).rename(validation_path(shared, new_key, valid))
            Path(f"{validation_path(shared, saved['key'], valid)}.sha256").rename(f"{validation_path(shared, new_key, valid)}.sha256")
        path.unlink()
        Path(f"{path}.sha256").unlink()


def test_verified_cells_carry_their_weights_and_the_sharing_row_reads_them(tmp_path, capsys):
    suite, res = tmp_path / "s.yaml", tmp_path / "r"
    suite.write_text(SUITE)
    assert main(["run", "--suite", str(suite), "--results", str(res), "--models", "both"]) == 0
    shared = res / "cache" / "shared"
    cell = res / "runs/s/syn/both/seed0/run.json"
    rec = json.loads(cell.read_text())
    today = rec["code"]["fingerprint"]
    assert {s["key"]["code"] for s in _entries(shared).values()} == {today}
    _as_if_trained_under(shared, OLD)
    # unverified: nothing moves
    assert main(["refingerprint", "--verify", "--results", str(res)]) == 0
    assert "carried to today's code: 0 entries" in capsys.readouterr().out
    rec["code"] = {**rec["code"], "verified_from": {"fingerprint": OLD, "scheme": 5, "commit": rec["commit"]}}
    cell.write_text(json.dumps(rec))
    assert main(["refingerprint", "--verify", "--results", str(res)]) == 0
    assert "carried to today's code: 3 entries" in capsys.readouterr().out  # stage I, stage II, validation
    assert main(["refingerprint", "--verify", "--results", str(res)]) == 0
    assert "carried to today's code: 0 entries" in capsys.readouterr().out  # nothing overwritten

    assert main(["run", "--suite", str(suite), "--results", str(res), "--models", "both-dense"]) == 0
    dense = json.loads((res / "runs/s/syn/both-dense/seed0/run.json").read_text())["model_info"]["timings"]
    assert "cached" in dense["stage1"] and "cached" in dense["stage2"]
    assert {k: v for k, v in dense["stage2"].items() if k != "cached"} == rec["model_info"]["timings"]["stage2"]


def test_only_an_entry_the_verified_cell_trained_moves(tmp_path):
    shared = tmp_path
    timing = {"steps": 3, "tokens": 120, "train_seconds": 1.5, "best_valid_nll": 2.0, "best_step": 2}
    key = {"seed": 0, "code": OLD, "lr": 1e-3, "stage2": {"steps": 3, "valid": "v"}}
    path = stage_path(shared, "stage2", key)
    buf = io.BytesIO()
    torch.save({"state": {}, "timing": timing, "key": key, "curves": []}, buf)
    write_cache(path, buf.getvalue())

    def cell(**kw):
        args = {"seed": 0, "fingerprint": "today", "verified_from": (OLD,), "timings": {"stage2": timing},
                "validation": None, **kw}
        return VerifiedCell(**args)

    assert carry_weights(shared, [cell(timings={"stage2": {**timing, "train_seconds": 1.6}})]) == []  # another run
    assert carry_weights(shared, [cell(seed=1)]) == []
    assert carry_weights(shared, [cell(verified_from=("fedcba9876543210",))]) == []
    assert carry_weights(shared, [cell(timings={"stage2": {**timing, "cached": "/elsewhere/x.pt"}})]) == [
        stage_path(shared, "stage2", {**key, "code": "today"})]


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_the_chain_of_fingerprints_follows_the_same_run_through_git_history(tmp_path):
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "config", "user.email", "t@t")
    _git(tmp_path, "config", "user.name", "t")
    run = tmp_path / "run.json"

    def commit(fp, started, verified_from=None):
        code = {"fingerprint": fp, **({"verified_from": {"fingerprint": verified_from}} if verified_from else {})}
        run.write_text(json.dumps({"started": started, "code": code}))
        _git(tmp_path, "add", "run.json")
        _git(tmp_path, "commit", "-qm", fp)
        return json.loads(run.read_text())

    commit("a", "t0")  # an earlier run of the cell, replaced by a recompute
    commit("b", "t1")
    commit("c", "t1", verified_from="b")
    rec = commit("d", "t1", verified_from="c")
    assert verified_chain(run, rec) == ("c", "b")
    rec = {"started": "t1", "code": {"fingerprint": "e", "verified_from": {"fingerprint": "d"}}}  # not committed yet
    assert verified_chain(run, rec) == ("d", "c", "b")
    assert verified_chain(run, {"started": "t1", "code": {"fingerprint": "d"}}) == ()
