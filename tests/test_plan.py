"""`bench plan`: states, devices and estimates from stored runs, on a small suite."""
from bench.cli import main
from bench.execute.estimates import estimate, training_key
from bench.execute.plan import plan_suite
from bench.execute.runner import plan
from bench.suites.load import load_suite

SUITE = """
seeds: [0, 1]
ks: [1, 10]
user_sample: {size: 30, seed: 0}
datasets:
  syn: {spec: synthetic, n_users: 60, n_items: 40, seed: 1}
models:
  pop: {model: pop, seeds: [0]}
  knn: {model: itemknn, params: {neighbours: 10}}
  sas: {model: sasrec, params: {epochs: 4, max_len: 10, hidden: 16, eval_every: 1, patience: 100}}
  sas-long: {model: sasrec, params: {epochs: 40, max_len: 10, hidden: 16, eval_every: 1, patience: 100}}
  cal: {model: calrec, params: {backbone: tiny, stage2_steps: 8, n_samples: 2}}
  cal-dense: {model: calrec, params: {backbone: tiny, stage2_steps: 8, n_samples: 2, inference: dense}}
  cal-more: {model: calrec, params: {backbone: tiny, stage2_steps: 16, n_samples: 2}}
"""


def _suite(tmp_path):
    path = tmp_path / "planned.yaml"
    path.write_text(SUITE)
    return load_suite(str(path))


def test_plan_before_and_after_runs(tmp_path, capsys):
    suite, res = _suite(tmp_path), tmp_path / "r"
    before = plan_suite(suite, res)
    assert all(p.state == "to run: not run yet" and p.train_s is None for p in before)
    assert main(["run", "--suite", str(suite.path), "--results", str(res), "--models", "pop,knn,sas", "--seeds", "0"]) == 0
    after = {p.cell.name: p for p in plan_suite(suite, res)}
    assert after["syn/pop/seed0"].state == "done" and after["syn/knn/seed0"].state == "done"
    assert after["syn/knn/seed1"].state == "to run: not run yet" and after["syn/knn/seed1"].train_s is not None
    # sas ran 4 epochs: 40 planned epochs are estimated at 10x its training time
    sas, long = after["syn/sas/seed1"], after["syn/sas-long/seed0"]
    assert abs(long.train_s - 10 * sas.train_s) < 1e-6 * max(sas.train_s, 1) and "other settings" in long.basis
    assert after["syn/cal/seed0"].train_s is None and "no stored run" in after["syn/cal/seed0"].basis
    capsys.readouterr()
    assert main(["plan", "--suite", str(suite.path), "--results", str(res)]) == 0
    out = capsys.readouterr().out
    assert "3 of 13 cells done" in out and "without an estimate" in out and "| syn/pop/seed0 " in out


def test_inference_variants_count_their_training_once(tmp_path):
    suite = _suite(tmp_path)
    cells = {c.name: c for c in plan(suite)}
    assert training_key(cells["syn/cal/seed0"]) == training_key(cells["syn/cal-dense/seed0"])
    assert training_key(cells["syn/cal/seed0"]) != training_key(cells["syn/cal-more/seed0"])
    assert training_key(cells["syn/cal/seed0"]) != training_key(cells["syn/cal/seed1"])
    rec = {"config": {"model": {"name": "calrec", "params": {"backbone": "tiny", "stage2_steps": 4}}},
           "machine": {}, "fit_seconds": 99.0, "predict_seconds": 3.0, "evaluated_users": 30,
           "dataset_stats": {"users": 60}, "model_info": {"timings": {"stage2": {"steps": 4, "train_seconds": 20.0}}}}
    train, predict, _ = estimate(cells["syn/cal-more/seed0"], "cpu", [rec])
    assert train == 80.0 and predict == 3.0  # 16 steps at 5 s; 30 test users at 0.1 s
    planned = {p.cell.name: p for p in plan_suite(suite, tmp_path / "empty")}
    assert planned["syn/cal/seed0"].device == "cpu"


