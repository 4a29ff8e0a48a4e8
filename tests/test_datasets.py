"""Loaders: Amazon-2018 on fixture files in the real format, atomic files, and their errors."""
import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

from bench.datasets import load_dataset
from bench.errors import BenchError
from bench.split import leave_one_out

FIXTURES = Path(__file__).parent / "fixtures" / "amazon2018"


def test_amazon_fixture_text_kcore_and_duplicates():
    d = load_dataset("amazon2018:Beauty", directory=str(FIXTURES), k=3)
    assert "ASHORTUSER" not in set(d.user)  # removed by the 3-core filter
    pairs = list(zip(d.user, d.item))
    assert len(pairs) == len(set(pairs))  # the repeated review is kept once
    t = d.item_text["B000000000"]
    assert list(t) == ["Title", "Category", "Brand", "Price"]
    assert t["Title"] == "Gentle Cleanser & Toner 0" and t["Price"] == "$4.99" and t["Category"] == "Beauty"
    assert d.item_text["B000000002"]["Brand"] == "unknown" and d.item_text["B000000003"]["Price"] == "unknown"
    assert d.item_text["B000000001"]["Title"] == "Product 1 deluxe"  # HTML tags dropped
    assert d.item_text["B000000007"]["Title"] == "unknown"  # reviewed but no metadata line
    s = leave_one_out(d)
    assert s.n_users == 6 and "sha1:" in s.version


def test_amazon_reads_gzip(tmp_path):
    for f in FIXTURES.iterdir():
        with open(f, "rb") as src, gzip.open(tmp_path / (f.name + ".gz"), "wb") as dst:
            shutil.copyfileobj(src, dst)
    a = load_dataset("amazon2018:Beauty", directory=str(tmp_path), k=3)
    b = load_dataset("amazon2018:Beauty", directory=str(FIXTURES), k=3)
    assert np.array_equal(a.item, b.item)


def test_amazon_errors_name_what_was_expected(tmp_path):
    with pytest.raises(BenchError, match=r"expected .*Toys_5.json\[.gz\] and .*meta_Toys.json\[.gz\]"):
        load_dataset("amazon2018:Toys", directory=str(tmp_path))
    with pytest.raises(BenchError, match="set the dataset parameter 'directory'"):
        load_dataset("amazon2018:Toys")
    shutil.copy(FIXTURES / "meta_Beauty.json", tmp_path)
    (tmp_path / "Beauty_5.json").write_text('{"reviewerID": "a", "asin": "b", "unixReviewTime": 1}\n{broken\n')
    with pytest.raises(BenchError, match=r"Beauty_5.json: line 2: not valid JSON"):
        load_dataset("amazon2018:Beauty", directory=str(tmp_path))
    (tmp_path / "Beauty_5.json").write_text('{"reviewerID": "a", "unixReviewTime": 1}\n')
    with pytest.raises(BenchError, match=r"line 1: missing field 'asin'"):
        load_dataset("amazon2018:Beauty", directory=str(tmp_path))


def test_atomic_dir_and_errors(tmp_path):
    d = tmp_path / "toy"
    d.mkdir()
    (d / "toy.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n" +
                                 "".join(f"u{u}\ti{(u + k) % 5}\t{k}\n" for u in range(4) for k in range(4)))
    (d / "toy.item").write_text("item_id:token\tmovie_title:token_seq\n" + "".join(f"i{i}\tTitle {i}\n" for i in range(5)))
    s = leave_one_out(load_dataset(f"atomic:{d}"))
    assert s.n_users == 4 and s.item_text[0] == {"Movie Title": "Title 0"}
    (d / "toy.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\nu1\ti1\tyesterday\n")
    with pytest.raises(BenchError, match=r"toy.inter: line 2: timestamp 'yesterday' is not a number"):
        load_dataset(f"atomic:{d}")
    (d / "toy.inter").write_text("user_id\titem_id:token\n")
    with pytest.raises(BenchError, match=r"header field 'user_id' lacks its ':type' suffix"):
        load_dataset(f"atomic:{d}")
    with pytest.raises(BenchError, match="expected exactly one <name>.inter"):
        load_dataset(f"atomic:{tmp_path / 'nothing'}")


def test_an_atomic_file_that_is_not_utf8_is_one_line_naming_file_and_line(tmp_path):
    d = tmp_path / "toy"
    d.mkdir()
    (d / "toy.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n" +
                                 "".join(f"u{u}\ti{(u + k) % 5}\t{k}\n" for u in range(4) for k in range(4)))
    (d / "toy.item").write_bytes("item_id:token\tmovie_title:token_seq\ni0\tAm\u00e9lie\n".encode("latin-1"))
    with pytest.raises(BenchError, match=r"toy.item:2: not UTF-8 text \(byte 6 of the line is 0xe9\)"):
        load_dataset(f"atomic:{d}")
    (d / "toy.item").write_bytes(b"item_id:token\tmovie\xff:token_seq\n")
    with pytest.raises(BenchError, match=r"toy.item:1: not UTF-8"):  # the header line too (it read with a traceback)
        load_dataset(f"atomic:{d}")


