"""Tests for tfcroloss.pipelines.retrieval against a NumPy argsort reference."""

import os

import numpy as np
import pytest

from tfcroloss.pipelines.retrieval import agreement, build_index, load_index
from tfcroloss.pipelines.retrieval.exact import ExactIndex
from tfcroloss.pipelines.retrieval.scann import (
    ScannIndex,
    scann_parameters,
    scann_settings,
    search_batch_size,
)


def reference_top_k(embeddings, queries, k, ids=None):
    scores = queries @ embeddings.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    ids = np.arange(len(embeddings)) if ids is None else ids
    return np.take_along_axis(scores, order, axis=1), ids[order]


def clustered(num_items, dim, num_queries, seed=0):
    """L2-normalised points around 50 centres; queries from the same distribution."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((50, dim))
    points = centres[rng.integers(50, size=num_items + num_queries)]
    points += 0.3 * rng.standard_normal(points.shape)
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return points[:num_items].astype(np.float32), points[num_items:].astype(np.float32)


@pytest.fixture(scope="module")
def catalog():
    return clustered(5_000, 16, 100)


@pytest.mark.parametrize(
    ("num_items", "k", "with_ids", "chunk_size", "batch"),
    [
        (50, 5, False, 262_144, 64),
        (50, 50, True, 7, 3),  # k = n, chunks smaller than k, several query batches
        (1_000, 20, True, 128, 64),
    ],
)
def test_exact_matches_argsort(num_items, k, with_ids, chunk_size, batch):
    rng = np.random.default_rng(num_items + k)
    embeddings = rng.standard_normal((num_items, 8)).astype(np.float32)
    queries = rng.standard_normal((10, 8)).astype(np.float32)
    ids = np.arange(1, num_items + 1) * 7 if with_ids else None
    index = ExactIndex(embeddings, ids, chunk_size=chunk_size, query_batch_size=batch)
    scores, found = index.search(queries, k)
    want_scores, want_ids = reference_top_k(embeddings, queries, k, ids)
    assert found.dtype == np.int64 and scores.dtype == np.float32
    assert index.is_exact and index.num_items == num_items
    np.testing.assert_array_equal(found, want_ids)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)


def test_scann_brute_force_equals_exact(catalog):
    embeddings, queries = catalog
    ids = np.arange(1, len(embeddings) + 1)
    index = build_index("scann", embeddings, ids, k_default=20)
    assert not index.params["partition"] and index.params["scoring"] == "brute_force"
    assert not index.is_exact
    scores, found = index.search(queries, 20)
    want_scores, want_ids = reference_top_k(embeddings, queries, 20, ids)
    np.testing.assert_array_equal(found, want_ids)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scoring", ["ah", "brute_force"])
def test_scann_tree_agrees_with_exact(catalog, tmp_path, scoring):
    embeddings, queries = catalog
    ids = np.arange(1, len(embeddings) + 1)
    index = ScannIndex(embeddings, ids, partition=True, scoring=scoring, k_default=50)
    assert index.params["num_leaves"] == 71
    scores, found = index.search(queries, 50)
    _, want_ids = reference_top_k(embeddings, queries, 50, ids)
    assert agreement(found, want_ids) >= 0.9
    assert np.all(np.diff(scores, axis=1) <= 0)
    np.testing.assert_allclose(
        scores, np.sum(queries[:, None] * embeddings[found - 1], -1), atol=1e-5
    )

    index.save(tmp_path / "scann")
    restored = load_index(tmp_path / "scann")
    assert isinstance(restored, ScannIndex) and restored.params == index.params
    restored_scores, restored_ids = restored.search(queries, 50)
    np.testing.assert_array_equal(restored_ids, found)
    np.testing.assert_array_equal(restored_scores, scores)


def test_exact_save_load_round_trip(tmp_path):
    embeddings, queries = clustered(300, 8, 5)
    index = build_index("exact", embeddings, np.arange(1, 301))
    index.save(tmp_path / "exact")
    restored = load_index(tmp_path / "exact")
    assert isinstance(restored, ExactIndex)
    for got, want in zip(restored.search(queries, 10), index.search(queries, 10), strict=True):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(FileExistsError):
        index.save(tmp_path / "exact")


def test_scann_parameters_follow_catalog_size():
    small, large = scann_parameters(1_000, 10), scann_parameters(1_700_000, 500)
    assert not small["partition"] and small["scoring"] == "brute_force"
    assert large["partition"] and large["scoring"] == "brute_force"
    ah = scann_parameters(1_700_000, 50)
    assert ah["scoring"] == "ah"
    assert large["num_leaves"] == ah["num_leaves"] == 1304
    # exact scoring of the searched leaves searches a larger share (7%) than AH + re-scoring (4%)
    assert (large["num_leaves_to_search"], ah["num_leaves_to_search"]) == (92, 53)
    assert (ah["reorder"], ah["dimensions_per_block"]) == (200, 1)
    assert scann_parameters(1_700_000, 100)["reorder"] == 400


def test_agreement():
    exact = np.array([[1, 2, 3], [4, 5, 6]])
    assert agreement(exact, exact) == 1.0
    assert agreement(np.array([[3, 2, 9], [-1, -1, -1]]), exact) == pytest.approx(2 / 6)
    with pytest.raises(ValueError, match="one shape"):
        agreement(exact[:, :2], exact)


def test_bad_arguments_raise():
    embeddings = np.eye(4, dtype=np.float32)
    with pytest.raises(ValueError, match="unknown index kind 'faiss'; valid index kinds: exact, scann"):
        build_index("faiss", embeddings)
    index = build_index("exact", embeddings)
    with pytest.raises(ValueError, match="k must be in 1..4 "):
        index.search(embeddings, 5)
    with pytest.raises(ValueError, match="shape \\[Q, 4\\]"):
        index.search(embeddings[:, :3], 1)
    with pytest.raises(ValueError, match="valid scoring methods: ah, brute_force"):
        ScannIndex(embeddings, scoring="lut")
    with pytest.raises(ValueError, match="unique"):
        build_index("exact", embeddings, ids=np.array([1, 1, 2, 3]))


def test_scann_searches_two_batches_per_core(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert [search_batch_size(n) for n in (1, 8, 10_000)] == [1, 2, 2_500]


def test_scann_marks_what_its_searched_leaves_cannot_fill(catalog):
    embeddings, queries = catalog
    ids = np.arange(1, len(embeddings) + 1)
    index = ScannIndex(embeddings, ids, partition=True, scoring="brute_force", k_default=50)
    k = 200  # more than one leaf of ~70 items holds
    scores, found = index.search(queries, k, leaves_to_search=1)
    missing = found == -1
    assert missing.any() and not missing.all()
    assert np.all(np.isneginf(scores[missing])) and np.all(np.isfinite(scores[~missing]))
    assert np.all(missing[:, 1:] >= missing[:, :-1])  # found items first, then the gaps
    rows, columns = np.nonzero(~missing)
    np.testing.assert_allclose(
        scores[rows, columns], np.sum(queries[rows] * embeddings[found[rows, columns] - 1], -1), atol=1e-5
    )


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"num_leaves": 301}, r"num_leaves must be within \[1, 300\] \(the catalog's 300 items\), got 301"),
        ({"num_leaves": 10_000_000}, r"num_leaves must be within \[1, 300\] .*got 10,000,000"),
        ({"num_leaves": 10, "num_leaves_to_search": 11}, r"num_leaves_to_search must be within \[1, 10\] \(num_leaves\)"),
        ({"num_leaves": 20, "training_sample_size": 10},
         r"training_sample_size must be within \[20, 300\] \(num_leaves to the catalog's items\), got 10"),
        ({"num_leaves_to_search": 0}, r"num_leaves_to_search must be an integer >= 1, got 0"),
        ({"reorder": -1}, r"reorder must be an integer >= 1, got -1"),
        ({"num_leaves": 2.5}, r"num_leaves must be an integer >= 1, got 2.5"),
        ({"scoring": "lut"}, r"valid scoring methods: ah, brute_force"),
    ],
)
def test_scann_settings_are_checked_against_the_catalog(overrides, match):
    with pytest.raises(ValueError, match=match):
        scann_settings(300, 10, **overrides)


def test_scann_settings_search_a_share_of_the_leaves_given():
    # 300 items: sqrt -> 17 leaves by default, all of them searched (20k candidates wanted);
    # with 5 leaves given, the leaves searched follow them instead of staying at 17.
    assert scann_settings(300, 10)["num_leaves"] == 17
    five = scann_settings(300, 10, partition=True, num_leaves=5)
    assert (five["num_leaves"], five["num_leaves_to_search"], five["k_default"]) == (5, 5, 10)
    assert scann_settings(300, 10, num_leaves=300, num_leaves_to_search=300)["training_sample_size"] == 300
    with pytest.raises(TypeError, match="unknown ScaNN settings: leaves"):
        scann_settings(300, 10, leaves=3)


def test_scann_index_refuses_more_leaves_than_items_before_scann_runs():
    with pytest.raises(ValueError, match=r"num_leaves must be within \[1, 4\]"):
        ScannIndex(np.eye(4, dtype=np.float32), partition=True, num_leaves=5)
