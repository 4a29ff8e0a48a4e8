"""Offline bundles: wheels cut into capped loads and joined back byte for byte, or a clear failure."""
import json

import pytest

from bench.execute.offline import Refused, join, main, pack


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
    with pytest.raises(Refused, match=r"big-1.0-py3-none-any.whl: missing big-1.0-py3-none-any.whl.part01"):
        join(target, tmp_path / "joined")
    for f in loads[1].iterdir():
        (target / f.name).write_bytes(f.read_bytes()[:-1] + b"x" if "part" in f.name else f.read_bytes())
    with pytest.raises(Refused, match="do not match the manifest's SHA-256"):
        join(target, tmp_path / "joined")


GOOD = {"a-1.0-py3-none-any.whl": {"sha256": "0" * 64, "parts": 1}}


@pytest.mark.parametrize("manifest, message", [
    ({"../../x.whl": {"sha256": "0" * 64, "parts": 1}}, "not a plain wheel file name"),
    ({"/etc/x.whl": {"sha256": "0" * 64, "parts": 1}}, "not a plain wheel file name"),
    ({"a-1.0-py3-none-any.whl": {"sha256": "0" * 64, "parts": "3"}}, "parts must be a whole number"),
    ({"a-1.0-py3-none-any.whl": {"sha256": "0" * 64, "parts": 0}}, "parts must be a whole number"),
    ({"a-1.0-py3-none-any.whl": {"sha256": "zz", "parts": 1}}, "sha256 must be 64 hex digits"),
    ([], "must map wheel names"),
    ('{"a-1.0-py3-none-any.whl": {"sha', "not a readable manifest"),
])
def test_unpack_refuses_a_manifest_that_names_paths_or_lies_with_one_line(tmp_path, capsys, manifest, message):
    folder = tmp_path / "loads"
    folder.mkdir()
    (folder / "manifest.json").write_text(manifest if isinstance(manifest, str) else json.dumps(manifest))
    outside = tmp_path / "x.whl.part00"
    outside.write_bytes(b"secret")
    assert main(["unpack", str(folder), str(tmp_path / "site")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not (folder / "wheels").exists() and not (tmp_path / "site").exists()


def test_unpack_of_a_missing_folder_and_build_with_no_size_are_one_line(tmp_path, capsys):
    assert main(["unpack", str(tmp_path / "nowhere"), str(tmp_path / "site")]) == 2
    assert "no such folder" in capsys.readouterr().err
    for size in ("0", "-5", "nan", "inf", "0.0001"):  # inf was a traceback; a tiny size packed for ever
        assert main(["build", "--out", str(tmp_path / "out"), "--max-mb", size, "somepkg==1.0"]) == 2
        assert "--max-mb" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
