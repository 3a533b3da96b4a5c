"""Lookup: raw item ids in, recommended raw item ids and scores out.

``Retriever.load(path)`` reads one exported version (see ``version``): the SavedModel's
``serving_default`` signature turns a history into a user vector, and a retrieval index finds the
top items, the version's ScaNN index if ``index.build_version_index`` wrote one, else exact
search. Scores are ``tau * cosine``, as in training.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from tfcroloss.pipelines.retrieval import (
    RetrievalIndex,
    build_index,
    catalog_ids,
    check_k,
    search_excluding,
)
from tfcroloss.pipelines.serving import INDEX_CHOICES
from tfcroloss.pipelines.serving.index import load_version_index
from tfcroloss.pipelines.serving.version import (
    INDEX_DIR,
    SIGNATURE_USER,
    TOKENS_PATH,
    load_embeddings,
    read_metadata,
    resolve_version,
)
from tfcroloss.registry import lookup


@dataclasses.dataclass(frozen=True)
class Recommendation:
    """Top items for one history, best first; ``unknown_ids`` were not in the catalog and ignored."""

    item_ids: list[str]
    scores: list[float]
    unknown_ids: list[str]


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
        lookup(dict.fromkeys(INDEX_CHOICES), index, "index choice")
        version_dir = resolve_version(path)
        metadata = read_metadata(version_dir)
        index_dir = version_dir / INDEX_DIR
        if index == "scann" or (index == "auto" and index_dir.is_dir()):
            searcher, info = load_version_index(index_dir, metadata)
        else:
            embeddings = load_embeddings(version_dir, metadata)
            searcher, info = build_index("exact", embeddings, catalog_ids(len(embeddings))), {"kind": "exact"}
        user_tower = tf.saved_model.load(str(version_dir)).signatures[SIGNATURE_USER]
        lines = (version_dir / TOKENS_PATH).read_text().split("\n")[: metadata["num_items"]]
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
        check_k(k, self.num_items)
        if not histories or any(len(history) == 0 for history in histories):
            raise ValueError("histories must be non-empty lists of raw item ids")
        width = max(len(history) for history in histories)
        padded = np.full((len(histories), width), "", dtype=object)  # "" is ignored by the model
        for row, history in enumerate(histories):
            padded[row, : len(history)] = history
        outputs = self._user_tower(history=tf.constant(padded, tf.string))
        users = outputs["user_embedding"].numpy()
        history_ids = outputs["history_item_ids"].numpy()
        scores, found = search_excluding(self.index, users, k, history_ids if exclude_history else None)
        results = []
        for row, history in enumerate(histories):
            keep = found[row] > 0
            results.append(
                Recommendation(
                    item_ids=self._tokens[found[row][keep]].tolist(),
                    scores=(self._tau * scores[row][keep]).tolist(),
                    unknown_ids=[str(token) for token, known in zip(history, history_ids[row], strict=False) if known == 0],
                )
            )
        return results

    def describe(self) -> dict[str, Any]:
        """Version, catalog and index facts, for metadata endpoints and logs."""
        keys = ("version", "num_items", "dim", "maxlen", "tau", "fingerprint", "source")
        return {**{key: self.metadata[key] for key in keys}, "path": str(self.version_dir), "index": self.index_info}
