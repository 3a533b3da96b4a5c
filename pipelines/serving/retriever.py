"""Lookup: raw item ids in, recommended raw item ids and scores out.

``Retriever.load(path)`` reads one exported version (see ``version``): the SavedModel's
``serving_default`` signature turns a history into a user vector, and a retrieval index finds the
top items, the version's ScaNN index if ``index.build_version_index`` wrote one, else exact
search. Scores are ``tau * cosine``, as in training.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
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
from tfcroloss.pipelines.serving.index import load_version_index, read_build_info
from tfcroloss.pipelines.serving.index_process import IndexProcess
from tfcroloss.pipelines.serving.version import (
    INDEX_DIR,
    SIGNATURE_USER,
    TOKENS_PATH,
    load_embeddings,
    read_metadata,
    read_signature_defs,
    resolve_version,
    version_number,
)
from tfcroloss.registry import lookup

logger = logging.getLogger(__name__)


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
        signature_defs: dict[str, Any],
    ):
        self.version_dir = version_dir
        self.metadata = metadata
        self.version = version_number(version_dir, metadata)
        """The folder's number (``version.version_number``), which every answer reports."""
        self.signature_defs = signature_defs
        self.index = index
        self.index_info = index_info
        self._user_tower = user_tower
        self._tokens = tokens
        self._tau = float(metadata["tau"])

    @classmethod
    def load(cls, path: str | os.PathLike, *, index: str = "auto", isolate_index: bool = False) -> Retriever:
        """Loads a version directory, or the latest version under a model directory.

        ``index``: "auto" (the version's ScaNN index if built, else exact), "exact" or "scann".
        ``isolate_index`` opens and searches the index in a child process (``IndexProcess``), as
        the HTTP service does for versions loaded while it answers, so that loading it never
        holds this process's GIL.
        """
        lookup(dict.fromkeys(INDEX_CHOICES), index, "index choice")
        version_dir = resolve_version(path)
        metadata = read_metadata(version_dir)
        index_dir = version_dir / INDEX_DIR
        scann = index == "scann" or (index == "auto" and index_dir.is_dir())
        info = read_build_info(index_dir, metadata) if scann else {"kind": "exact"}
        opener = functools.partial(open_index, os.fspath(version_dir), metadata, scann)
        searcher = IndexProcess(opener) if isolate_index else opener()
        user_tower = tf.saved_model.load(str(version_dir)).signatures[SIGNATURE_USER]
        tokens = read_tokens(version_dir / TOKENS_PATH, metadata["num_items"])
        retriever = cls(version_dir, metadata, user_tower, searcher, tokens, info, read_signature_defs(version_dir))
        if retriever.version != metadata["version"]:
            logger.warning(
                "%s holds a version exported as %s (export.json); it is version %d, its folder's name",
                version_dir, metadata["version"], retriever.version,
            )
        return retriever

    @property
    def num_items(self) -> int:
        return int(self.metadata["num_items"])

    @property
    def alive(self) -> bool:
        """False once an isolated index's process has ended (lookups would fail)."""
        return not isinstance(self.index, IndexProcess) or self.index.alive

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
        users, history_ids = self.encode(histories)
        scores, found = self.search(users, k, history_ids if exclude_history else None)
        return [
            Recommendation(
                item_ids=self.item_tokens(found[row]),
                scores=scores[row][found[row] > 0].tolist(),
                unknown_ids=self.unknown_ids(history, history_ids[row]),
            )
            for row, history in enumerate(histories)
        ]

    def encode(self, histories: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
        """One call of the user tower for a batch of histories (ragged rows are padded with "",
        which the model ignores): float32 ``users [B, dim]`` and int64 ``history_ids [B, L]``,
        the item id of each history entry (0 where unknown or padding)."""
        width = max((len(history) for history in histories), default=0)
        padded = np.full((len(histories), width), "", dtype=object)
        for row, history in enumerate(histories):
            padded[row, : len(history)] = history
        outputs = self._user_tower(history=tf.constant(padded, tf.string))
        return outputs["user_embedding"].numpy(), outputs["history_item_ids"].numpy()

    def search(
        self, users: np.ndarray, k: int, exclude: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scores (``tau * cosine``) and item ids ``[B, k]`` of the top ``k`` items for user
        vectors, skipping the ids in each row of ``exclude``; missing results have id -1."""
        scores, found = search_excluding(self.index, users, k, exclude)
        return self._tau * scores, found

    def item_tokens(self, item_ids: np.ndarray) -> list[str]:
        """The raw ids of a row of item ids, skipping the missing ones (id <= 0)."""
        return self._tokens[item_ids[item_ids > 0]].tolist()

    def tokens(self, item_ids: np.ndarray) -> np.ndarray:
        """The raw ids of an array of item ids, "" where an id is missing (<= 0)."""
        return self._tokens[np.maximum(item_ids, 0)]

    @staticmethod
    def unknown_ids(history: Sequence[str], history_ids: np.ndarray) -> list[str]:
        """The entries of ``history`` that the model did not know (id 0 in ``history_ids``)."""
        return [history[i] for i in np.flatnonzero(history_ids[: len(history)] == 0).tolist()]

    def describe(self, *, public: bool = False) -> dict[str, Any]:
        """Version, catalog and index facts, for metadata endpoints and logs.

        ``public`` leaves out the server's file system: no version path, and every path in the
        export's ``source`` reduced to its last component.
        """
        keys = ("num_items", "dim", "maxlen", "tau", "fingerprint")
        facts = {"version": self.version, **{key: self.metadata[key] for key in keys}}
        source = self.metadata.get("source", {})
        if not public:
            return {**facts, "source": source, "path": str(self.version_dir), "index": self.index_info}
        return {**facts, "source": {key: _without_directories(value) for key, value in source.items()}, "index": self.index_info}


def read_tokens(path: Path, num_items: int) -> np.ndarray:
    """The raw id of each item id (index 0: "", padding) from ``item_tokens.txt``, as an object
    array (indexed by item-id arrays in one step).

    Read and split in 256 KiB blocks: a service reads a new version's file while it answers
    requests, and one ``split`` of a large catalog's whole file (or a fixed-width string array
    of its ids) holds the GIL long enough to stall them (docs/serving.md).
    """
    tokens, tail = [""], ""
    with open(path, encoding="utf-8") as file:
        while block := file.read(1 << 18):
            lines = (tail + block).split("\n")
            tail = lines.pop()
            tokens.extend(lines)
    tokens.append(tail)
    table = np.empty(num_items + 1, dtype=object)
    table[:] = tokens[: num_items + 1]
    return table


def open_index(version_dir: str, metadata: dict[str, Any], scann: bool) -> RetrievalIndex:
    """A version's ScaNN index (``scann``), or exact search over its item embeddings."""
    if scann:
        return load_version_index(Path(version_dir) / INDEX_DIR, metadata)[0]
    embeddings = load_embeddings(Path(version_dir), metadata)
    return build_index("exact", embeddings, catalog_ids(len(embeddings)))


def _without_directories(value: Any) -> Any:
    """A path's last component (``/data/runs/book`` -> ``book``); other values unchanged."""
    if isinstance(value, str) and ("/" in value or "\\" in value):
        return value.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    return value
