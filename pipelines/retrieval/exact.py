"""Exact top-k by inner product (TensorFlow matmul + ``top_k``), chunked over the catalog."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfcroloss.pipelines.files import atomic_directory
from tfcroloss.pipelines.retrieval import base
from tfcroloss.pipelines.retrieval.base import RetrievalIndex


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
        embeddings, ids = base.check_catalog(embeddings, ids)
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
            np.save(path / base.IDS_FILE, self._ids)
            base.write_json(path / base.METADATA_FILE, self._metadata())

        with atomic_directory(directory) as staging:
            write(staging)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> ExactIndex:
        path = Path(directory)
        base.read_metadata(path, cls.kind)
        return cls(np.load(path / "embeddings.npy"), np.load(path / base.IDS_FILE))


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