SCI = {"directory": str(FIXTURES), "recipe": "recformer"}


def test_recformer_recipe_counts_every_step_by_hand():
    """Fixture (real 2018 format, gzipped): 6 users, 26 reviews; item X has no metadata (2 reviews);
    after dropping them the users have 4, 3, 6, 2, 4, 5 reviews, so 4 have >= 4; u3 reviews A twice."""
    d = load_dataset("amazon2018:Industrial_and_Scientific", **SCI, user_fraction=1.0)
    assert d.extra["counts"] == {"reviews": 26, "with_metadata": 24, "users_with_metadata": 6, "users_eligible": 4,
                                 "users_sampled": 4, "interactions": 19, "items": 5}
    assert "2 whose item has no metadata dropped" in d.preprocessing and "100% user sample (seed 0)" in d.preprocessing
    assert d.item_text["B0SCI0000C"] == {"Title": "Lab Beaker Set", "Brand": "MakerC",
                                         "Category": "Industrial & Scientific, Test, Measure & Inspect"}
    assert "B0SCI00000Z" not in d.item_text  # metadata of an item nobody reviewed
    s = leave_one_out(d)
    seqs = {s.user_ids[u]: [s.item_ids[i][-1] for i in [*s.train[u], s.valid[u], s.test[u]]] for u in range(s.n_users)}
    # time-sorted, equal times in file order (u3: B and C on day 2), repeats kept (u3 ends with A again)
    assert seqs == {"AU1SCI": list("ABCD"), "AU3SCI": list("ABCDEA"), "AU5SCI": list("DECA"), "AU6SCI": list("ABCDE")}
    assert s.stats()["preprocessing"] == d.preprocessing


def test_recformer_user_sample_is_seeded():
    a = load_dataset("amazon2018:Industrial_and_Scientific", **SCI, user_fraction=0.5, sample_seed=1)
    b = load_dataset("amazon2018:Industrial_and_Scientific", **SCI, user_fraction=0.5, sample_seed=1)
    assert sorted(set(a.user)) == sorted(set(b.user))
    # seed 1 draws users 3, 5 and 6 (in order of first appearance); of the eligible, u3, u5, u6 stay
    assert sorted(set(a.user)) == ["AU3SCI", "AU5SCI", "AU6SCI"] and a.extra["counts"]["users_sampled"] == 3
    with pytest.raises(BenchError, match="keeps no user"):
        load_dataset("amazon2018:Industrial_and_Scientific", **SCI, min_interactions=7, user_fraction=1.0)
    with pytest.raises(BenchError, match="user_fraction must be in"):
        load_dataset("amazon2018:Industrial_and_Scientific", **SCI, user_fraction=0.0)
    with pytest.raises(BenchError, match="recipe"):
        load_dataset("amazon2018:Industrial_and_Scientific", directory=str(FIXTURES), recipe="unisrec")


def test_amazon_counts_items_without_metadata_and_refuses_a_file_that_has_none(tmp_path):
    with pytest.warns(UserWarning, match="items have no metadata"):
        d = load_dataset("amazon2018:Beauty", directory=str(FIXTURES), k=3)
    missing = sum(t["Title"] == "unknown" for t in d.item_text.values())
    assert missing and f"; {missing} of {len(d.item_text)} items have no metadata (text 'unknown')" in d.preprocessing
    shutil.copy(FIXTURES / "Beauty_5.json", tmp_path / "Beauty_5.json")
    (tmp_path / "meta_Beauty.json").write_text("")  # an empty metadata file: every text would be "unknown"
    with pytest.raises(BenchError, match="none of the .* reviewed items has metadata in meta_Beauty.json"):
        load_dataset("amazon2018:Beauty", directory=str(tmp_path), k=3)


def test_a_user_sample_keeps_whole_users_and_their_split():
    whole = leave_one_out(load_dataset("synthetic"))  # sample:<spec> takes the spec's defaults
    part = leave_one_out(load_dataset("sample:synthetic", users=30, seed=5))
    assert part.n_users == 30 and part.version != whole.version and "30 of its 300 users" in part.version
    row = {u: i for i, u in enumerate(whole.user_ids)}
    for i, u in enumerate(part.user_ids):  # each kept user's sequence, in raw ids, is the whole dataset's
        w = row[u]
        assert list(part.item_ids[part.train[i]]) == list(whole.item_ids[whole.train[w]])
        assert part.item_ids[part.test[i]] == whole.item_ids[whole.test[w]]
    again = leave_one_out(load_dataset("sample:synthetic", users=30, seed=5))
    assert list(again.user_ids) == list(part.user_ids)  # seeded
    assert list(leave_one_out(load_dataset("sample:synthetic", users=30, seed=6)).user_ids) != list(part.user_ids)
    with pytest.raises(BenchError, match="not below its 300 users"):
        load_dataset("sample:synthetic", users=300)
