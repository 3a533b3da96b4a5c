"""Preparation: a hand-worked example of the protocol, determinism, atomic output, the CLI."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from tfcroloss.pipelines import cli
from tfcroloss.pipelines.data.dataset import FORMAT_VERSION, DataError, PreparedDataset, Split
from tfcroloss.pipelines.data.prepare import PrepareConfig, prepare, prepare_file
from tfcroloss.pipelines.data.readers import read_log
from tfcroloss.pipelines.data.synthetic import write_synthetic

# Worked example, with min_user_count=3 and min_item_count=2 to keep it small:
# - (alice, y, 1) twice: the second is dropped as a duplicate;
# - counts (on the same data): users alice 4, bob 3, carol 2, dave 1; items x 4, y 2, w 2, z 1, q 1;
#   so carol, dave, z and q go (bob keeps 2 interactions: ComiRec filters once);
# - popularity: x 2, y 2 (tie: x appeared first), w 1  ->  x=1, y=2, w=3;
# - alice by time: y@1, w@2, x@3 (z@2 was dropped; w@2 came after z@2 in the log) -> [2, 3, 1].
EXAMPLE = """\
alice,x,3
alice,y,1
alice,z,2
alice,y,1
alice,w,2
bob,x,5
bob,y,6
bob,q,7
carol,x,1
carol,w,1
dave,x,9
"""
SMALL = PrepareConfig(min_user_count=3, min_item_count=2)


@pytest.fixture
def example(tmp_path):
    path = tmp_path / "example.txt"
    path.write_text(EXAMPLE)
    return path


def all_sequences(dataset):
    users = dataset.user_tokens
    return {
        users[split.user_index[i]]: split.sequence(i).tolist()
        for split in dataset.splits.values()
        for i in range(split.num_users)
    }


def test_worked_example(example):
    dataset = prepare(read_log("comirec", example), SMALL)
    assert dataset.item_tokens.tolist() == ["", "x", "y", "w"]
    assert dataset.user_tokens.tolist() == ["alice", "bob"]
    assert all_sequences(dataset) == {"alice": [2, 3, 1], "bob": [1, 2]}
    # Two users: int(0.8 * 2) = 1 train, int(0.9 * 2) - 1 = 0 valid, 1 test, ordered by the split
    # rule's key: the first 15 hex digits of md5("1230:TOKEN").
    keys = [int(hashlib.md5(f"1230:{user}".encode()).hexdigest()[:15], 16) for user in ("alice", "bob")]
    first = int(np.argmin(keys))
    assert dataset.train.user_index.tolist() == [first]
    assert dataset.valid.num_users == 0
    assert dataset.test.user_index.tolist() == [1 - first]
    assert dataset.item_counts.tolist() == np.bincount(dataset.train.items, minlength=4).tolist()
    meta = dataset.metadata
    assert meta["dropped"] == {"duplicates": 1, "filtered_interactions": 5, "users": 2, "items": 2}
    assert meta["read"] == {"interactions": 11, "users": 4, "items": 5}
    assert (meta["num_items"], meta["num_users"], meta["num_interactions"]) == (3, 2, 5)
    assert meta["settings"]["min_user_count"] == 3 and meta["settings"]["seed"] == 1230


def test_iterative_filter_and_no_user_left(example):
    # Repeating the filter drops bob (2 left), then x, y and w have one user each: nothing is left.
    config = PrepareConfig(min_user_count=3, min_item_count=2, iterative_filter=True)
    with pytest.raises(DataError, match="no user left after filtering 11 interactions"):
        prepare(read_log("comirec", example), config)


def test_duplicates_kept_on_request(example):
    config = PrepareConfig(min_user_count=3, min_item_count=2, drop_duplicates=False)
    dataset = prepare(read_log("comirec", example), config)
    # y now counts 3 and becomes the most popular item: y=1, x=2, w=3.
    assert dataset.item_tokens.tolist() == ["", "y", "x", "w"]
    assert all_sequences(dataset)["alice"] == [1, 1, 3, 2]
    assert dataset.metadata["dropped"]["duplicates"] == 0


def test_min_rating(tmp_path):
    path = tmp_path / "u.data"
    path.write_text("1\ta\t5\t1\n1\tb\t2\t2\n1\tc\t4\t3\n")
    config = PrepareConfig(
        min_user_count=1, min_item_count=1, min_rating=4, train_fraction=1, valid_fraction=0
    )
    dataset = prepare(read_log("movielens", path), config)
    assert dataset.item_tokens.tolist() == ["", "a", "c"]
    assert dataset.metadata["dropped"]["below_min_rating"] == 1
    (tmp_path / "c.txt").write_text("1,a,1\n")
    with pytest.raises(DataError, match="min_rating needs a rating column"):
        prepare(read_log("comirec", tmp_path / "c.txt"), config)


def test_presplit_files_keep_split_and_are_not_filtered(tmp_path):
    (tmp_path / "b_train.txt").write_text("u1,i1,0\nu1,i2,1\n")
    (tmp_path / "b_valid.txt").write_text("u2,i2,0\n")
    (tmp_path / "b_test.txt").write_text("u3,i1,0\nu3,i3,1\n")
    dataset = prepare(read_log("comirec", tmp_path), PrepareConfig())
    assert [dataset.user_tokens[s.user_index].tolist() for s in dataset.splits.values()] == [
        ["u1"],
        ["u2"],
        ["u3"],
    ]
    assert dataset.metadata["settings"]["min_user_count"] == 0
    (tmp_path / "b_test.txt").write_text("u1,i1,5\n")
    with pytest.raises(DataError, match="user 'u1' appears in more than one"):
        prepare(read_log("comirec", tmp_path), PrepareConfig())


def test_split_sizes_and_determinism(tmp_path):
    log = tmp_path / "tiny.txt"
    write_synthetic(log, "tiny", seed=3)
    first = prepare(read_log("comirec", log), PrepareConfig())
    again = prepare(read_log("comirec", log), PrepareConfig())
    other = prepare(read_log("comirec", log), PrepareConfig(seed=7))
    users = first.num_users
    sizes = [s.num_users for s in first.splits.values()]
    assert sizes == [
        int(0.8 * users),
        int(0.9 * users) - int(0.8 * users),
        users - int(0.9 * users),
    ]
    assert sorted(np.concatenate([s.user_index for s in first.splits.values()])) == list(
        range(users)
    )
    for name in first.splits:
        for field in ("user_index", "offsets", "items"):
            np.testing.assert_array_equal(
                getattr(first.splits[name], field), getattr(again.splits[name], field)
            )
    assert first.train.user_index.tolist() != other.train.user_index.tolist()
    # Item ids follow popularity over all kept interactions.
    counts = np.bincount(np.concatenate([s.items for s in first.splits.values()]))[1:]
    assert (np.diff(counts) <= 0).all()
    assert min(np.diff(s.offsets).min() for s in first.splits.values()) >= 1


def test_save_load_round_trip(example, tmp_path):
    saved = prepare_file("comirec", example, tmp_path / "out", config=SMALL)
    loaded = PreparedDataset.load(tmp_path / "out")
    assert loaded.metadata == json.loads(json.dumps(saved.metadata))
    assert loaded.item_tokens.tolist() == ["", "x", "y", "w"]
    assert loaded.item_id_lookup() == {"x": 1, "y": 2, "w": 3}
    assert all_sequences(loaded) == all_sequences(saved)
    assert loaded.item_counts.dtype == np.int64 and loaded.train.items.dtype == np.int32
    assert sorted(p.name for p in tmp_path.iterdir()) == ["example.txt", "out"]


def test_failures_leave_nothing_behind(example, tmp_path, monkeypatch):
    with pytest.raises(DataError):
        prepare_file("comirec", example, tmp_path / "out", config=PrepareConfig(min_user_count=99))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["example.txt"]

    def broken(self, directory, **options):
        raise OSError("disk full")

    monkeypatch.setattr(Split, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        prepare_file("comirec", example, tmp_path / "out", config=SMALL)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["example.txt"]


def test_overwrite(example, tmp_path):
    prepare_file("comirec", example, tmp_path / "out", config=SMALL)
    with pytest.raises(FileExistsError):
        prepare_file("comirec", example, tmp_path / "out", config=SMALL)
    prepare_file("comirec", example, tmp_path / "out", config=SMALL, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["example.txt", "out"]


def test_load_rejects_other_directories(tmp_path):
    with pytest.raises(DataError, match="is not a prepared data set"):
        PreparedDataset.load(tmp_path)
    (tmp_path / "metadata.json").write_text(json.dumps({"format_version": FORMAT_VERSION + 1}))
    with pytest.raises(DataError, match="newer than this tfcroloss reads"):
        PreparedDataset.load(tmp_path)


def test_config_is_checked():
    with pytest.raises(DataError, match="train_fraction \\+ valid_fraction must be <= 1"):
        PrepareConfig(train_fraction=0.95, valid_fraction=0.1)
    with pytest.raises(DataError, match="min_user_count must be >= 0, got -1"):
        PrepareConfig(min_user_count=-1)


def test_cli_prepare_and_errors(example, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["prepare", "--format", "comirec", "--input", str(example), "--output", str(out)]
    assert cli.main([*argv, "--min-user-count", "3", "--min-item-count", "2"]) == 0
    printed = capsys.readouterr().out
    assert "2 kept" in printed and "duplicates 1" in printed
    assert cli.main(["data", "info", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["num_items"] == 3

    bad = tmp_path / "bad.txt"
    bad.write_text("a,b,1\na,b,c,d\n")
    assert cli.main([*argv[:4], str(bad), "--output", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.txt, line 2: expected 3 fields" in err
    assert not (tmp_path / "o2").exists()


@pytest.mark.parametrize("flag, url", [("--input", "gs://bucket/log/"), ("--output", "hdfs:///prepared"), ("--input", "s3a://b/l.csv")])
def test_cli_refuses_a_url_in_one_line(example, tmp_path, capsys, monkeypatch, flag, url):
    monkeypatch.chdir(tmp_path)
    paths = {"--input": str(example), "--output": str(tmp_path / "out"), flag: url}
    with pytest.raises(SystemExit):
        cli.main(["prepare", "--format", "comirec", *(part for item in paths.items() for part in item)])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"argument {flag}: {url}: a URL" in error and "mount the bucket" in error
    assert {path.name for path in tmp_path.iterdir()} <= {example.name}  # no folder named after the scheme


def test_cli_reads_a_file_url_as_its_path(example, tmp_path):
    argv = ["prepare", "--format", "comirec", "--min-user-count", "3", "--min-item-count", "2"]
    assert cli.main([*argv, "--input", f"file://{example}", "--output", f"file://{tmp_path / 'out'}"]) == 0
    assert (tmp_path / "out" / "metadata.json").is_file()


def test_cli_spark_engine_without_java_says_what_to_install(example, tmp_path, capsys, monkeypatch):
    from tfcroloss.pipelines.data import spark_engine

    monkeypatch.setattr(spark_engine.shutil, "which", lambda name: None)
    monkeypatch.delenv("JAVA_HOME", raising=False)
    argv = ["prepare", "--engine", "spark", "--format", "comirec", "--input", str(example), "--output", str(tmp_path / "out")]
    assert cli.main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "needs Java 17 or 21" in error and "openjdk-17-jre-headless" in error
    with pytest.raises(SystemExit):
        cli.main([*argv, "--spark-conf", "no-equals-sign"])
    assert "--spark-conf takes KEY=VALUE" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
