"""Readers: every format, tricky tokens, and bad input named by file and line."""

from __future__ import annotations

import gzip

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tfcroloss.pipelines.data.dataset import DataError
from tfcroloss.pipelines.data.readers import read_log


def rows(log):
    """(user token, item token, timestamp) per row, in file order."""
    users = np.asarray(log.user_tokens.to_pylist(), dtype=object)[log.users]
    items = np.asarray(log.item_tokens.to_pylist(), dtype=object)[log.items]
    return list(zip(users.tolist(), items.tolist(), log.timestamps.tolist(), strict=True))


def test_comirec_tokens_with_commas_spaces_quotes_and_unicode(tmp_path):
    path = tmp_path / "log.txt"
    path.write_text('"a,b",x y,3\nzoë,"say ""hi""",1\n"a,b",日本,2.5\n', encoding="utf-8")
    log = read_log("comirec", path)
    assert rows(log) == [("a,b", "x y", 3.0), ("zoë", 'say "hi"', 1.0), ("a,b", "日本", 2.5)]
    assert log.user_tokens.to_pylist() == ["a,b", "zoë"]  # first appearance order
    assert log.split is None


def test_comirec_split_set_keeps_the_split(tmp_path):
    for split, line in (("train", "u1,i1,0\n"), ("valid", "u2,i1,0\n"), ("test", "u3,i2,0\n")):
        (tmp_path / f"book_{split}.txt").write_text(line)
    for given in (tmp_path, tmp_path / "book_train.txt"):
        log = read_log("comirec", given)
        assert rows(log) == [("u1", "i1", 0.0), ("u2", "i1", 0.0), ("u3", "i2", 0.0)]
        assert log.split.tolist() == [0, 1, 2]


def test_comirec_incomplete_split_set(tmp_path):
    (tmp_path / "book_train.txt").write_text("u1,i1,0\n")
    with pytest.raises(DataError, match="book_valid.txt"):
        read_log("comirec", tmp_path / "book_train.txt")


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("u.data", "196\t242\t3\t881250949\n186\t302\t4\t891717742\n"),
        ("ratings.dat", "196::242::3::881250949\n186::302::4::891717742\n"),
        (
            "ratings.csv",
            "userId,movieId,rating,timestamp\n196,242,3.0,881250949\n186,302,4.0,891717742\n",
        ),
    ],
)
def test_movielens_files(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    for given in (tmp_path / name, tmp_path):
        log = read_log("movielens", given)
        assert rows(log) == [("196", "242", 881250949.0), ("186", "302", 891717742.0)]
        assert log.ratings.tolist() == [3.0, 4.0]


def test_recbole_typed_header(tmp_path):
    path = tmp_path / "x.inter"
    path.write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "u 1\titem,1\t5\t10.5\nü\titem,1\t1\t3\n"
    )
    log = read_log("recbole", path, rating_column="rating")
    assert rows(log) == [("u 1", "item,1", 10.5), ("ü", "item,1", 3.0)]
    assert log.ratings.tolist() == [5.0, 1.0]


def test_csv_tsv_and_parquet_with_named_columns(tmp_path):
    names = {"user_column": "who", "item_column": "what", "time_column": "when"}
    (tmp_path / "a.csv").write_text('what,when,who,extra\n"x,1",7,"u 1",z\n')
    (tmp_path / "a.tsv").write_text("what\twhen\twho\nx,1\t7\tu 1\n")
    pq.write_table(
        pa.table({"who": ["u 1"], "what": ["x,1"], "when": pa.array([7], pa.int64())}),
        tmp_path / "a.parquet",
    )
    for name in ("a.csv", "a.tsv", "a.parquet"):
        assert rows(read_log("csv", tmp_path / name, **names)) == [("u 1", "x,1", 7.0)], name


