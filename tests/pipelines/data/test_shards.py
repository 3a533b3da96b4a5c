"""Format version 2: splits as Parquet shards, the hashed split rule, and version 1 still read."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from tfcroloss.pipelines.data.dataset import FORMAT_VERSION, DataError, PreparedDataset
from tfcroloss.pipelines.data.prepare import SPLIT_RULE, PrepareConfig, prepare_file
from tfcroloss.pipelines.data.synthetic import write_synthetic


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    write_synthetic(root / "log.txt", "tiny", seed=1)
    dataset = prepare_file("comirec", root / "log.txt", root / "out", config=PrepareConfig(users_per_shard=7))
    return dataset, root / "out"


def test_splits_are_shards_of_users_in_index_order(prepared):
    in_memory, path = prepared
    loaded = PreparedDataset.load(path)
    assert loaded.metadata["format_version"] == FORMAT_VERSION == 2
    assert loaded.metadata["users_per_shard"] == 7 and loaded.metadata["split_rule"] == SPLIT_RULE
    for name, split in loaded.splits.items():
        expected = in_memory.splits[name]
        for field in ("user_index", "offsets", "items"):
            np.testing.assert_array_equal(getattr(split, field), getattr(expected, field))
        assert [shard.users for shard in split.shards][:-1] == [7] * (len(split.shards) - 1)
        assert sum(shard.users for shard in split.shards) == split.num_users
        first = 0
        for shard in split.shards:
            # Any Parquet reader reads the shard; its values are where shards.json says.
            table = pq.read_table(shard.path)
            users = split.user_index[first : first + shard.users]
            assert table["user_index"].to_pylist() == users.tolist()
            assert table["items"].to_pylist() == [split.sequence(i).tolist() for i in range(first, first + shard.users)]
            data = open(shard.path, "rb").read()
            (u0, u1), (l0, l1), (i0, i1) = shard.ranges
            np.testing.assert_array_equal(np.frombuffer(data[u0:u1], "<i8"), users)
            np.testing.assert_array_equal(np.frombuffer(data[l0:l1], "<i4"), split.lengths[first : first + shard.users])
            assert np.frombuffer(data[i0:i1], "<i4").size == shard.interactions
            first += shard.users


def test_split_rule_is_the_md5_order(prepared):
    dataset, _ = prepared
    tokens = dataset.user_tokens
    keys = np.array([int(hashlib.md5(f"1230:{t}".encode()).hexdigest()[:15], 16) for t in tokens])
    order = np.lexsort((np.arange(tokens.size), keys))
    users = tokens.size
    sizes = [int(0.8 * users), int(0.9 * users) - int(0.8 * users)]
    assert sorted(dataset.train.user_index) == sorted(order[: sizes[0]])
    assert sorted(dataset.valid.user_index) == sorted(order[sizes[0] : sum(sizes)])


def test_version_1_data_sets_keep_their_split(prepared, tmp_path):
    """A version 1 directory (npy splits, no split rule) loads as it was written."""
    dataset, path = prepared
    old = tmp_path / "v1"
    old.mkdir()
    for name in ("items.parquet", "users.parquet"):
        (old / name).write_bytes((path / name).read_bytes())
    metadata = {k: v for k, v in dataset.metadata.items() if k not in ("split_rule", "users_per_shard")}
    (old / "metadata.json").write_text(json.dumps({**metadata, "format_version": 1}))
    # An old split: the users of train and test swapped, as a different rule would have drawn them.
    for name, split in (("train", dataset.test), ("valid", dataset.valid), ("test", dataset.train)):
        (old / name).mkdir()
        for field in ("user_index", "offsets", "items"):
            np.save(old / name / f"{field}.npy", getattr(split, field))
    loaded = PreparedDataset.load(old)
    np.testing.assert_array_equal(loaded.train.user_index, dataset.test.user_index)
    np.testing.assert_array_equal(loaded.test.items, dataset.train.items)
    assert loaded.train.shards == ()
    # Saved again, it is written in the current format with its split unchanged.
    loaded.save(tmp_path / "v2")
    again = PreparedDataset.load(tmp_path / "v2")
    assert again.metadata["format_version"] == FORMAT_VERSION
    np.testing.assert_array_equal(again.train.user_index, dataset.test.user_index)
    np.testing.assert_array_equal(again.train.items, dataset.test.items)


def test_a_missing_or_broken_shard_index_is_named(prepared, tmp_path):
    _, path = prepared
    broken = tmp_path / "broken"
    broken.mkdir()
    for entry in path.iterdir():
        target = broken / entry.name
        if entry.is_dir():
            target.mkdir()
            for file in entry.iterdir():
                (target / file.name).write_bytes(file.read_bytes())
        else:
            target.write_bytes(entry.read_bytes())
    (broken / "valid" / "shards.json").write_text("{}")
    with pytest.raises(DataError, match=r"valid/shards.json: not a shard index"):
        PreparedDataset.load(broken)
    (broken / "valid" / "shards.json").unlink()
    with pytest.raises(DataError, match=r"valid/shards.json: missing"):
        PreparedDataset.load(broken)
