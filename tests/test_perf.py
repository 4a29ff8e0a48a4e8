import json
import os

from bench.perf.sasrec import replay


def test_replay_stops_where_a_smaller_patience_would_have():
    values = [0.1, None, 0.2, 0.19, 0.18, 0.25, 0.3]  # None: an epoch without validation
    curve = [{"epoch": e, "valid_NDCG@10": v} for e, v in enumerate(values, 1)]
    row = {"epochs": 7, "seconds": 70.0, "curve": curve, "valid_NDCG@10": 0.3}
    short = replay(row, 2)
    assert (short["epochs"], short["valid_NDCG@10"], short["seconds"]) == (5, 0.2, 50.0)
    assert replay(row, 3) == row


def test_dropout_benchmark_runs_and_reports_both_rates(monkeypatch, capsys):
    import sys

    from bench.perf import dropout

    monkeypatch.setattr(sys, "argv", ["dropout", "--repeats", "2", "--threads", "1"])
    dropout.main()
    out = capsys.readouterr().out
    assert out.count("faster; dropped") == 2


def test_curve_configurations_read_values_as_yaml():
    from bench.perf.calrec_curve import parse_set

    assert parse_set("lr=3.0e-4,user_pooling=items,head=true,train_layers=4") == {
        "lr": 3.0e-4, "user_pooling": "items", "head": True, "train_layers": 4}
    assert parse_set("") == {}


def test_the_gpu_sitting_script_packs_each_finished_cell(tmp_path):
    """bench/perf/gpu_sitting.sh on a tiny suite, here on the CPU (its speed step cut off at once):
    every cell's folder comes back as its own archive, and the run's log beside them."""
    import subprocess
    import tarfile

    from bench.execute.fingerprint import ROOT

    suite = tmp_path / "tiny.yaml"
    suite.write_text("seeds: [0, 1]\nks: [10]\ndatasets:\n  syn: {spec: synthetic, n_users: 30, n_items: 20, seed: 1}\n"
                     "models:\n  pop: {model: pop}\n  random: {model: random}\n")
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "OUT": str(out), "RESULTS": str(tmp_path / "r"), "BUDGET_S": "120", "MFU_S": "1"}
    done = subprocess.run(["bash", str(ROOT / "bench/perf/gpu_sitting.sh"), str(suite)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    archives = sorted(p.name for p in out.glob("*.tgz"))
    assert archives == [f"tiny_syn_{m}_seed{s}.tgz" for m in ("pop", "random") for s in (0, 1)], archives
    with tarfile.open(out / "tiny_syn_random_seed1.tgz") as t:
        assert "tiny/syn/random/seed1/run.json" in t.getnames()
    assert "packed:" in (out / "run.log").read_text()


def test_the_memory_benchmark_measures_both_modes_step_by_step(tmp_path):
    """bench.perf.calrec_memory on a tiny CALRec row: each mode in its own process, every step's
    resident memory and peak recorded, the record appended with its command."""
    from bench.perf import calrec_memory

    suite = tmp_path / "tiny.yaml"
    suite.write_text("seeds: [0]\nks: [10]\ndatasets:\n  syn: {spec: synthetic, n_users: 30, n_items: 20, seed: 1}\n"
                     "models:\n  tiny: {model: calrec, params: {backbone: tiny, template: compact, nig_targets: all, "
                     "vocab: trie, examples: epochs, batch_size: 8, bf16: false, device: cpu, threads: 1, "
                     "inference: likelihood, user_pooling: next, lr: 3.0e-3}}\n")
    out = tmp_path / "memory.jsonl"
    args = ["--suite", str(suite), "--row", "tiny", "--steps", "3", "--out", str(out)]
    calrec_memory.main(args)
    calrec_memory.main(args)  # appended, not replaced
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 2 and records[0]["command"].endswith(" ".join(args))
    runs = records[0]["runs"]
    assert set(runs) == {"kept", "trimmed"} and records[0]["params"]["stage2_steps"] == 3
    for run in runs.values():
        assert len(run["steps"]) == 3 and all(0 < after <= peak for after, peak in run["steps"])


def test_probe_passes_take_the_tilings_epoch_sizes_in_turn():
    from bench.perf.calrec_probes import passes

    assert passes(0, [5]) == 0
    assert passes(10, [5]) == 2  # one tiling: windows over the epoch's size
    assert passes(100 + 60, [100, 120, 110]) == 1.5  # the second epoch is the second tiling's
    assert passes(100 + 120 + 110 + 50, [100, 120, 110]) == 3.5  # then the first again
