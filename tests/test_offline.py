"""Offline bundles: wheels cut into capped loads and joined back byte for byte, or a clear failure."""
import pytest

from bench.offline import join, pack


def test_wheels_are_packed_into_capped_loads_and_joined_back(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    sizes = {"big-1.0-py3-none-any.whl": 2500, "mid-1.0-py3-none-any.whl": 700, "small-1.0-py3-none-any.whl": 90}
    for i, (name, n) in enumerate(sizes.items()):
        (wheels / name).write_bytes(bytes((i * 7 + j) % 251 for j in range(n)))
    loads = pack(sorted(wheels.iterdir()), tmp_path / "out", max_bytes=1000)
    for load in loads:  # every load under the cap, manifest aside
        assert sum(f.stat().st_size for f in load.iterdir() if f.name != "manifest.json") <= 1000
    assert len(list((tmp_path / "out").glob("load*/big-1.0-py3-none-any.whl.part*"))) == 3
    target = tmp_path / "there"
    target.mkdir()
    for load in reversed(loads):  # the loads arrive in any order
        for f in load.iterdir():
            (target / f.name).write_bytes(f.read_bytes())
    joined = join(target, tmp_path / "joined")
    assert {w.name for w in joined} == set(sizes)
    for w in joined:
        assert w.read_bytes() == (wheels / w.name).read_bytes()


def test_a_missing_part_or_a_corrupt_one_is_named(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "big-1.0-py3-none-any.whl").write_bytes(bytes(range(200)) * 10)
    loads = pack([wheels / "big-1.0-py3-none-any.whl"], tmp_path / "out", max_bytes=1000)
    target = tmp_path / "there"
    target.mkdir()
    for f in loads[0].iterdir():
        (target / f.name).write_bytes(f.read_bytes())
    with pytest.raises(SystemExit, match=r"big-1.0-py3-none-any.whl: missing big-1.0-py3-none-any.whl.part01"):
        join(target, tmp_path / "joined")
    for f in loads[1].iterdir():
        (target / f.name).write_bytes(f.read_bytes()[:-1] + b"x" if "part" in f.name else f.read_bytes())
    with pytest.raises(SystemExit, match="do not match the manifest's SHA-256"):
        join(target, tmp_path / "joined")
