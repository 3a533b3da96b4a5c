"""Top-k inner-product retrieval back-ends behind one interface.

Evaluation and serving both call ``index.search(queries, k)`` and get ``(scores, ids)``
sorted by descending score. Two back-ends:

- ``ExactIndex``: exact scores of every item (TensorFlow matmul + ``top_k``, chunked over
  the catalog so memory stays bounded on million-item catalogs).
- ``ScannIndex``: Google's ScaNN (a partitioning tree, then exact or anisotropic-hashing
  scores of the searched leaves), with parameters chosen by ``scann_parameters``.

Indexes map internal row positions to caller ids (``ids``; default ``0..n-1``) and assume
nothing else about them. ``save(directory)`` writes ``index.json`` beside the arrays, so that
``load_index(directory)`` restores either kind.
"""

from __future__ import annotations

import abc
import json
import math
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import tensorflow as tf
from scann.scann_ops.py import scann_ops_pybind

from tfcroloss.pipelines.files import atomic_directory

METADATA_FILE = "index.json"
IDS_FILE = "ids.npy"
PARTITION_MIN_ITEMS = 20_000
"""Below this catalog size ScaNN scores every item (its docs' rule of thumb: 20k)."""
AH_MAX_K = 200
"""From this k on, ScaNN scores the searched leaves exactly instead of with AH."""
SCORINGS = ("ah", "brute_force")


class RetrievalIndex(abc.ABC):
    """Top-k maximum inner product search over a fixed catalog of item embeddings."""

    kind: ClassVar[str]

    def __init__(self, ids: np.ndarray, dim: int):
        self._ids = ids
        self._dim = dim

    @property
    @abc.abstractmethod
    def is_exact(self) -> bool:
        """Whether ``search`` returns the exact top k."""

    @property
    def num_items(self) -> int:
        return len(self._ids)

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def ids(self) -> np.ndarray:
        return self._ids

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Returns float32 ``scores`` and int64 ``ids``, both ``[Q, k]``, best first."""
        scores, positions = self._search(self._check_queries(queries, k), k)
        return scores, self._to_ids(positions)

    @abc.abstractmethod
    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Scores and row positions (``-1`` where fewer than k were found)."""

    @abc.abstractmethod
    def save(self, directory: str | os.PathLike) -> None:
        """Writes the index to a new (or empty) directory."""

    @classmethod
    @abc.abstractmethod
    def load(cls, directory: str | os.PathLike) -> RetrievalIndex:
        """Restores an index written by ``save``."""

    def _to_ids(self, positions: np.ndarray) -> np.ndarray:
        return np.where(positions >= 0, self._ids[np.maximum(positions, 0)], -1)

    def _check_queries(self, queries: np.ndarray, k: int) -> np.ndarray:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self._dim:
            raise ValueError(f"queries must have shape [Q, {self._dim}], got {queries.shape}.")
        if not 1 <= k <= self.num_items:
            raise ValueError(f"k must be in [1, num_items={self.num_items}], got {k}.")
        return queries

    def _metadata(self) -> dict[str, Any]:
        return {"kind": self.kind, "num_items": self.num_items, "dim": self._dim}


