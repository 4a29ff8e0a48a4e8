"""The verified re-fingerprint: a change that moves no number is vouched for and re-fingerprinted;
one that moves a number leaves its cells stale."""
import json
import os
import subprocess
import sys

import pytest

from bench.execute.fingerprint import ROOT
from bench.execute.verify import tiny_params, why_unverifiable

SUITE = """
seeds: [0]
ks: [10]
valid_sample: {size: 8, seed: 1}
datasets:
  syn: {spec: synthetic, n_users: 40, n_items: 30, seed: 1}
models:
  pop: {model: pop}
  llm: {model: calrec, params: {backbone: tiny, stage2_steps: 3, eval_every: 3, template: compact, vocab: trie,
        nig_targets: all, examples: epochs, inference: likelihood, user_pooling: next, valid_users: 8, bf16: false,
        device: cpu, threads: 1}}
"""


def test_tiny_params_keep_every_switch_and_shrink_the_budget():
    row = {"stage1": {"datasets": [{"spec": "sample:ml-1m", "users": 1000, "seed": 0}, "ml-100k"], "steps": 800},
           "stage2_steps": 1200, "train_layers": 4, "frozen_cache": True, "vocab": "trie", "lambda_tt": 0.0,
           "item_fields": ["Title"], "valid_users": 943, "inference": "qrr", "n_samples": 10}
    tiny = tiny_params("calrec", row)
    assert tiny["backbone"] == "tiny" and tiny["stage2_steps"] == 2 and tiny["train_layers"] == 1
    assert tiny["stage1"]["steps"] == 2 and len(tiny["stage1"]["datasets"]) == 2  # the mixture's path still runs
    assert {k: tiny[k] for k in ("frozen_cache", "vocab", "lambda_tt", "inference")} == \
        {"frozen_cache": True, "vocab": "trie", "lambda_tt": 0.0, "inference": "qrr"}
    assert tiny_params("sasrec", {"epochs": 300, "max_len": 50}) == {"epochs": 2, "max_len": 50}


def test_a_cell_whose_commit_does_not_say_what_ran_cannot_be_vouched_for():
    rec = {"config": {"model": {"name": "pop"}, "dataset": {"spec": "synthetic"}}, "code": {}, "commit": "abc-dirty"}
    assert "does not say what ran" in why_unverifiable(rec)  # no per-file hashes to rebuild its sources from
    assert "does not say what ran" in why_unverifiable({**rec, "commit": "unknown"})


def _bench(clone, *args):
    env = {**os.environ, "PYTHONPATH": str(clone)}
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=clone, env=env, capture_output=True, text=True)


@pytest.mark.slow
def test_cells_of_one_code_are_checked_at_their_newest_clean_commit():
    """Cells sharing a fingerprint ran the same model code; the check runs at the newest clean commit
    among them, whose harness knows every switch any of their jobs sets."""
    from bench.execute.verify import pick_commit

    time = {"old": 1, "new": 2}.get
    assert pick_commit("old", "new", time) == "new" and pick_commit("new", "old", time) == "new"
    assert pick_commit("new-dirty", "old", time) == "old" and pick_commit("old", "new-dirty", time) == "old"
    assert pick_commit("old-dirty", "new-dirty", lambda c: time(c.removesuffix("-dirty"))) == "new-dirty"