def test_calrec_budget_uses_its_own_step_defaults():
    from bench.execute.records import budget
    from calrec.config import STAGE1, TrainConfig

    assert budget("calrec", {}) == TrainConfig().stage2_steps  # was 1000 where CALRec's default is 200
    assert budget("calrec", {"stage1": {"datasets": ["ml-1m"]}, "stage2_steps": 50}) == STAGE1["steps"] + 50
    assert budget("calrec", {"stage1": {"steps": 30}, "stage2_steps": 0}) == 30


def _rec(params, device=None, train_s=20.0, model="calrec", **info):
    return {"config": {"model": {"name": model, "params": params}}, "machine": {"accelerator": device},
            "fit_seconds": train_s, "predict_seconds": 3.0, "evaluated_users": 30, "dataset_stats": {"users": 60},
            "model_info": info}


def test_same_settings_take_their_own_time_and_calrec_scales_by_tokens(tmp_path):
    cells = {c.name: c for c in plan(_suite(tmp_path))}
    # Same settings: the stored run's own time (it stopped early at 5 of 40 epochs), not 40/5 of it.
    sas = cells["syn/sas-long/seed0"]
    stopped = _rec(sas.variant.params, model="sasrec", train_s=50.0, epochs_run=5)
    assert estimate(sas, "cpu", [stopped])[0] == 50.0
    # CALRec, other settings on this device (50 tokens a step, 0.1 s a token); a GPU run of the same
    # training as the planned cell took 100 tokens a step: 16 steps x 100 tokens x 0.1 s.
    more = cells["syn/cal-more/seed0"]
    cpu = _rec({"backbone": "tiny", "stage2_steps": 4}, timings={"stage2": {"steps": 4, "tokens": 200, "train_seconds": 20.0}})
    gpu = _rec({**more.variant.params, "n_samples": 9}, device="H200",
               timings={"stage2": {"steps": 16, "tokens": 1600, "train_seconds": 1.0}})
    train, _, basis = estimate(more, "cpu", [cpu, gpu])
    assert train == 160.0 and "1,600 tokens" in basis  # inference settings (n_samples) do not change training
    # No run of this training, but one that builds the same prompts at batch 4 (200 tokens in 4 steps:
    # 12.5 tokens a window): 16 steps x 8 windows (the default batch) x 12.5 tokens x 0.1 s.
    half = _rec({"backbone": "tiny", "stage2_steps": 4, "batch_size": 4},
                timings={"stage2": {"steps": 4, "tokens": 200, "train_seconds": 20.0}})
    train, _, basis = estimate(more, "cpu", [half])
    assert train == 160.0 and "window size: 1 stored run with the same prompts" in basis
    # Nor one with the same prompts (another template; the cell's is the default, paper): scaled by
    # steps, and says so.
    compact = _rec({"backbone": "tiny", "stage2_steps": 4, "template": "compact"},
                   timings={"stage2": {"steps": 4, "tokens": 200, "train_seconds": 20.0}})
    train, _, basis = estimate(more, "cpu", [compact])
    assert train == 80.0 and "rough guess" in basis
    # A setting left out is read as its default: a run that names natural_titles: false builds the same prompts.
    named = _rec({"backbone": "tiny", "stage2_steps": 4, "batch_size": 4, "natural_titles": False},
                 timings={"stage2": {"steps": 4, "tokens": 200, "train_seconds": 20.0}})
    assert estimate(more, "cpu", [named])[0] == 160.0
    # Runs that train only the top layers (a token there costs far less) say nothing of training every
    # layer: no estimate, and why, rather than one 5-30x too low.
    top = _rec({"backbone": "tiny", "stage2_steps": 4, "train_layers": 1},
               timings={"stage2": {"steps": 4, "tokens": 200, "train_seconds": 20.0}})
    train, predict, basis = estimate(more, "cpu", [top])
    assert train is None and predict is None and "train_layers: 0" in basis


