"""Lookup: raw item ids in, recommended raw item ids and scores out.

``Retriever.load(path)`` reads one exported version (see ``export``): the SavedModel's
``serving_default`` signature turns a history into a user vector, and a retrieval index finds the
top items, the version's ScaNN index if ``build_version_index`` wrote one, else exact search.
Scores are ``tau * cosine``, as in training.

The ScaNN index lives in ``<version>/index/``: ``searcher/`` (a ``retrieval`` index directory) and
``build.json`` (the fingerprint of the embeddings it was built from, its parameters and its
agreement with exact top-K). A Retriever refuses an index whose fingerprint is not the model's.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from tfcroloss.pipelines import export
from tfcroloss.pipelines.files import atomic_directory, atomic_write_text
from tfcroloss.pipelines.retrieval import RetrievalIndex, agreement, build_index, load_index

BUILD_FILE = "build.json"
SEARCHER_DIR = "searcher"
INDEX_CHOICES = ("auto", "exact", "scann")


class FingerprintMismatch(ValueError):
    """An index and a model that were not built from the same item embeddings."""


@dataclasses.dataclass(frozen=True)
class Recommendation:
    """Top items for one history, best first; ``unknown_ids`` were not in the catalog and ignored."""

    item_ids: list[str]
    scores: list[float]
    unknown_ids: list[str]


def load_embeddings(version_dir: str | os.PathLike, metadata: dict[str, Any]) -> np.ndarray:
    """The version's item embeddings, checked against the fingerprint in ``export.json``."""
    embeddings = np.load(Path(version_dir) / export.EMBEDDINGS_PATH)
    if export.fingerprint(embeddings) != metadata["fingerprint"]:
        raise FingerprintMismatch(
            f"{version_dir}: {export.EMBEDDINGS_PATH} does not match the fingerprint in {export.METADATA_PATH}"
        )
    return embeddings


def build_version_index(
    version_dir: str | os.PathLike,
    *,
    k: int = 100,
    sample_queries: int = 1000,
    overwrite: bool = False,
    seed: int = 0,
    **overrides: Any,
) -> dict[str, Any]:
    """Builds the ScaNN index of an exported version into ``<version>/index/`` and returns its
    ``build.json``.

    Parameters come from ``retrieval.scann_parameters(num_items, k)``; ``overrides`` (e.g.
    ``num_leaves``, ``num_leaves_to_search``, ``reorder``, ``partition``, ``scoring``) replace them.
    ``agreement@k`` is measured against exact top-k on ``sample_queries`` catalog vectors
    (user and item vectors share one space). The index appears atomically.
    """
    version_dir = Path(version_dir)
    metadata = export.read_metadata(version_dir)
    target = version_dir / export.INDEX_DIR
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists; pass overwrite (--overwrite) to rebuild it")
    embeddings = load_embeddings(version_dir, metadata)
    num_items = len(embeddings)
    k = min(k, num_items)
    ids = np.arange(1, num_items + 1, dtype=np.int64)
    started = time.perf_counter()
    index = build_index("scann", embeddings, ids, k_default=k, **overrides)
    build_seconds = time.perf_counter() - started
    rng = np.random.default_rng(seed)
    queries = embeddings[rng.choice(num_items, size=min(sample_queries, num_items), replace=False)]
    exact_ids = build_index("exact", embeddings, ids).search(queries, k)[1]
    record = {
        "fingerprint": metadata["fingerprint"],
        "kind": index.kind,
        "params": index.params,
        "k": k,
        f"agreement@{k}": round(agreement(index.search(queries, k)[1], exact_ids), 4),
        "agreement_queries": len(queries),
        "build_seconds": round(build_seconds, 3),
    }
    with atomic_directory(target, overwrite=True) as staging:
        index.save(staging / SEARCHER_DIR)
        atomic_write_text(staging / BUILD_FILE, json.dumps(record, indent=2) + "\n")
    return record


