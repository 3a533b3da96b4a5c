"""The retrieval interface that evaluation and serving share, and what every back-end uses.

``RetrievalIndex.search(queries, k)`` returns ``(scores, ids)`` sorted by descending score.
Indexes map internal row positions to caller ids (``ids``; default ``0..n-1``) and assume
nothing else about them. ``save(directory)`` writes ``index.json`` beside the arrays.
"""

from __future__ import annotations

import abc
import json
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

METADATA_FILE = "index.json"
IDS_FILE = "ids.npy"


def catalog_ids(num_items: int) -> np.ndarray:
    """The item id of each catalog row: row i holds item ``i + 1`` (id 0 is padding), the rule of
    prepared data sets, trained models and exported versions alike.

    >>> catalog_ids(3).tolist()
    [1, 2, 3]
    """
    return np.arange(1, num_items + 1, dtype=np.int64)


def check_k(k: Any, num_items: int) -> int:
    """``k`` if it is an integer in ``[1, num_items]``, else a ``ValueError`` that says so."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= num_items:
        raise ValueError(f"k must be in 1..{num_items} (the catalog size), an integer; got {k!r}")
    return int(k)


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
        check_k(k, self.num_items)
        return queries

    def _metadata(self) -> dict[str, Any]:
        return {"kind": self.kind, "num_items": self.num_items, "dim": self._dim}



def search_excluding(
    index: RetrievalIndex, queries: np.ndarray, k: int, exclude: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``index.search`` whose rows skip the ids in the same row of ``exclude`` (0 = none).

    Searches ``k`` plus the longest exclusion row deep, then keeps the first ``k`` ids of each row
    that are not excluded, in rank order; rows that run short end in id ``-1``, score ``-inf``.
    """
    if exclude is None:
        return index.search(queries, k)
    extra = int((exclude != 0).sum(axis=1).max(initial=0))
    scores, ids = index.search(queries, min(k + extra, index.num_items))
    width = min(k, ids.shape[1])
    out_scores = np.full((len(ids), width), -np.inf, np.float32)
    out_ids = np.full((len(ids), width), -1, ids.dtype)
    for start in range(0, len(ids), 1024):  # chunks bound the [users, k, maxlen] comparison
        block, seen = ids[start : start + 1024], exclude[start : start + 1024]
        hidden = (block[:, :, None] == seen[:, None, :]).any(axis=2) | (block < 0)
        order = np.argsort(hidden, axis=1, kind="stable")[:, :width]  # kept ids first, in rank order
        kept = ~np.take_along_axis(hidden, order, axis=1)
        rows = slice(start, start + len(block))
        out_ids[rows] = np.where(kept, np.take_along_axis(block, order, axis=1), -1)
        out_scores[rows] = np.where(kept, np.take_along_axis(scores[rows], order, axis=1), -np.inf)
    return out_scores, out_ids


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



def check_catalog(embeddings: np.ndarray, ids: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
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


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def read_metadata(path: Path, kind: str) -> dict[str, Any]:
    metadata = json.loads((path / METADATA_FILE).read_text())
    if metadata.get("kind") != kind:
        raise ValueError(f"{path} holds a {metadata.get('kind')!r} index, not {kind!r}.")
    return metadata