class ExactIndex(RetrievalIndex):
    """Exact top-k by inner product: TensorFlow matmul and ``top_k`` over catalog chunks.

    Queries are scored ``query_batch_size`` at a time against ``chunk_size`` items at a
    time; each chunk's top k are merged, so peak memory is about
    ``query_batch_size * chunk_size`` floats per chunk in flight, whatever the catalog size.
    """

    kind = "exact"

    def __init__(
        self,
        embeddings: np.ndarray,
        ids: np.ndarray | None = None,
        *,
        query_batch_size: int = 64,
        chunk_size: int = 262_144,
    ):
        embeddings, ids = _check_catalog(embeddings, ids)
        if query_batch_size < 1 or chunk_size < 1:
            raise ValueError(
                f"query_batch_size and chunk_size must be positive, got "
                f"{query_batch_size} and {chunk_size}."
            )
        super().__init__(ids, embeddings.shape[1])
        self._query_batch_size = query_batch_size
        self._chunks = [
            tf.constant(embeddings[start : start + chunk_size])
            for start in range(0, len(embeddings), chunk_size)
        ]
        self._chunk_size = chunk_size

    @property
    def is_exact(self) -> bool:
        return True

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores = np.empty((len(queries), k), dtype=np.float32)
        positions = np.empty((len(queries), k), dtype=np.int64)
        k_tensor = tf.constant(k, dtype=tf.int32)
        for start in range(0, len(queries), self._query_batch_size):
            stop = start + self._query_batch_size
            batch_scores, batch_positions = _top_k_over_chunks(
                tf.constant(queries[start:stop]), tuple(self._chunks), k_tensor, self._chunk_size
            )
            scores[start:stop] = batch_scores.numpy()
            positions[start:stop] = batch_positions.numpy()
        return scores, positions

    def save(self, directory: str | os.PathLike) -> None:
        def write(path: Path) -> None:
            embeddings = np.concatenate([chunk.numpy() for chunk in self._chunks])
            np.save(path / "embeddings.npy", embeddings)
            np.save(path / IDS_FILE, self._ids)
            _write_json(path / METADATA_FILE, self._metadata())

        with atomic_directory(directory) as staging:
            write(staging)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> ExactIndex:
        path = Path(directory)
        _read_metadata(path, cls.kind)
        return cls(np.load(path / "embeddings.npy"), np.load(path / IDS_FILE))


@tf.function(reduce_retracing=True)
def _top_k_over_chunks(
    queries: tf.Tensor, chunks: tuple[tf.Tensor, ...], k: tf.Tensor, chunk_size: int
) -> tuple[tf.Tensor, tf.Tensor]:
    """``(scores, positions)`` of the top ``k`` over catalog ``chunks``.

    The chunks are unrolled in the graph, so TensorFlow runs independent chunks in
    parallel; each keeps its own top k, and one final ``top_k`` merges them. One trace
    serves every index of the same catalog shape (e.g. each validation of a training run).
    """
    scores, positions = [], []
    for number, chunk in enumerate(chunks):
        chunk_k = tf.minimum(k, tf.shape(chunk)[0])
        values, indices = tf.math.top_k(tf.matmul(queries, chunk, transpose_b=True), chunk_k, sorted=False)
        scores.append(values)
        positions.append(tf.cast(indices, tf.int64) + number * chunk_size)
    values, order = tf.math.top_k(tf.concat(scores, axis=1), k)
    return values, tf.gather(tf.concat(positions, axis=1), order, batch_dims=1)


def scann_parameters(num_items: int, k: int) -> dict[str, Any]:
    """ScaNN settings for a catalog of ``num_items`` searched for the top ``k``.

    Follows ScaNN's ``docs/algorithms.md``: no partitioning below ``PARTITION_MIN_ITEMS``
    items (brute force); above it a tree of about ``sqrt(n)`` leaves, searching at least 5%
    of them and enough for 20k candidates. Leaves are scored with anisotropic hashing
    (``dimensions_per_block=2``, threshold 0.2) and exact re-scoring of ``max(4k, 1000)``
    candidates, except for ``k >= AH_MAX_K``: measured at k=500 on a clustered 1.7M x 32
    catalog (``benchmarks/bench_evaluation.py``), AH needs re-scoring depths that make it
    slower than scoring the searched leaves exactly, which reaches 0.99 agreement with
    exact top-500 at about 5% of the leaves. Every entry can be overridden in ``ScannIndex``.
    """
    if num_items < 1 or k < 1:
        raise ValueError(f"num_items and k must be positive, got {num_items} and {k}.")
    num_leaves = max(1, round(math.sqrt(num_items)))
    items_per_leaf = num_items / num_leaves
    wanted_leaves = max(math.ceil(0.05 * num_leaves), math.ceil(20_000 / items_per_leaf))
    partition = num_items >= PARTITION_MIN_ITEMS
    return {
        "partition": partition,
        "scoring": "ah" if partition and k < AH_MAX_K else "brute_force",
        "num_leaves": num_leaves,
        "num_leaves_to_search": min(num_leaves, wanted_leaves),
        "training_sample_size": min(num_items, 250_000),
        "reorder": max(4 * k, 1_000),
        "dimensions_per_block": 2,
        "anisotropic_threshold": 0.2,
    }