def test_a_calrec_rerun_costs_its_whole_fit_and_the_stages_it_loaded(tmp_path):
    # An uncached validation can cost more than the training (the paper row: 40 min training, 100 min
    # fit), and a stage loaded from the shared cache cost nothing in this fit but will in a fresh seed's.
    cell = {c.name: c for c in plan(_suite(tmp_path))}["syn/cal/seed0"]
    rec = _rec(cell.variant.params, train_s=300.0, timings={
        "stage1": {"steps": 4, "train_seconds": 50.0, "cached": "/somewhere/stage1.pt"},
        "stage2": {"steps": 4, "train_seconds": 100.0}, "frozen_cache_seconds": {"syn": 5.0}})
    train, _, basis = estimate(cell, "cpu", [rec])
    assert train == 345.0 and "same settings" in basis  # the frozen-layer cache it built is reused, not rebuilt


def test_a_cell_that_resumes_is_estimated_without_what_its_checkpoint_holds(tmp_path):
    import json

    from bench.execute.fingerprint import checkpoint_key
    from bench.execute.store import PROGRESS, RunStore, config_hash

    suite, res = _suite(tmp_path), tmp_path / "r"
    assert main(["run", "--suite", str(suite.path), "--results", str(res), "--models", "sas", "--seeds", "0"]) == 0
    cell = next(c for c in plan(suite) if c.name == "syn/sas/seed1")
    folder = RunStore(res).cache_dir(suite.name, "syn", "sas", 1)
    folder.mkdir(parents=True)
    key = checkpoint_key(config_hash(cell.config()), "sasrec", cell.dataset.spec)
    (folder / PROGRESS).write_text(json.dumps({"key": key, "done": "1 of 4 epochs", "seconds": 0.25}))
    planned = {p.cell.name: p for p in plan_suite(suite, res)}
    whole, resumed = planned["syn/sas/seed0"].train_s, planned["syn/sas/seed1"]
    assert "resumes from its checkpoint (1 of 4 epochs" in resumed.state and "less what its checkpoint holds" in resumed.basis
    assert resumed.train_s == max(whole - 0.25, 0.0)
    # a stale cell that `--stale` would rerun resumes from its checkpoint too
    run_json = RunStore(res).cell_dir(suite.name, "syn", "sas", 0) / "run.json"
    rec = json.loads(run_json.read_text())
    run_json.write_text(json.dumps({**rec, "code": {**rec["code"], "fingerprint": "0" * 16}}))
    cell0 = next(c for c in plan(suite) if c.name == "syn/sas/seed0")
    folder0 = RunStore(res).cache_dir(suite.name, "syn", "sas", 0)
    folder0.mkdir(parents=True, exist_ok=True)
    key0 = checkpoint_key(config_hash(cell0.config()), "sasrec", cell0.dataset.spec)
    (folder0 / PROGRESS).write_text(json.dumps({"key": key0, "done": "2 of 4 epochs", "seconds": 0.5}))
    stale = {p.cell.name: p for p in plan_suite(suite, res)}["syn/sas/seed0"]
    assert stale.state.startswith("stale (--stale reruns)") and "resumes from its checkpoint (2 of 4 epochs" in stale.state


def test_a_model_never_run_on_a_dataset_is_guessed_from_its_runs_on_others(tmp_path):
    from bench.execute.estimates import from_other_datasets
    from bench.execute.records import family

    cells = {c.name: c for c in plan(_suite(tmp_path))}

    def rec(epochs_run, budget, seconds, interactions, items):
        return {"config": {"model": {"name": "sasrec", "params": {"epochs": budget}}, "dataset": {"spec": "other"}},
                "machine": {}, "fit_seconds": seconds, "predict_seconds": 2.0, "evaluated_users": 10,
                "dataset_stats": {"users": 100, "interactions": interactions, "items": items},
                "model_info": {"epochs_run": epochs_run}}

    here = {"users": 60, "interactions": 4000, "items": 80}
    # early-stopped after 8 of 50 epochs at 2 s an epoch on 1000 interactions: 8 epochs at 4x the cost
    train, predict, basis = from_other_datasets(cells["syn/sas-long/seed0"], "cpu", [rec(8, 50, 16.0, 1000, 40)], here)
    assert train == 8 * 2.0 * 4 and predict == 30 * 0.2 * 2  # 30 sampled test users, twice the items
    assert basis.startswith("a guess: 1 stored run on other (cpu) for 8 epochs (as its early-stopped runs there)")
    # a run that used its whole budget says nothing about when this one stops: this cell's budget (40)
    train, _, basis = from_other_datasets(cells["syn/sas-long/seed0"], "cpu", [rec(4, 4, 8.0, 1000, 40)], here)
    assert train == 40 * 2.0 * 4 and "for 40 epochs (its budget)" in basis
    assert from_other_datasets(cells["syn/sas/seed0"], "cpu", [rec(4, 4, 8.0, 1000, 40)], None)[0] is None
    # RecBole's architectures are told apart
    assert family("recbole", {"model": "STAMP"}) != family("recbole", {"model": "SASRec"})
    assert family("sasrec", {"epochs": 3}) == "sasrec"


