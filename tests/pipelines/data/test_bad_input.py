"""Real logs and real mistakes: each one prepares, or fails as one line that names file and line.

Every case goes through ``tfcroloss prepare`` (in process) and checks the exit status, that stderr
holds exactly one line and no traceback, and what that line says.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import time

import numpy as np
import pyarrow as pa
import pytest

from tfcroloss.pipelines import cli
from tfcroloss.pipelines.data.dataset import PreparedDataset
from tfcroloss.pipelines.files import atomic_directory, remove_stale_temporaries

HEADER = "user_id,item_id,timestamp\n"
LOG = "".join(f"u{u},i{(u * 7 + k) % 5},{100 * u + k}\n" for u in range(6) for k in range(6))


def prepare(capsys, path, *extra):
    """(exit status, stderr, prepared data set or None) of ``tfcroloss prepare --format csv``."""
    out = path.parent / f"out-{path.name}"
    argv = ["prepare", "--format", "csv", "--input", str(path), "--output", str(out)]
    status = cli.main([*argv, "--min-user-count", "1", "--min-item-count", "1", *extra])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if status == 0:
        return status, err, PreparedDataset.load(out)
    assert status == 2 and err.count("\n") == 1, err
    assert not out.exists()
    return status, err, None


def same_data(left: PreparedDataset, right: PreparedDataset) -> bool:
    return left.item_tokens.tolist() == right.item_tokens.tolist() and all(
        np.array_equal(left.splits[name].items, right.splits[name].items) for name in left.splits
    )


@pytest.fixture
def reference(tmp_path, capsys):
    path = tmp_path / "plain.csv"
    path.write_text(HEADER + LOG)
    return prepare(capsys, path)[2]


def _zstd(data: bytes, path):
    with pa.output_stream(str(path), compression="zstd") as out:
        out.write(data)


@pytest.mark.parametrize(
    ("name", "write"),
    [
        ("bom.csv", lambda data, p: p.write_bytes(b"\xef\xbb\xbf" + data)),
        ("crlf.csv", lambda data, p: p.write_bytes(data.replace(b"\n", b"\r\n"))),
        ("log.csv.gz", lambda data, p: p.write_bytes(gzip.compress(data))),
        ("log.csv.bz2", lambda data, p: p.write_bytes(bz2.compress(data))),
        ("log.csv.xz", lambda data, p: p.write_bytes(lzma.compress(data))),
        ("log.csv.zst", _zstd),
        ("gzip-without-ending.csv", lambda data, p: p.write_bytes(gzip.compress(data))),
        ("bom.csv.gz", lambda data, p: p.write_bytes(gzip.compress(b"\xef\xbb\xbf" + data))),
    ],
)
def test_encodings_and_compressions_read_the_same(tmp_path, capsys, reference, name, write):
    write((HEADER + LOG).encode(), tmp_path / name)
    status, _, dataset = prepare(capsys, tmp_path / name)
    assert status == 0 and same_data(dataset, reference)


def test_tab_separated_and_compressed_keeps_its_delimiter(tmp_path, capsys, reference):
    (tmp_path / "log.tsv.gz").write_bytes(gzip.compress((HEADER + LOG).replace(",", "\t").encode()))
    assert same_data(prepare(capsys, tmp_path / "log.tsv.gz")[2], reference)


def test_latin1_reads_with_encoding_and_is_named_without(tmp_path, capsys):
    path = tmp_path / "latin.csv"
    path.write_bytes((HEADER + "".join(f"zoë{u},café,{u}\n" for u in range(5))).encode("latin-1"))
    status, err, _ = prepare(capsys, path)
    assert "latin.csv, line 2: byte 0xeb is not valid utf-8" in err and "--encoding" in err
    assert "unknown encoding 'klingon'" in prepare(capsys, path, "--encoding", "klingon")[1]
    status, _, dataset = prepare(capsys, path, "--encoding", "latin-1")
    assert status == 0 and dataset.item_tokens.tolist() == ["", "café"]
    assert sorted(dataset.user_tokens.tolist()) == [f"zoë{u}" for u in range(5)]


def test_a_log_without_timestamps_is_in_file_order(tmp_path, capsys):
    path = tmp_path / "order.csv"
    path.write_text("user_id,item_id\nu,c\nu,a\nu,b\nv,a\nv,c\nw,b\n")
    status, err, _ = prepare(capsys, path)
    assert "missing column 'timestamp'" in err and "--time-column none" in err
    status, _, dataset = prepare(capsys, path, "--time-column", "none", "--train-fraction", "1",
                                 "--valid-fraction", "0")
    tokens = dataset.item_tokens
    assert [tokens[i] for i in dataset.train.sequence(0)] == ["c", "a", "b"]
    assert dataset.metadata["settings"]["time_column"] is None


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("u9,i1,nan", "line 3: field 'timestamp' must be a finite number, got 'nan'"),
        ("u9,i1,inf", "line 3: field 'timestamp' must be a finite number, got 'inf'"),
        ("u9,i1,-inf", "line 3: field 'timestamp' must be a finite number, got '-inf'"),
        ("u9,,5", "line 3: field 'item_id' must be a non-empty id without line breaks, got ''"),
        ('u9,"",5', "line 3: field 'item_id' must be a non-empty id without line breaks, got ''"),
        (',i1,5', "line 3: field 'user_id' must be a non-empty id without line breaks, got ''"),
        ('u9,"i\n1",5', "line 4: field 'item_id' must be a non-empty id without line breaks, got 'i\\n1'"),
        ("u9,i1,5,6", "line 3: expected 3 fields (user_id, item_id, timestamp), got 4"),
        ("u9,i1,soon", "line 3: field 'timestamp' must be a number, got 'soon'"),
    ],
)
def test_bad_values_are_refused_at_prepare_time_with_their_line(tmp_path, capsys, line, message):
    path = tmp_path / "bad.csv"
    path.write_text(HEADER + "u1,i1,1\n" + line + "\n" + "u2,i2,2\n")
    status, err, _ = prepare(capsys, path)
    assert status == 2 and f"bad.csv, {message}" in err, err


def test_bad_value_in_a_compressed_file_is_named_too(tmp_path, capsys):
    path = tmp_path / "bad.csv.gz"
    path.write_bytes(gzip.compress((HEADER + "u1,i1,1\nu2,i2,nan\n").encode()))
    assert "bad.csv.gz, line 3: field 'timestamp' must be a finite number" in prepare(capsys, path)[1]


def test_a_truncated_archive_is_refused(tmp_path, capsys):
    path = tmp_path / "cut.csv.gz"
    archive = gzip.compress((HEADER + LOG * 50).encode())
    path.write_bytes(archive[: len(archive) // 2])
    status, err, _ = prepare(capsys, path)
    assert status == 2 and "cut.csv.gz: cannot decompress" in err


def test_an_over_long_line_is_refused(tmp_path, capsys):
    path = tmp_path / "long.csv"
    path.write_text(HEADER + "u1,i1,1\n" + "u2," + "x" * 10_000_000 + ",2\n")
    status, err, _ = prepare(capsys, path)
    assert status == 2 and "long.csv, line 3" in err


@pytest.mark.parametrize("fmt", ["csv", "recbole"])
def test_a_directory_or_missing_input(tmp_path, capsys, fmt):
    out = str(tmp_path / "out")
    assert cli.main(["prepare", "--format", fmt, "--input", str(tmp_path), "--output", out]) == 2
    assert "is a directory with no data file" in capsys.readouterr().err
    assert cli.main(["prepare", "--format", fmt, "--input", str(tmp_path / "no.csv"), "--output", out]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no.csv: no such file or directory" in err


def test_output_that_cannot_be_written_fails_before_reading(tmp_path, capsys, monkeypatch):
    path = tmp_path / "log.csv"
    path.write_text(HEADER + LOG)
    read = []
    monkeypatch.setattr("tfcroloss.pipelines.data.prepare.read_log", lambda *a, **k: read.append(1))
    (tmp_path / "afile").write_text("")
    argv = ["prepare", "--format", "csv", "--input", str(path), "--output"]
    assert cli.main([*argv, str(tmp_path / "afile" / "out")]) == 2
    assert "afile is a file, not a directory" in capsys.readouterr().err
    assert not read
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.access(locked, os.W_OK):  # root may write anywhere: nothing to check
        pytest.skip("running as a user who can write to a read-only directory")
    assert cli.main([*argv, str(locked / "out")]) == 2
    assert "no permission to write" in capsys.readouterr().err
    assert not read


def test_yaml_tags_in_set_are_refused(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("data: {path: nowhere}\n")
    argv = ["train", "--config", str(config), "--set", "training.seed=!!python/object:os.system"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "must be plain YAML" in err


def test_leftovers_of_a_killed_writer_are_removed_on_the_next_write(tmp_path, capsys):
    dead = 2**22 + 12345  # above the default pid_max: no such process
    old = time.time() - 3600
    leftovers = [tmp_path / f".data.tmp-{dead}-abc", tmp_path / f".3.tmp-{dead}-x", tmp_path / f".index.old-{dead}-y"]
    for path in leftovers:
        path.mkdir()
        (path / "part").write_text("half written")
        os.utime(path, (old, old))
    mine = tmp_path / f".data.tmp-{os.getpid()}-live"  # a live writer's temporary stays
    mine.mkdir()
    kept = tmp_path / ".hidden-by-user"
    kept.mkdir()
    with atomic_directory(tmp_path / "data") as staging:
        (staging / "x").write_text("new")
    assert not any(path.exists() for path in leftovers)
    assert mine.exists() and kept.exists() and (tmp_path / "data" / "x").exists()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "removed 3 leftover(s) of an interrupted write" in err


def test_tensorflow_checkpoint_temporaries_are_matched_by_pattern(tmp_path, capsys):
    old = time.time() - 3600
    stale, fresh = tmp_path / "ckpt-40_temp", tmp_path / "ckpt-41_temp"
    for path in (stale, fresh):
        path.mkdir()
    os.utime(stale, (old, old))
    removed = remove_stale_temporaries(tmp_path, extra=r"ckpt-\d+_temp")
    assert removed == [stale] and fresh.exists()  # one made after this process started stays
    assert "ckpt-40_temp" in capsys.readouterr().err


def test_native_log_lines_are_filtered_and_the_rest_passes(capfd):
    lines = [
        b"2026-11-23 20:17:30.807180: E external/local_xla/xla/stream_executor/cuda/cuda_platform.cc:51] failed call to cuInit",
        b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        b"W0000 00:00:1795465052.201942   10419 loop_optimizer.cc:934] Skipping loop optimization",
        b"tfcroloss train: error: a real message",
        b"E1123 is not a log line without the rest",
    ]
    with cli._native_logs_hidden():
        os.write(2, b"\n".join(lines) + b"\n")
    assert capfd.readouterr().err == "tfcroloss train: error: a real message\nE1123 is not a log line without the rest\n"


def test_a_directory_of_compressed_split_files_keeps_its_split(tmp_path, capsys):
    """NowPlaying's layout: train/valid/test.csv.gz, tab-separated despite the name, a header."""
    folder = tmp_path / "nowplaying"
    folder.mkdir()
    for number, split in enumerate(("train", "valid", "test")):
        rows = "".join(f"{10 * number + s}\t{(s + k) % 4}\t{1000 * s + k}\n" for s in range(3) for k in range(5))
        (folder / f"{split}.csv.gz").write_bytes(gzip.compress(("session_id\titem_id\ttimestamp\n" + rows).encode()))
    out = tmp_path / "prepared"
    argv = ["prepare", "--format", "csv", "--input", str(folder), "--output", str(out), "--user-column", "session_id"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    dataset = PreparedDataset.load(out)
    assert {name: split.num_users for name, split in dataset.splits.items()} == {"train": 3, "valid": 3, "test": 3}
    assert sorted(dataset.user_tokens[dataset.test.user_index].tolist()) == ["20", "21", "22"]
    assert dataset.metadata["settings"]["split"] == "kept from input files"


def test_the_probe_of_real_world_inputs_reads_or_names_every_case(capsys):
    """benchmarks/probe_prepare_inputs.py: 37 logs and mistakes, none ends in a traceback."""
    from benchmarks import probe_prepare_inputs

    assert probe_prepare_inputs.main([]) == 0, capsys.readouterr().out
