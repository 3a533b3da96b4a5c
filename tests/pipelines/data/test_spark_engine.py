"""``prepare --engine spark`` writes the NumPy engine's prepared data set byte for byte.

One ``local[2]`` SparkSession serves the module (Spark starts in tens of seconds); input files
are split in many small partitions, so positions run across partitions as on a large log.
"""

from __future__ import annotations

import dataclasses
import gzip
import lzma
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tfcroloss.pipelines.data import DataError
from tfcroloss.pipelines.data.prepare import PrepareConfig, prepare_file
from tfcroloss.pipelines.data.synthetic import write_synthetic

pytest.importorskip("pyspark")
if shutil.which("java") is None:
    pytest.skip("no Java for Spark", allow_module_level=True)

from tfcroloss.pipelines.data import spark_engine  # noqa: E402
from tfcroloss.pipelines.data.spark_engine import (  # noqa: E402
    local_settings,
    log_bytes,
    prepare_spark,
    spark_session,
)

# Ties in popularity and in time, a repeated row, users and items filtered out (as in
# test_prepare's worked example), and one more user who keeps her rows.
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
erin,w,4
erin,y,4
erin,x,4
"""


@pytest.fixture(scope="module")
def spark():
    session = spark_session(
        "local[2]",
        {
            "spark.ui.enabled": "false",
            "spark.sql.shuffle.partitions": "3",
            "spark.sql.files.maxPartitionBytes": "2048",
            "spark.sql.files.openCostInBytes": "0",
            "spark.driver.memory": "1g",
        },
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def test_local_settings_scale_with_the_cores_and_yield_to_the_callers(spark):
    assert local_settings("local[3]")["spark.sql.shuffle.partitions"] == "12"
    assert local_settings("local")["spark.sql.shuffle.partitions"] == "4"
    # a larger log: one partition per 256 MiB of text (adaptive execution merges small ones)
    assert local_settings("local[2]", input_bytes=33 * 2**30)["spark.sql.shuffle.partitions"] == "132"
    assert local_settings("local[*]")["spark.sql.adaptive.enabled"] == "true"
    assert spark.conf.get("spark.sql.shuffle.partitions") == "3"  # the fixture's setting wins
    assert spark.conf.get("spark.serializer") == "org.apache.spark.serializer.KryoSerializer"
    assert spark.conf.get("spark.io.compression.codec") == "zstd"


def test_log_bytes_counts_compressed_files_three_times(tmp_path):
    (tmp_path / "log.csv").write_bytes(b"u,i,t\n" * 100)
    with gzip.open(tmp_path / "log.csv.gz", "wb") as handle:
        handle.write(b"u,i,t\n" * 100)
    packed = (tmp_path / "log.csv.gz").stat().st_size
    assert log_bytes(tmp_path / "log.csv") == 600
    assert log_bytes(tmp_path / "log.csv.gz") == 3 * packed
    assert log_bytes(tmp_path) == 600 + 3 * packed  # a directory: its files
    assert log_bytes(tmp_path / "missing.csv") == 0  # prepare names the missing file


def files_of(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def assert_same(spark, tmp_path, fmt, source, config, **options):
    expected = prepare_file(fmt, source, tmp_path / "numpy", config=config, **options)
    metadata = prepare_spark(spark, fmt, source, tmp_path / "spark", config=config, **options)
    numpy_files, spark_files = files_of(tmp_path / "numpy"), files_of(tmp_path / "spark")
    assert sorted(spark_files) == sorted(numpy_files)
    for name, data in numpy_files.items():
        assert spark_files[name] == data, name
    assert metadata == expected.metadata
    assert not (tmp_path / "spark.spark-work").exists()  # the work directory goes once the output is complete
    return expected


def test_ties_duplicates_and_filtered_users_and_items(spark, tmp_path):
    (tmp_path / "log.txt").write_text(EXAMPLE)
    config = PrepareConfig(min_user_count=3, min_item_count=2, users_per_shard=1, train_fraction=0.5)
    dataset = assert_same(spark, tmp_path, "comirec", tmp_path / "log.txt", config)
    assert dataset.metadata["dropped"]["duplicates"] == 1 and dataset.metadata["dropped"]["items"] == 2


def test_a_compressed_synthetic_log_iteratively_filtered(spark, tmp_path):
    write_synthetic(tmp_path / "log.txt", "tiny", seed=2)
    with open(tmp_path / "log.txt", "rb") as plain, gzip.open(tmp_path / "log.txt.gz", "wb") as packed:
        shutil.copyfileobj(plain, packed)
    config = PrepareConfig(min_user_count=6, min_item_count=6, iterative_filter=True, users_per_shard=16)
    dataset = assert_same(spark, tmp_path, "comirec", tmp_path / "log.txt.gz", config)
    assert len(dataset.train.shards) == 0  # in memory; on disk: several shards per split
    assert len(list((tmp_path / "spark" / "train").glob("*.parquet"))) > 2


def test_csv_without_timestamps_keeping_duplicates_and_a_split_set(spark, tmp_path):
    lines = ["user;item"] + [f"u{(7 * i) % 13};i{(5 * i) % 9}" for i in range(120)] + ["u1;i1", "u1;i1"]
    (tmp_path / "log.csv").write_text("\n".join(lines) + "\n")
    config = PrepareConfig(min_user_count=2, min_item_count=2, drop_duplicates=False, users_per_shard=4)
    assert_same(spark, tmp_path / "a", "csv", tmp_path / "log.csv", config,
                user_column="user", item_column="item", time_column=None)
    (tmp_path / "b_train.txt").write_text("u1,i1,0\nu1,i2,1\nu4,i2,3\nu4,i1,3\n")
    (tmp_path / "b_valid.txt").write_text("u2,i2,0\n")
    (tmp_path / "b_test.txt").write_text("u3,i1,0\nu3,i3,1\n")
    assert_same(spark, tmp_path / "c", "comirec", tmp_path / "b_train.txt", PrepareConfig())


def test_a_directory_of_gzip_parts_and_a_parquet_split_set(spark, tmp_path):
    """Spark's own output as input: parts in name order (each gzip part one task), one empty."""
    write_synthetic(tmp_path / "log.txt", "tiny", seed=4)
    lines = (tmp_path / "log.txt").read_bytes().splitlines(keepends=True)
    parts = tmp_path / "parts"
    parts.mkdir()
    (parts / "_SUCCESS").write_bytes(b"")
    (parts / "part-00001.gz").write_bytes(b"")  # left out, as is a gzip of nothing
    (parts / "part-00003.gz").write_bytes(gzip.compress(b""))
    for index, start in enumerate(range(0, len(lines), len(lines) // 3 + 1)):
        (parts / f"part-{2 * index:05d}.gz").write_bytes(gzip.compress(b"".join(lines[start : start + len(lines) // 3 + 1])))
    config = PrepareConfig(min_user_count=6, min_item_count=6, users_per_shard=16)
    whole = prepare_file("comirec", tmp_path / "log.txt", tmp_path / "whole", config=config)
    dataset = assert_same(spark, tmp_path / "a", "comirec", parts, config)
    assert dataset.metadata["read"] == whole.metadata["read"] and len(dataset.metadata["sources"]) == 3
    assert files_of(tmp_path / "a" / "spark" / "train") == files_of(tmp_path / "whole" / "train")
    split_set = tmp_path / "split"
    split_set.mkdir()
    for index, split in enumerate(("train", "valid", "test")):
        users, items, times = zip(*[(f"{split}{u}", f"i{(u * 7 + k) % 5}", k) for u in range(4) for k in range(3 + index)], strict=True)
        pq.write_table(pa.table({"user_id": users, "item_id": items, "timestamp": times}), split_set / f"{split}.parquet")
    dataset = assert_same(spark, tmp_path / "b", "csv", split_set, PrepareConfig())
    assert {name: split.num_users for name, split in dataset.splits.items()} == {"train": 4, "valid": 4, "test": 4}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("u1,i1,1\nu2,i2,nan\n", "log.txt, record of user_id 'u2': field 'time_stamp' must be a finite number, got 'nan'"),
        ("u1,i1,1\nu2,i2,soon\n", "log.txt, record of user_id 'u2': field 'time_stamp' must be a number, got 'soon'"),
        ("u1,i1,1\nu2,i2,3,4\n", r"log.txt, record 'u2,i2,3,4': expected 3 fields \(user_id, item_id, time_stamp\)"),
        ("u1,,1\n", "log.txt, record of user_id 'u1': field 'item_id' must be a non-empty id"),
    ],
)
def test_bad_records_are_named(spark, tmp_path, content, message):
    (tmp_path / "log.txt").write_text(content)
    with pytest.raises(DataError, match=message):
        prepare_spark(spark, "comirec", tmp_path / "log.txt", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "out.spark-work").exists()


def test_a_compression_spark_cannot_read_is_named(spark, tmp_path):
    with lzma.open(tmp_path / "log.txt.xz", "wt") as out:
        out.write(EXAMPLE)
    with pytest.raises(DataError, match=r"log.txt.xz: xz-compressed; --engine spark reads gzip named \*.gz"):
        prepare_spark(spark, "comirec", tmp_path / "log.txt.xz", tmp_path / "out")


def counted(monkeypatch, name, *, fail_at=None):
    """Replaces ``spark_engine.NAME`` by a wrapper recording each call's arguments, which raises
    (a kill) at call number ``fail_at``."""
    calls, function = [], getattr(spark_engine, name)

    def wrapper(*args, **kwargs):
        calls.append(args)
        if len(calls) == fail_at:
            raise RuntimeError("killed")
        return function(*args, **kwargs)

    monkeypatch.setattr(spark_engine, name, wrapper)
    return calls


def test_a_run_killed_in_a_filter_pass_goes_on_from_there(spark, tmp_path, monkeypatch):
    write_synthetic(tmp_path / "log.txt", "tiny", seed=2)
    config = PrepareConfig(min_user_count=6, min_item_count=6, iterative_filter=True, users_per_shard=16)
    prepare_spark(spark, "comirec", tmp_path / "log.txt", tmp_path / "whole", config=config)
    passes = counted(monkeypatch, "_filter_pass", fail_at=2)
    with pytest.raises(RuntimeError, match="killed"):
        prepare_spark(spark, "comirec", tmp_path / "log.txt", tmp_path / "spark", config=config)
    work = tmp_path / "spark.spark-work"
    assert not (tmp_path / "spark").exists()
    assert {path.name for path in work.iterdir()} == {"made_from.json", "log.json", "users_tokens", "users_tokens.json",
                                                      "items_tokens", "items_tokens.json", "rows.json", "kept-1", "kept-1.json"}
    stored = [pq.ParquetFile(path).metadata for path in (work / "kept-1").glob("*.parquet")]
    assert {m.row_group(g).column(c).compression for m in stored for g in range(m.num_row_groups)
            for c in range(m.num_columns)} == {"ZSTD"}
    logs, passes = counted(monkeypatch, "_numbered_log"), counted(monkeypatch, "_filter_pass")
    assert_same(spark, tmp_path, "comirec", tmp_path / "log.txt", config)
    assert logs == [] and passes and all(source != "rows" for _, source, *_ in passes)  # the first pass was not redone
    assert files_of(tmp_path / "spark") == files_of(tmp_path / "whole")


def test_another_setting_or_input_starts_afresh(spark, tmp_path, monkeypatch, capsys):
    (tmp_path / "log.txt").write_text(EXAMPLE)
    config = PrepareConfig(min_user_count=3, min_item_count=2, users_per_shard=1, train_fraction=0.5)
    counted(monkeypatch, "_filter_pass", fail_at=1)
    with pytest.raises(RuntimeError, match="killed"):
        prepare_spark(spark, "comirec", tmp_path / "log.txt", tmp_path / "spark", config=config)
    logs = counted(monkeypatch, "_numbered_log")
    capsys.readouterr()
    assert_same(spark, tmp_path, "comirec", tmp_path / "log.txt", dataclasses.replace(config, seed=7))
    assert capsys.readouterr().err == (
        f"{tmp_path / 'spark.spark-work'}: made with other settings (seed: {config.seed} -> 7); starting afresh\n"
    )
    assert len(logs) == 1

    counted(monkeypatch, "_filter_pass", fail_at=1)
    with pytest.raises(RuntimeError, match="killed"):
        prepare_spark(spark, "comirec", tmp_path / "log.txt", tmp_path / "b" / "spark", config=config)
    with open(tmp_path / "log.txt", "a") as log:
        log.write("erin,q,5\n")
    capsys.readouterr()
    assert_same(spark, tmp_path / "b", "comirec", tmp_path / "log.txt", config)
    assert capsys.readouterr().err == (
        f"{tmp_path / 'b' / 'spark.spark-work'}: made from other input ({tmp_path / 'log.txt'}: another size or time); starting afresh\n"
    )


def test_an_existing_output_names_the_work_directory_left_beside_it(spark, tmp_path):
    """A run killed after publishing its output (or one with --overwrite) leaves the work directory."""
    (tmp_path / "log.txt").write_text(EXAMPLE)
    (tmp_path / "spark").mkdir()
    with pytest.raises(FileExistsError, match="already exists; choose another --output or --overwrite$"):
        prepare_spark(spark, "comirec", tmp_path / "log.txt", tmp_path / "spark")
    (tmp_path / "spark.spark-work").mkdir()
    with pytest.raises(FileExistsError, match=r"or --overwrite \(which goes on from .*spark\.spark-work, left by an earlier run\)"):
        prepare_spark(spark, "comirec", tmp_path / "log.txt", tmp_path / "spark")


def test_the_command_prints_each_phase_and_writes_the_numpy_result(spark, tmp_path, capsys):
    from tfcroloss.pipelines import cli

    (tmp_path / "log.txt").write_text(EXAMPLE)
    common = ["--format", "comirec", "--input", str(tmp_path / "log.txt"), "--min-user-count", "3", "--min-item-count", "2"]
    assert cli.main(["prepare", *common, "--output", str(tmp_path / "numpy")]) == 0
    capsys.readouterr()
    assert cli.main(["prepare", "--engine", "spark", "--spark-master", "local[2]", *common, "--output", str(tmp_path / "spark")]) == 0
    phases = [line.split(": ")[1] for line in capsys.readouterr().out.splitlines() if line.startswith("spark: ")]
    assert phases[0] == "read, check and number the rows; first positions" and phases[-1] == "vocabularies and metadata (driver)"
    assert len(phases) == 8
    assert files_of(tmp_path / "spark") == files_of(tmp_path / "numpy")