def test_a_guess_calibrates_an_epoch_on_models_run_on_both_datasets(tmp_path):
    from bench.execute.estimates import epoch_cost_ratios, from_other_datasets

    cells = {c.name: c for c in plan(_suite(tmp_path))}

    def rec(name, spec, epochs, seconds, interactions=1000, model=None):
        params = {"epochs": 50, **({"model": model} if model else {})}
        return {"config": {"model": {"name": name, "params": params}, "dataset": {"spec": spec}}, "machine": {},
                "fit_seconds": seconds, "predict_seconds": 2.0, "evaluated_users": 10,
                "dataset_stats": {"users": 100, "interactions": interactions, "items": 40},
                "model_info": {"epochs_run": epochs} if epochs else {}}

    history = {  # an epoch of recbole:STAMP costs 6x more on syn, of gru 3x; CALRec's steps say nothing
        ("recbole:STAMP", "other"): [rec("recbole", "other", 10, 20.0, model="STAMP")],
        ("recbole:STAMP", "syn"): [rec("recbole", "syn", 10, 120.0, model="STAMP")],
        ("gru", "other"): [rec("gru", "other", 5, 10.0)], ("gru", "syn"): [rec("gru", "syn", 5, 30.0)],
        ("calrec", "other"): [rec("calrec", "other", 100, 10.0)], ("calrec", "syn"): [rec("calrec", "syn", 100, 900.0)],
    }
    assert epoch_cost_ratios(history, "recbole:SASRec", "cpu", "syn") == {"other": (6.0, "recbole:STAMP")}
    assert epoch_cost_ratios(history, "sasrec", "cpu", "syn") == {"other": (4.5, "gru, recbole:STAMP")}
    # a ratio is taken on one machine: CPU models differ in speed more than datasets in size
    history[("gru", "syn")][0]["machine"] = {"cpu_model": "AMD EPYC", "cpus": 2}
    assert epoch_cost_ratios(history, "sasrec", "cpu", "syn") == {"other": (6.0, "recbole:STAMP")}
    here = {"users": 60, "interactions": 4000, "items": 80}
    train, _, basis = from_other_datasets(cells["syn/sas-long/seed0"], "cpu", [rec("sasrec", "other", 8, 16.0)], here,
                                          {"other": (6.0, "recbole:STAMP")})
    assert train == 8 * 2.0 * 6.0 and "an epoch x6.0 (as for recbole:STAMP there)" in basis
    # a model not trained by epochs (popularity, ItemKNN) scales its whole fit by interactions
    train, predict, basis = from_other_datasets(cells["syn/sas/seed0"], "cpu", [rec("pop", "other", None, 3.0)], here)
    assert train == 3.0 * 4 and predict is not None and "scaled by interactions (x4.0)" in basis