def test_verify_rewrites_a_refactor_and_refuses_a_change_that_moves_numbers(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--no-checkout", str(ROOT), str(clone)], check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run(["git", "checkout", "-q", head], cwd=clone, check=True)
    suite, res = tmp_path / "s.yaml", tmp_path / "r"
    suite.write_text(SUITE)
    done = _bench(clone, "run", "--suite", str(suite), "--results", str(res))
    assert done.returncode == 0, done.stderr[-2000:]
    cell = res / "runs/s/syn/llm/seed0/run.json"
    before = json.loads(cell.read_text())

    # A refactor: code changes (an unused name), numbers do not. The cell goes stale, then is verified.
    towers = clone / "calrec/towers.py"
    towers.write_text(towers.read_text() + "\n\nUNUSED_AFTER_REFACTOR = 1\n")
    assert "| stale" in _bench(clone, "plan", "--suite", str(suite), "--results", str(res)).stdout
    out = _bench(clone, "refingerprint", "--verify", "--results", str(res))
    assert "verified: 1 cell(s) rewritten" in out.stdout, out.stdout + out.stderr[-2000:]
    after = json.loads(cell.read_text())
    assert after["code"]["verified_from"]["fingerprint"] == before["code"]["fingerprint"]
    assert {k: v for k, v in after.items() if k != "code"} == {k: v for k, v in before.items() if k != "code"}
    assert "| stale" not in _bench(clone, "plan", "--suite", str(suite), "--results", str(res)).stdout

    # A change that moves numbers (the contrastive temperature's default): the cell stays stale.
    config = clone / "calrec/config.py"
    config.write_text(config.read_text().replace("tau: float = 0.05", "tau: float = 0.07"))
    out = _bench(clone, "refingerprint", "--verify", "--results", str(res))
    assert "verified: 0 cell(s) rewritten to today's code, 1 still stale" in out.stdout, out.stdout + out.stderr[-2000:]
    assert "s/syn/llm/seed0: today's code computes something else" in out.stdout
    assert json.loads(cell.read_text()) == after  # left as it was
    assert "| stale" in _bench(clone, "plan", "--suite", str(suite), "--results", str(res)).stdout


@pytest.mark.slow
def test_a_cell_run_from_uncommitted_edits_is_verified_from_its_recorded_sources(tmp_path):
    """A "-dirty" commit does not say what ran, but the per-file hashes do: the check rebuilds those
    sources from git history; where one of them never reached history, the cell stays stale."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--no-checkout", str(ROOT), str(clone)], check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run(["git", "checkout", "-q", head], cwd=clone, check=True)
    git = ["git", "-c", "user.email=t@example.org", "-c", "user.name=t"]
    suite, res = tmp_path / "s.yaml", tmp_path / "r"
    suite.write_text(SUITE)
    towers = clone / "calrec/towers.py"
    towers.write_text(towers.read_text() + "\n\nEDITED_BEFORE_THE_RUN = 1\n")  # uncommitted when the cell runs
    done = _bench(clone, "run", "--suite", str(suite), "--results", str(res), "--models", "llm")
    assert done.returncode == 0, done.stderr[-2000:]
    cell = res / "runs/s/syn/llm/seed0/run.json"
    assert json.loads(cell.read_text())["commit"].endswith("-dirty")
    text = clone / "calrec/text.py"
    text.write_text(text.read_text() + "\n\nA_LATER_REFACTOR = 1\n")
    towers.write_text(towers.read_text().replace("EDITED_BEFORE_THE_RUN", "RENAMED_SINCE"))
    out = _bench(clone, "refingerprint", "--verify", "--results", str(res))
    assert "not all found in git history" in out.stdout, out.stdout + out.stderr[-2000:]
    # once the edit the cell ran on is in history, its sources can be rebuilt and the check runs
    towers.write_text(towers.read_text().replace("RENAMED_SINCE", "EDITED_BEFORE_THE_RUN"))
    subprocess.run([*git, "commit", "-q", "-am", "the edit"], cwd=clone, check=True)
    towers.write_text(towers.read_text().replace("EDITED_BEFORE_THE_RUN", "RENAMED_SINCE"))
    out = _bench(clone, "refingerprint", "--verify", "--results", str(res))
    assert "verified: 1 cell(s) rewritten" in out.stdout, out.stdout + out.stderr[-2000:]
    assert "rebuilt from their recorded hashes" in json.loads(cell.read_text())["code"]["verified_from"]["check"]
