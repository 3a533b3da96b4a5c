"""Synthetic logs and downloads (from local archives only)."""

from __future__ import annotations

import io
import urllib.error
import zipfile

import pytest

from tfcroloss.pipelines import cli
from tfcroloss.pipelines.data.dataset import DataError
from tfcroloss.pipelines.data.download import download
from tfcroloss.pipelines.data.prepare import PrepareConfig, prepare
from tfcroloss.pipelines.data.readers import read_log
from tfcroloss.pipelines.data.synthetic import write_synthetic


def test_synthetic_is_deterministic_and_readable_in_every_format(tmp_path):
    count = write_synthetic(tmp_path / "a.txt", "tiny", seed=1)
    write_synthetic(tmp_path / "b.txt", "tiny", seed=1)
    write_synthetic(tmp_path / "c.txt", "tiny", seed=2)
    assert (tmp_path / "a.txt").read_bytes() == (tmp_path / "b.txt").read_bytes()
    assert (tmp_path / "a.txt").read_bytes() != (tmp_path / "c.txt").read_bytes()
    write_synthetic(tmp_path / "a.csv", "tiny", seed=1, fmt="csv")
    write_synthetic(tmp_path / "a.inter", "tiny", seed=1, fmt="recbole")
    logs = {
        "comirec": read_log("comirec", tmp_path / "a.txt"),
        "csv": read_log("csv", tmp_path / "a.csv"),
        "recbole": read_log("recbole", tmp_path / "a.inter"),
    }
    for log in logs.values():
        assert log.num_interactions == count
        assert (log.items == logs["comirec"].items).all()
    dataset = prepare(logs["comirec"], PrepareConfig())
    assert 150 < dataset.num_users <= 200
    assert dataset.item_counts[1] > 5 * dataset.item_counts[dataset.num_items // 2]  # long tail


def test_synthetic_cli_and_bad_preset(tmp_path, capsys):
    assert (
        cli.main(["data", "synthetic", "--preset", "tiny", "--output", str(tmp_path / "t.txt")])
        == 0
    )
    assert "interactions (tiny, seed 0)" in capsys.readouterr().out
    with pytest.raises(
        DataError, match="unknown preset 'huge'; valid presets: tiny, demo, amazon, taobao"
    ):
        write_synthetic(tmp_path / "x.txt", "huge")


def ml_zip(path):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("ml-1m/ratings.dat", "1::10::5::978300760\n1::11::3::978302109\n")
    return path


def test_download_from_a_local_archive(tmp_path):
    archive = ml_zip(tmp_path / "ml-1m.zip")
    path, fmt = download("movielens-1m", tmp_path / "data", url=archive.as_uri())
    assert (path, fmt) == (tmp_path / "data" / "ml-1m" / "ratings.dat", "movielens")
    assert read_log(fmt, path).num_interactions == 2
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["ml-1m"]


def test_download_failures_are_clear(tmp_path):
    def offline(url):
        raise urllib.error.URLError("Name or service not known")

    with pytest.raises(
        DataError, match="cannot download movielens-1m from https://.*ml-1m.zip: Name"
    ):
        download("movielens-1m", tmp_path, fetch=offline)
    with pytest.raises(DataError, match="archive has no ml-1m/ratings.dat"):
        download("movielens-1m", tmp_path, fetch=lambda url: _zip_bytes())
    with pytest.raises(DataError, match="taobao cannot be downloaded automatically"):
        download("taobao", tmp_path)
    with pytest.raises(DataError, match="unknown data set 'ml'; valid data sets: movielens-100k"):
        download("ml", tmp_path)
    assert list(tmp_path.iterdir()) == []


def _zip_bytes():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("other.txt", "")
    buffer.seek(0)
    return buffer