def test_a_cell_another_process_is_computing_says_so(tmp_path):
    from bench.execute.store import RunStore

    suite, res = _suite(tmp_path), tmp_path / "r"
    store = RunStore(res)
    folder = store.cell_dir(suite.name, "syn", "knn", 0)
    held = store.lock(folder)  # as a running `bench run` holds it
    try:
        planned = {p.cell.name: p for p in plan_suite(suite, res)}
        assert planned["syn/knn/seed0"].state == "to run: not run yet; running now (another process holds its lock)"
        assert planned["syn/knn/seed1"].state == "to run: not run yet"
    finally:
        held.close()
    after = {p.cell.name: p for p in plan_suite(suite, res)}
    assert after["syn/knn/seed0"].state == "to run: not run yet"  # released: no longer running


def test_runs_on_this_machine_are_preferred(tmp_path):
    sas = {c.name: c for c in plan(_suite(tmp_path))}["syn/sas-long/seed0"]
    xeon, epyc = (_rec(sas.variant.params, model="sasrec", train_s=s) for s in (90.0, 30.0))
    xeon["machine"] = {"cpu_model": "Intel(R) Xeon(R) Platinum 8480C CPU @ 2.00GHz", "cpus": 2}
    epyc["machine"] = {"cpu_model": "AMD EPYC", "cpus": 2}
    train, _, basis = estimate(sas, "cpu", [xeon, xeon, epyc], here="AMD EPYC (2 cores)")
    assert train == 30.0 and "1 stored run (cpu, this machine" in basis
    assert estimate(sas, "cpu", [xeon, xeon, epyc], here="Intel Xeon Platinum 8480C (2 cores)")[0] == 90.0
    assert estimate(sas, "cpu", [xeon, xeon, epyc], here="another CPU (2 cores)")[0] == 90.0  # none here: all of them
    # a model never run on this dataset: its runs elsewhere on this machine, likewise
    other = [{**r, "config": {**r["config"], "dataset": {"spec": "other"}},
              "dataset_stats": {"users": 60, "interactions": 1000, "items": 40}} for r in (xeon, epyc)]
    stats = {"users": 60, "interactions": 1000, "items": 40}
    train, _, basis = estimate(sas, "cpu", [], other, stats, here="AMD EPYC (2 cores)")
    assert train == 30.0 and "(cpu, this machine)" in basis


def test_rows_sharing_a_calrec_stage_one_count_its_training_once(tmp_path, monkeypatch):
    import bench.execute.plan as plan_module
    from bench.execute.estimates import stage1_key

    path = tmp_path / "s1.yaml"
    path.write_text("""
seeds: [0, 1]
ks: [10]
datasets:
  syn: {spec: synthetic, n_users: 60, n_items: 40, seed: 1}
models:
  both: {model: calrec, params: {backbone: tiny, stage1: {datasets: [syn], steps: 4}, stage2_steps: 8}}
  first: {model: calrec, params: {backbone: tiny, stage1: {datasets: [syn], steps: 4}, stage2_steps: 0}}
  second: {model: calrec, params: {backbone: tiny, stage2_steps: 8}}
""")
    suite = load_suite(str(path))
    cells = {c.name: c for c in plan(suite)}
    assert stage1_key(cells["syn/both/seed0"]) == stage1_key(cells["syn/first/seed0"])
    assert stage1_key(cells["syn/both/seed0"]) != stage1_key(cells["syn/both/seed1"])
    assert stage1_key(cells["syn/second/seed0"]) is None
    stage1 = {"steps": 4, "train_seconds": 40.0}
    recs = [_rec(cells["syn/both/seed0"].variant.params, train_s=100.0,
                 timings={"stage1": {**stage1, "cached": "/x.pt"}, "stage2": {"steps": 8, "train_seconds": 50.0}}),
            _rec(cells["syn/first/seed0"].variant.params, train_s=60.0, timings={"stage1": stage1})]
    monkeypatch.setattr(plan_module, "stored_records", lambda root: {("calrec", "synthetic"): recs})
    planned = {p.cell.name: p for p in plan_suite(suite, tmp_path / "empty")}
    assert planned["syn/both/seed1"].train_s == 140.0  # its fit plus the stage I it loaded
    assert planned["syn/first/seed1"].train_s == 20.0 and "stage I (0.7 min) shared" in planned["syn/first/seed1"].basis
    assert planned["syn/second/seed1"].train_s is not None and "stage I" not in planned["syn/second/seed1"].basis