def test_a_directory_of_parts_is_one_log_in_name_order(tmp_path):
    """Spark's layout: numbered parts, ``_SUCCESS``, ``.crc`` files, an empty part."""
    parts = tmp_path / "log.csv"
    parts.mkdir()
    for name in ("_SUCCESS", ".part-00000.csv.crc", "part-00002.csv"):
        (parts / name).write_text("")
    (parts / "part-00000.csv").write_text("user_id,item_id,timestamp\nu1,a,3\nu2,b,1\n")
    (parts / "part-00001.csv").write_text("user_id,item_id,timestamp\n")  # a part with no rows
    (parts / "part-00003.csv").write_text("user_id,item_id,timestamp\nu1,b,2\n")
    (parts / "part-00004.csv.gz").write_bytes(gzip.compress(b""))  # a compressed part of nothing
    log = read_log("csv", parts)
    assert rows(log) == [("u1", "a", 3.0), ("u2", "b", 1.0), ("u1", "b", 2.0)]
    assert log.split is None and [p.rsplit("/", 1)[1] for p in log.sources] == [
        "part-00000.csv", "part-00001.csv", "part-00003.csv"
    ]
    table = pa.table({"user_id": ["u1", "u2"], "item_id": ["a", "b"], "timestamp": [3, 1]})
    (tmp_path / "log.parquet").mkdir()
    pq.write_table(table.slice(0, 1), tmp_path / "log.parquet" / "part-00000.snappy.parquet")
    pq.write_table(table.slice(1), tmp_path / "log.parquet" / "part-00001.snappy.parquet")
    assert rows(read_log("csv", tmp_path / "log.parquet")) == [("u1", "a", 3.0), ("u2", "b", 1.0)]


def test_a_parquet_split_set_keeps_every_split(tmp_path):
    for split, user in (("train", "u1"), ("valid", "u2"), ("test", "u3")):
        pq.write_table(pa.table({"user_id": [user], "item_id": ["a"], "timestamp": [1]}), tmp_path / f"{split}.parquet")
    log = read_log("csv", tmp_path)
    assert [user for user, _, _ in rows(log)] == ["u1", "u2", "u3"] and log.split.tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({}, "is a directory with no data file"),
        ({"_SUCCESS": ""}, "is a directory with no data file"),
        ({"date=1/part-0.csv": "user_id,item_id,timestamp\nu,i,1\n"}, r"holds directories \(date=1\): a partitioned table"),
        ({f"part-{i}.csv": "user_id,item_id,timestamp\n" for i in range(2)}, "in: 2 empty files, no interactions"),
        ({"part-0.csv": "x", "part-1.parquet": "x"}, r"mixes Parquet and text files \(part-1.parquet, part-0.csv\)"),
    ],
)
def test_a_directory_that_is_no_log_is_named(tmp_path, files, message):
    for name, text in files.items():
        (tmp_path / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "in" / name).write_text(text)
    (tmp_path / "in").mkdir(exist_ok=True)
    with pytest.raises(DataError, match=message):
        read_log("csv", tmp_path / "in")


def test_parquet_integer_ids_become_tokens(tmp_path):
    table = pa.table({"user_id": [5, 6], "item_id": [7, 7], "timestamp": [1.0, 2.0]})
    pq.write_table(table, tmp_path / "a.parquet")
    assert rows(read_log("csv", tmp_path / "a.parquet")) == [("5", "7", 1.0), ("6", "7", 2.0)]


@pytest.mark.parametrize(
    ("fmt", "name", "text", "message"),
    [
        ("comirec", "log.txt", "u,i,1\nu,i,2,3\n", r"log.txt, line 2: expected 3 fields .* got 4"),
        ("comirec", "log.txt", "u,i,1\nu,i\n", r"log.txt, line 2: expected 3 fields .* got 2"),
        (
            "comirec",
            "log.txt",
            "u,i,1\n\nu,i,soon\n",
            r"log.txt, line 3: field 'time_stamp' must be a number, got 'soon'",
        ),
        ("comirec", "log.txt", "u,i,\n", r"line 1: field 'time_stamp' must be a number, got ''"),
        (
            "movielens",
            "ratings.dat",
            "1::2::x::4\n",
            r"ratings.dat, line 1: field 'rating' must be a number",
        ),
        (
            "recbole",
            "a.inter",
            "user_id:token\titem_id:token\ttimestamp:float\nu\ti\tt\n",
            r"a.inter, line 2: field 'timestamp'",
        ),
        ("comirec", "log.txt", "", r"log.txt: empty file"),
        ("csv", "a.csv", "", r"a.csv: empty file"),
        ("csv", "a.csv", "user_id,item_id,timestamp\n", r"a.csv: empty file, no interactions"),
        (
            "csv",
            "a.csv",
            "user,item_id,timestamp\nu,i,1\n",
            r"a.csv: missing column 'user_id'; the file has: user, item_id, timestamp",
        ),
    ],
)
def test_bad_input_names_file_line_and_field(tmp_path, fmt, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(DataError, match=message):
        read_log(fmt, tmp_path / name)


def test_unknown_format_and_missing_file(tmp_path):
    with pytest.raises(DataError, match="valid formats: comirec, movielens, recbole, csv"):
        read_log("json", tmp_path)
    with pytest.raises(FileNotFoundError):
        read_log("csv", tmp_path / "nope.csv")
