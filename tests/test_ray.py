"""--executor ray: the smoke suite through a real local Ray cluster (2 CPUs) gives the local
executor's files byte for byte; a failing cell is reported and stops no other; a rerun resumes."""
import pytest

from bench.cli import main

ray = pytest.importorskip("ray")

FILES = ("metrics.json", "per_user.csv.gz")


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_smoke_suite_on_a_local_ray_cluster(cluster, tmp_path, capsys):
    local, remote = tmp_path / "local", tmp_path / "ray"
    assert main(["run", "--suite", "smoke", "--results", str(local)]) == 0
    broken = remote / "runs/smoke/synthetic/random"
    broken.parent.mkdir(parents=True)
    broken.write_text("a file where the variant's folder should be")  # this cell cannot be written
    capsys.readouterr()
    assert main(["run", "--suite", "smoke", "--results", str(remote), "--executor", "ray"]) == 1
    out, err = capsys.readouterr()
    assert "synthetic/random/seed0: failed: " in out and "1 cell(s) failed: synthetic/random/seed0" in err
    for variant in ("pop", "itemknn", "bm25-text"):
        for name in FILES:
            a = (local / f"runs/smoke/synthetic/{variant}/seed0" / name).read_bytes()
            assert (remote / f"runs/smoke/synthetic/{variant}/seed0" / name).read_bytes() == a
    broken.unlink()
    assert main(["run", "--suite", "smoke", "--results", str(remote), "--executor", "ray"]) == 0
    out = capsys.readouterr().out
    assert out.count(": cached") == 3 and "synthetic/random/seed0: R@10=" in out  # resumed: only the failed cell ran
    for name in FILES:
        assert (remote / "runs/smoke/synthetic/random/seed0" / name).read_bytes() == \
            (local / "runs/smoke/synthetic/random/seed0" / name).read_bytes()
    assert (remote / "tables/smoke/synthetic-main.md").is_file()


def test_ray_missing_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)
    assert main(["run", "--suite", "smoke", "--results", str(tmp_path), "--executor", "ray"]) == 2
    assert "pip install -e '.[ray]'" in capsys.readouterr().err


def test_gpu_models_ask_ray_for_a_gpu():
    from bench.execute.executors import wants_gpu
    from bench.execute.runner import plan
    from bench.suites.load import load_suite

    cells = {c.variant.key: c for c in plan(load_suite("quick"), seeds=[0])}
    assert wants_gpu(cells["calrec"]) and wants_gpu(cells["sasrec"]) and wants_gpu(cells["recbole-stamp"])
    assert not wants_gpu(cells["pop"]) and not wants_gpu(cells["itemknn"])


def test_models_passing_their_settings_on_to_sasrec_ask_for_a_gpu_too():
    # UniSRec and SASRec + LLM vectors take SASRec's `device` through **kwargs; the plan had them on the CPU
    from bench.execute.executors import wants_gpu
    from bench.execute.runner import plan
    from bench.suites.load import load_suite

    cells = {c.variant.key: c for c in plan(load_suite("ablation"), seeds=[0])}
    assert wants_gpu(cells["unisrec"]) and wants_gpu(cells["llm-sasrec"]) and wants_gpu(cells["sasrec-h20"])