def test_the_same_settings_on_another_machine_are_scaled_by_how_much_slower_this_one_is(tmp_path):
    # The paper row ran only on the fast EPYC; on the slow one only other settings ran, of which one
    # (`cal`) ran on both: 2 s a step here against 1 s there, so the paper row's 100 s fit costs 200 s.
    cells = {c.name: c for c in plan(_suite(tmp_path))}
    more, cal = cells["syn/cal-more/seed0"], cells["syn/cal/seed0"]
    fast, slow = ({"cpu_model": "AMD EPYC", "cpus": 2, "cpu_flags": f} for f in (["avx512_bf16"], ["avx2"]))
    run = lambda params, where, train_s, s_a_step, steps=8: {**_rec(params, train_s=train_s, timings={"stage2": {
        "steps": steps, "tokens": 50 * steps, "train_seconds": s_a_step * steps}}), "machine": where}
    recs = [run(more.variant.params, fast, 100.0, 1.0, 16), run(cal.variant.params, fast, 10.0, 1.0),
            run(cal.variant.params, slow, 20.0, 2.0)]
    train, predict, basis = estimate(more, "cpu", recs, here="AMD EPYC (2 cores, avx2)")
    assert train == 200.0 and predict == 2 * 3.0 and "same settings" in basis and "x2.00 for this machine" in basis
    # with no training run on both machines it falls back to this machine's other settings, by tokens
    train, _, basis = estimate(more, "cpu", recs[:1] + recs[2:], here="AMD EPYC (2 cores, avx2)")
    assert "other settings" in basis and train == 16 * 50 * (16.0 / 400)


def test_the_plan_counts_the_frozen_layer_cache_as_built_and_says_what_a_build_costs(tmp_path, monkeypatch):
    import bench.execute.plan as plan_module
    from bench.execute.plan import plan_markdown

    path = tmp_path / "fc.yaml"
    path.write_text(SUITE.replace("cal: {model: calrec, params: {backbone: tiny,",
                                  "cal: {model: calrec, params: {backbone: tiny, frozen_cache: true, train_layers: 1, examples: epochs,"))
    suite = load_suite(str(path))
    params = {c.name: c for c in plan(suite)}["syn/cal/seed0"].variant.params
    built = _rec(params, train_s=700.0, timings={"frozen_cache_seconds": {"syn": 600.0},
                                                 "stage2": {"steps": 8, "tokens": 400, "train_seconds": 80.0}})
    monkeypatch.setattr(plan_module, "stored_records", lambda root: {("calrec", "synthetic"): [built]})
    md = plan_markdown(suite, tmp_path / "r")
    assert "frozen-layer cache" in md and "up to 10.0 min (on other machines" in md
    assert "or was built at another precision (bf16 is in its key; here `bf16: auto` is" in md
    assert "| 1.7 min " in md  # syn/cal/seed0: its 100 s of fit without the build, and 3 s of scoring


def test_a_shuffled_history_cell_counts_the_cache_build_its_seed_needs(tmp_path):
    """The frozen-layer cache of shuffled histories is keyed by the seed that shuffled them, so no
    other cell's build serves a new seed: its estimate keeps the build its stored runs record. In
    order, histories share one cache, counted as built."""
    def estimated(shuffle: bool):
        path = tmp_path / f"sh{shuffle}.yaml"
        path.write_text(SUITE.replace("cal: {model: calrec, params: {backbone: tiny,",
                                      f"cal: {{model: calrec, params: {{backbone: tiny, frozen_cache: true, "
                                      f"shuffle_history: {str(shuffle).lower()},"))
        cell = {c.name: c for c in plan(load_suite(str(path)))}["syn/cal/seed1"]
        built = _rec(cell.variant.params, train_s=700.0, timings={"frozen_cache_seconds": {"syn": 600.0}})
        return estimate(cell, "cpu", [built])

    train, _, basis = estimated(shuffle=True)
    assert train == 700.0 and "its own frozen-layer cache" in basis  # 100 s of training + the 600 s build
    train, _, basis = estimated(shuffle=False)
    assert train == 100.0 and "own" not in basis


