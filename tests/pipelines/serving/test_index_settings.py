"""`tfcroloss index` settings are checked against the catalog before any work, and an index that
agrees too little with exact top-k is neither written nor read."""

import json

import pytest

from tfcroloss.pipelines import cli
from tfcroloss.pipelines.serving import index as index_module
from tfcroloss.pipelines.serving.index import (
    DEFAULT_K,
    MIN_AGREEMENT,
    LowAgreement,
    build_version_index,
)
from tfcroloss.pipelines.serving.version import BUILD_FILE, INDEX_DIR, read_metadata


@pytest.fixture
def no_embeddings_read(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the embeddings were read before the settings were checked")

    monkeypatch.setattr(index_module, "load_embeddings", refuse)


@pytest.mark.parametrize(
    "options,match",
    [
        ({"num_leaves": 10_000_000}, r"num_leaves must be within \[1, {n}\] \(the catalog's {n} items\)"),
        ({"partition": True, "num_leaves_to_search": 0}, r"num_leaves_to_search must be an integer >= 1, got 0"),
        ({"partition": True, "num_leaves": 4, "num_leaves_to_search": 5}, r"num_leaves_to_search must be within \[1, 4\]"),
        ({"reorder": -1}, r"reorder must be an integer >= 1, got -1"),
        ({"sample_queries": 0}, r"sample_queries must be an integer >= 1, got 0"),
        ({"k": 1_000_000_000}, r"k must be in 1..{n} \(the catalog size\), an integer; got 1000000000"),
        ({"k": 0}, r"k must be in 1..{n} "),
    ],
)
def test_settings_are_refused_before_any_work(version_dir, no_embeddings_read, options, match):
    num_items = read_metadata(version_dir)["num_items"]
    with pytest.raises(ValueError, match=match.format(n=num_items)):
        build_version_index(version_dir, overwrite=True, **options)


def test_an_index_below_the_floor_is_not_written_and_the_old_one_stays(version_dir):
    before = (version_dir / INDEX_DIR / BUILD_FILE).read_text()
    num_items = read_metadata(version_dir)["num_items"]
    with pytest.raises(LowAgreement, match=rf"agrees 0\.\d+ with exact top-{num_items} on 30 queries, below the floor "
                                           rf"of {MIN_AGREEMENT}; nothing written\. .*1 of 20 leaves searched") as caught:
        build_version_index(version_dir, k=num_items, sample_queries=30, overwrite=True, partition=True,
                            num_leaves=20, num_leaves_to_search=1)
    assert "\n" not in str(caught.value)
    assert (version_dir / INDEX_DIR / BUILD_FILE).read_text() == before
    assert sorted(path.name for path in version_dir.iterdir() if path.name.startswith(".")) == []


def test_k_defaults_to_100_or_the_catalog(version_dir):
    k = min(DEFAULT_K, read_metadata(version_dir)["num_items"])
    record = build_version_index(version_dir, sample_queries=20, overwrite=True)
    assert record["k"] == k and record[f"agreement@{k}"] >= MIN_AGREEMENT


def test_recommend_refuses_an_index_that_recorded_a_low_agreement(version_dir, capsys):
    build_file = version_dir / INDEX_DIR / BUILD_FILE
    info = json.loads(build_file.read_text())
    build_file.write_text(json.dumps({**info, f"agreement@{info['k']}": 0.0}))
    item = (version_dir / "assets" / "item_tokens.txt").read_text().splitlines()[0]
    try:
        status = cli.main(["recommend", "--model", str(version_dir), "--history", item])
        error = capsys.readouterr().err.strip()
        assert status == 2 and "\n" not in error
        assert f"the index agrees 0.0 with exact top-{info['k']} (build.json), below the floor of {MIN_AGREEMENT}" in error
        assert cli.main(["recommend", "--model", str(version_dir), "--history", item, "--index", "exact"]) == 0
        assert json.loads(capsys.readouterr().out)["items"]
    finally:
        build_file.write_text(json.dumps(info))
