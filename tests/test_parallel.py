"""Data-parallel CALRec (calrec/parallel.py): two gloo processes on the CPU take the same step as
one process on the same global batch, micro-batches with accumulation take the same step as one
pass, `bench run` under torchrun writes each cell once and leaves its process group."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "parallel_worker.py"


def launch(args: list[str], ranks: int = 1, timeout: int = 300) -> subprocess.CompletedProcess:
    pre = [sys.executable] if ranks == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                               "--nproc_per_node", str(ranks)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    p = subprocess.run([*pre, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    return p


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    out = tmp_path_factory.mktemp("parallel")
    # a: one pass of 8 rows; c: two passes of 4, negatives in groups of 4; d: one pass, groups of 4
    one = launch([str(WORKER), str(out), "a:0:0", "c:4:4", "d:0:4"])
    assert one.returncode == 0, one.stderr[-3000:]
    # b: 2 ranks x 4 rows, negatives over both ranks; e: 2 ranks x 2 rows, two passes (groups of 4)
    two = launch([str(WORKER), str(out), "b:0:0", "e:2:0"], ranks=2)
    assert two.returncode == 0, two.stderr[-3000:]
    return {f.stem: torch.load(f, weights_only=False) for f in out.glob("*.pt")}


def assert_same_step(x: dict, y: dict) -> None:
    """The same gradient (to float tolerance), then the same weights after AdamW steps: Adam divides
    each gradient by its running size, so rounding noise in near-zero gradients moves those weights
    by up to ~lr/100; a wrong scale or a missing rank's rows is caught by the gradients."""
    assert x["grads"].keys() == y["grads"].keys()
    for k, g in x["grads"].items():  # rounding: ~1e-6 of the tensor's largest entry
        torch.testing.assert_close(y["grads"][k], g, rtol=1e-4, atol=1e-5 * float(g.abs().max()), msg=k)
    assert x["parts"] == pytest.approx(y["parts"], rel=1e-5)
    assert x["state"].keys() == y["state"].keys()
    for k in x["state"]:
        torch.testing.assert_close(x["state"][k], y["state"][k], rtol=0, atol=3e-5, msg=k)
    assert len(x["curves"]) == len(y["curves"]) == 3
    for rx, ry in zip(x["curves"], y["curves"]):
        for k in ("loss_total", "loss_nig", "loss_tt", "loss_ut", "epochs", "lr"):
            assert rx[k] == pytest.approx(ry[k], rel=1e-4, abs=1e-5), k


def test_two_ranks_take_the_single_process_step(stages):
    assert stages["b.rank0"]["world"] == 2
    assert_same_step(stages["a.rank0"], stages["b.rank0"])
    assert_same_step(stages["b.rank0"], stages["b.rank1"])  # the ranks hold the same weights


def test_accumulated_micro_batches_take_the_one_pass_step(stages):
    assert_same_step(stages["c.rank0"], stages["d.rank0"])
    assert_same_step(stages["d.rank0"], stages["e.rank0"])  # ranks and accumulation together


def test_contrastive_groups_change_the_loss(stages):
    # groups of 4 give each row fewer negatives than the whole batch of 8: a different InfoNCE
    a, d = stages["a.rank0"]["curves"][0], stages["d.rank0"]["curves"][0]
    assert a["loss_nig"] == pytest.approx(d["loss_nig"], rel=1e-6)
    assert a["loss_ut"] > d["loss_ut"]


SUITE = """description: data-parallel CALRec on the tiny model
seeds: [0]
ks: [10]
history_masking: true
datasets:
  synthetic: {n_users: 40, n_items: 30, seed: 1}
models:
  pop: {model: pop}
  tiny-calrec:
    model: calrec
    params: {backbone: tiny, stage2_steps: 4, eval_every: 2, batch_size: 4, lr: 3.0e-3, select: nll, valid_users: 8,
             inference: likelihood, candidates: all, bf16: false, device: cpu}
"""


@pytest.mark.slow  # three launches of the harness: about a minute
def test_bench_run_under_torchrun_writes_each_cell_once(tmp_path):
    suite = tmp_path / "ddp.yaml"
    suite.write_text(SUITE)
    refused = launch(["-m", "bench", "run", "--suite", str(suite), "--results", str(tmp_path / "r")], ranks=2)
    assert refused.returncode != 0 and "runs only data-parallel models" in refused.stderr and "pop" in refused.stderr
    ran = launch(["-m", "bench", "run", "--suite", str(suite), "--results", str(tmp_path / "r"), "--models", "tiny-calrec"],
                 ranks=2)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "ran data-parallel on 2 processes" in ran.stdout
    cell = tmp_path / "r" / "runs" / "ddp" / "synthetic" / "tiny-calrec" / "seed0"
    record = json.loads((cell / "run.json").read_text())
    assert record["evaluated_users"] == 40 and (cell / "curves.csv").is_file()
    single = launch(["-m", "bench", "run", "--suite", str(suite), "--results", str(tmp_path / "s"), "--models", "tiny-calrec"])
    assert single.returncode == 0, single.stderr[-3000:]
    m2 = json.loads((cell / "metrics.json").read_text())
    m1 = json.loads((tmp_path / "s" / "runs" / "ddp" / "synthetic" / "tiny-calrec" / "seed0" / "metrics.json").read_text())
    # likelihood over every item and NLL selection draw nothing at random: the same ranking
    assert m2 == pytest.approx(m1, abs=1e-6)
    again = launch(["-m", "bench", "run", "--suite", str(suite), "--results", str(tmp_path / "r"), "--models", "tiny-calrec"],
                   ranks=2)
    assert again.returncode == 0 and "cached" in again.stdout + again.stderr


def test_bench_run_leaves_its_process_group(tmp_path, monkeypatch):
    """A gloo group left to interpreter exit can abort a rank (SIGABRT) while its threads hold Python
    objects; `bench run` destroys it once every rank is done."""
    import torch.distributed as dist

    from bench.cli import main

    monkeypatch.delenv("WORLD_SIZE", raising=False)  # the group below stands in for a launcher's
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        suite = tmp_path / "one.yaml"
        suite.write_text(SUITE)
        assert main(["run", "--suite", str(suite), "--results", str(tmp_path / "r"), "--models", "pop"]) == 0
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