def test_what_fits_in_a_sitting_keeps_shared_training_together_and_lower_seeds_first(tmp_path, capsys):
    from dataclasses import replace

    from bench.execute.sitting import command, fit

    suite = _suite(tmp_path)
    planned = plan_suite(suite, tmp_path / "empty")
    after = {p.cell.name: p.after for p in planned}
    assert after["syn/cal-dense/seed0"] == "syn/cal/seed0" and after["syn/cal/seed0"] is None  # same weights
    assert after["syn/cal-more/seed0"] is None  # other training settings
    minutes = {"pop": 1, "knn": 1, "sas": 10, "sas-long": 30, "cal": 50, "cal-dense": 5, "cal-more": 100}
    cells = [replace(p, train_s=60.0 * minutes[p.cell.variant.key], predict_s=0.0) for p in planned]
    taken, left = fit(cells, hours=2)
    # seed 0 first, in the suite's order, cal with its dense row; cal-more (100 min) does not fit after them
    # (97 min), so later groups that do are taken
    assert [[p.cell.name for p in g.cells] for g in taken] == [
        ["syn/pop/seed0"], ["syn/knn/seed0"], ["syn/sas/seed0"], ["syn/sas-long/seed0"],
        ["syn/cal/seed0", "syn/cal-dense/seed0"], ["syn/knn/seed1"], ["syn/sas/seed1"]]
    assert [[p.cell.name for p in g.cells] for g in left] == [
        ["syn/cal-more/seed0"], ["syn/sas-long/seed1"], ["syn/cal/seed1", "syn/cal-dense/seed1"], ["syn/cal-more/seed1"]]
    assert sum(g.seconds for g in taken) == 108 * 60
    cal = next(g for g in taken + left if g.cells[0].cell.name == "syn/cal/seed0")
    assert command("python -m bench run --suite s", cal, False) == "python -m bench run --suite s --models cal,cal-dense --seeds 0"
    done = [replace(p, state="done") if p.cell.seed == 0 else p for p in cells]
    assert all(g.seed == 1 for g in fit(done, hours=100)[0])
    capsys.readouterr()
    assert main(["plan", "--suite", str(suite.path), "--results", str(tmp_path / "r"), "--hours", "0"]) == 2
    assert "--hours 0" in capsys.readouterr().err
    assert main(["plan", "--suite", str(suite.path), "--results", str(tmp_path / "r"), "--hours", "3"]) == 0
    out = capsys.readouterr().out
    assert "### What fits in 3 h here" in out and "Nothing left fits." in out  # nothing has run: no estimates


def test_a_run_records_its_peak_memory_and_the_plan_warns_where_it_would_not_fit(tmp_path, monkeypatch):
    """A cell past the machine's memory is killed without a word: each run records its peak resident
    memory, and the plan names the cells to run whose settings peaked near this machine's memory."""
    import json

    import bench.execute.plan as plan_module
    from bench.execute.plan import plan_markdown

    suite, res = _suite(tmp_path), tmp_path / "r"
    assert main(["run", "--suite", str(suite.path), "--results", str(res), "--models", "knn", "--seeds", "0"]) == 0
    [run] = res.glob("runs/*/syn/knn/seed0/run.json")
    memory = json.loads(run.read_text())["memory"]
    assert 0 < memory["host_peak_mb"] <= memory["host_total_mb"]
    assert "Memory:" not in plan_markdown(suite, res)  # a small model fits
    monkeypatch.setattr(plan_module, "total_memory_mb", lambda: memory["host_peak_mb"])  # as on a machine this small
    md = plan_markdown(suite, res)
    assert "- Memory:" in md and "syn/knn/seed1 (" in md and "syn/knn/seed0" not in md.split("- Memory:")[1]
    assert "syn/sas/" not in md.split("- Memory:")[1]  # no stored run of its settings: nothing said