class Retriever:
    """An exported version ready to answer: user tower + retrieval index + raw ids."""

    def __init__(
        self,
        version_dir: Path,
        metadata: dict[str, Any],
        user_tower: Any,
        index: RetrievalIndex,
        tokens: np.ndarray,
        index_info: dict[str, Any],
    ):
        self.version_dir = version_dir
        self.metadata = metadata
        self.index = index
        self.index_info = index_info
        self._user_tower = user_tower
        self._tokens = tokens
        self._tau = float(metadata["tau"])

    @classmethod
    def load(cls, path: str | os.PathLike, *, index: str = "auto") -> Retriever:
        """Loads a version directory, or the latest version under a model directory.

        ``index``: "auto" (the version's ScaNN index if built, else exact), "exact" or "scann".
        """
        if index not in INDEX_CHOICES:
            raise ValueError(f"index must be one of {', '.join(INDEX_CHOICES)}, got {index!r}")
        version_dir = export.resolve_version(path)
        metadata = export.read_metadata(version_dir)
        index_dir = version_dir / export.INDEX_DIR
        if index == "scann" or (index == "auto" and index_dir.is_dir()):
            searcher, info = _load_scann(index_dir, metadata)
        else:
            searcher = build_index("exact", load_embeddings(version_dir, metadata), _item_ids(metadata))
            info = {"kind": "exact"}
        user_tower = tf.saved_model.load(str(version_dir)).signatures[export.SIGNATURE_USER]
        lines = (version_dir / export.TOKENS_PATH).read_text().split("\n")[: metadata["num_items"]]
        tokens = np.array(["", *lines])  # fixed-width unicode: index = item id
        return cls(version_dir, metadata, user_tower, searcher, tokens, info)

    @property
    def version(self) -> int:
        return int(self.metadata["version"])

    @property
    def num_items(self) -> int:
        return int(self.metadata["num_items"])

    def recommend(self, history: Sequence[str], k: int = 100, exclude_history: bool = True) -> Recommendation:
        """Top ``k`` items for one history of raw item ids (oldest first)."""
        return self.recommend_batch([history], k, exclude_history)[0]

    def recommend_batch(
        self, histories: Sequence[Sequence[str]], k: int = 100, exclude_history: bool = True
    ) -> list[Recommendation]:
        """Top ``k`` items for each history; ``exclude_history`` drops items already in it."""
        if not 1 <= k <= self.num_items:
            raise ValueError(f"k must be in 1..{self.num_items} (the catalog size), got {k}")
        if not histories or any(len(history) == 0 for history in histories):
            raise ValueError("histories must be non-empty lists of raw item ids")
        width = max(len(history) for history in histories)
        padded = np.full((len(histories), width), "", dtype=object)  # "" is ignored by the model
        for row, history in enumerate(histories):
            padded[row, : len(history)] = history
        outputs = self._user_tower(history=tf.constant(padded, tf.string))
        users = outputs["user_embedding"].numpy()
        history_ids = outputs["history_item_ids"].numpy()
        depth = k + (int((history_ids > 0).sum(axis=1).max()) if exclude_history else 0)
        scores, found = self.index.search(users, min(depth, self.num_items))
        results = []
        for row, history in enumerate(histories):
            keep = found[row] > 0
            if exclude_history:
                keep &= ~np.isin(found[row], history_ids[row])
            chosen = found[row][keep][:k]
            results.append(
                Recommendation(
                    item_ids=self._tokens[chosen].tolist(),
                    scores=(self._tau * scores[row][keep][:k]).tolist(),
                    unknown_ids=[str(token) for token, known in zip(history, history_ids[row], strict=False) if known == 0],
                )
            )
        return results

    def describe(self) -> dict[str, Any]:
        """Version, catalog and index facts, for metadata endpoints and logs."""
        keys = ("version", "num_items", "dim", "maxlen", "tau", "fingerprint", "source")
        return {**{key: self.metadata[key] for key in keys}, "path": str(self.version_dir), "index": self.index_info}


def _item_ids(metadata: dict[str, Any]) -> np.ndarray:
    return np.arange(1, metadata["num_items"] + 1, dtype=np.int64)


def _load_scann(index_dir: Path, metadata: dict[str, Any]) -> tuple[RetrievalIndex, dict[str, Any]]:
    build_file = index_dir / BUILD_FILE
    if not build_file.is_file():
        raise FileNotFoundError(f"{index_dir} holds no ScaNN index; build one with `tfcroloss index`")
    info = json.loads(build_file.read_text())
    if info["fingerprint"] != metadata["fingerprint"]:
        raise FingerprintMismatch(
            f"{index_dir} was built from other item embeddings than model version {metadata['version']} "
            f"({info['fingerprint'][:19]}... != {metadata['fingerprint'][:19]}...); rebuild it with "
            "`tfcroloss index --overwrite`"
        )
    searcher = load_index(index_dir / SEARCHER_DIR)
    if searcher.num_items != metadata["num_items"]:
        raise FingerprintMismatch(f"{index_dir} indexes {searcher.num_items} items, the model {metadata['num_items']}")
    return searcher, info