class ScannIndex(RetrievalIndex):
    """Approximate top-k by inner product with ScaNN.

    Arguments left ``None`` take their value from ``scann_parameters(n, k_default)``;
    ``partition=True`` forces a tree on a small catalog; ``scoring`` is one of
    ``SCORINGS``; the AH settings apply only to ``scoring="ah"``. Results that
    ScaNN cannot fill (fewer than k candidates in the searched leaves) come back with id
    ``-1`` and score ``-inf``.
    """

    kind = "scann"

    def __init__(
        self,
        embeddings: np.ndarray,
        ids: np.ndarray | None = None,
        *,
        partition: bool | None = None,
        scoring: str | None = None,
        num_leaves: int | None = None,
        num_leaves_to_search: int | None = None,
        training_sample_size: int | None = None,
        reorder: int | None = None,
        dimensions_per_block: int = 2,
        anisotropic_threshold: float = 0.2,
        k_default: int = 500,
    ):
        embeddings, ids = _check_catalog(embeddings, ids)
        if k_default < 1:
            raise ValueError(f"k_default must be positive, got {k_default}.")
        params = scann_parameters(len(embeddings), min(k_default, len(embeddings)))
        overrides = {
            "partition": partition,
            "scoring": scoring,
            "num_leaves": num_leaves,
            "num_leaves_to_search": num_leaves_to_search,
            "training_sample_size": training_sample_size,
            "reorder": reorder,
            "dimensions_per_block": dimensions_per_block,
            "anisotropic_threshold": anisotropic_threshold,
        }
        params.update({key: value for key, value in overrides.items() if value is not None})
        params["k_default"] = k_default
        if params["scoring"] not in SCORINGS:
            raise ValueError(f"scoring must be one of {SCORINGS}, got {params['scoring']!r}.")
        super().__init__(ids, embeddings.shape[1])
        self.params = params
        self._searcher = _build_scann(embeddings, params)

    @property
    def is_exact(self) -> bool:
        return False

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        leaves_to_search: int | None = None,
        reorder: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """As ``RetrievalIndex.search``; ``leaves_to_search`` and ``reorder`` override the
        built settings for this call (to tune without rebuilding)."""
        queries = self._check_queries(queries, k)
        scores, positions = self._scann_search(queries, k, leaves_to_search, reorder)
        return scores, self._to_ids(positions)

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self._scann_search(queries, k, None, None)

    def _scann_search(
        self, queries: np.ndarray, k: int, leaves: int | None, reorder: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        options: dict[str, int] = {"final_num_neighbors": k}
        if self.params["partition"]:
            options["leaves_to_search"] = leaves or self.params["num_leaves_to_search"]
        if self.params["scoring"] == "ah":
            options["pre_reorder_num_neighbors"] = max(k, reorder or self.params["reorder"])
        positions, scores = self._searcher.search_batched_parallel(queries, **options)
        missing = np.isnan(scores)
        positions = np.where(missing, -1, positions.astype(np.int64))
        scores = np.where(missing, -np.inf, scores).astype(np.float32)
        return scores, positions

    def save(self, directory: str | os.PathLike) -> None:
        def write(path: Path) -> None:
            (path / "searcher").mkdir()
            self._searcher.serialize(str(path / "searcher"), relative_path=True)
            np.save(path / IDS_FILE, self._ids)
            _write_json(path / METADATA_FILE, {**self._metadata(), "params": self.params})

        with atomic_directory(directory) as staging:
            write(staging)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> ScannIndex:
        path = Path(directory)
        metadata = _read_metadata(path, cls.kind)
        index = cls.__new__(cls)
        RetrievalIndex.__init__(index, np.load(path / IDS_FILE), metadata["dim"])
        index.params = metadata["params"]
        index._searcher = scann_ops_pybind.load_searcher(str(path / "searcher"))
        return index


def _build_scann(embeddings: np.ndarray, params: dict[str, Any]) -> Any:
    builder = scann_ops_pybind.builder(embeddings, params["k_default"], "dot_product")
    if params["partition"]:
        builder = builder.tree(
            num_leaves=params["num_leaves"],
            num_leaves_to_search=params["num_leaves_to_search"],
            training_sample_size=params["training_sample_size"],
        )
    if params["scoring"] == "brute_force":
        return builder.score_brute_force().build()
    return (
        builder.score_ah(
            params["dimensions_per_block"],
            anisotropic_quantization_threshold=params["anisotropic_threshold"],
        )
        .reorder(params["reorder"])
        .build()
    )


INDEX_TYPES: dict[str, type[RetrievalIndex]] = {"exact": ExactIndex, "scann": ScannIndex}


def build_index(
    kind: str, embeddings: np.ndarray, ids: np.ndarray | None = None, **overrides: Any
) -> RetrievalIndex:
    """Builds an index of ``kind`` ("exact" or "scann"); ``overrides`` go to its constructor.

    >>> index = build_index("exact", np.eye(3, dtype=np.float32), ids=np.array([10, 11, 12]))
    >>> scores, ids = index.search(np.array([[0.0, 2.0, 1.0]], np.float32), k=2)
    >>> ids.tolist(), scores.tolist()
    ([[11, 12]], [[2.0, 1.0]])
    """
    return _index_type(kind)(embeddings, ids, **overrides)


def load_index(directory: str | os.PathLike) -> RetrievalIndex:
    """Restores any index written by ``RetrievalIndex.save``."""
    kind = json.loads((Path(directory) / METADATA_FILE).read_text())["kind"]
    return _index_type(kind).load(directory)


def agreement(approx_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Mean over queries of ``|approx top-k ∩ exact top-k| / k`` (rows without duplicates).

    >>> agreement(np.array([[1, 2], [3, 4]]), np.array([[2, 1], [3, 5]]))
    0.75
    """
    approx_ids, exact_ids = np.asarray(approx_ids), np.asarray(exact_ids)
    if approx_ids.shape != exact_ids.shape or exact_ids.ndim != 2 or exact_ids.size == 0:
        raise ValueError(
            "approx_ids and exact_ids must be non-empty [Q, k] arrays of one shape, got "
            f"{approx_ids.shape} and {exact_ids.shape}."
        )
    num_queries, k = exact_ids.shape
    vocab, codes = np.unique(np.concatenate([approx_ids, exact_ids]), return_inverse=True)
    rows = np.arange(2 * num_queries, dtype=np.int64)[:, None] % num_queries
    keys = rows * len(vocab) + codes.reshape(2 * num_queries, k)
    approx_keys, exact_keys = keys[:num_queries], np.sort(keys[num_queries:], axis=None)
    positions = np.minimum(np.searchsorted(exact_keys, approx_keys), exact_keys.size - 1)
    return float(np.mean(exact_keys[positions] == approx_keys))


def _index_type(kind: str) -> type[RetrievalIndex]:
    if kind not in INDEX_TYPES:
        raise ValueError(f"Unknown index kind {kind!r}; expected one of {sorted(INDEX_TYPES)}.")
    return INDEX_TYPES[kind]


def _check_catalog(embeddings: np.ndarray, ids: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    if embeddings.ndim != 2 or embeddings.shape[0] == 0:
        raise ValueError(f"embeddings must be a non-empty [n, d] array, got {embeddings.shape}.")
    if ids is None:
        return embeddings, np.arange(len(embeddings), dtype=np.int64)
    ids = np.asarray(ids, dtype=np.int64)
    if ids.shape != (len(embeddings),):
        raise ValueError(f"ids must have shape ({len(embeddings)},), got {ids.shape}.")
    if len(np.unique(ids)) != len(ids):
        raise ValueError("ids must be unique.")
    return embeddings, ids


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def _read_metadata(path: Path, kind: str) -> dict[str, Any]:
    metadata = json.loads((path / METADATA_FILE).read_text())
    if metadata.get("kind") != kind:
        raise ValueError(f"{path} holds a {metadata.get('kind')!r} index, not {kind!r}.")
    return metadata


