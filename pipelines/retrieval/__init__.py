"""Retrieval: top-k maximum inner product search over a catalog, behind one interface.

Evaluation (training) and lookups (serving) both use it. ``base`` holds the interface
(``RetrievalIndex``) and what every back-end shares; each back-end is its own module: ``exact``
(TensorFlow matmul + top-k, chunked) and ``scann`` (Google's ScaNN, imported only when used).
``INDEX_KINDS`` is the registry: configs and the CLI take their choices from it. A new back-end
is a ``RetrievalIndex`` subclass in its own module, added to ``INDEX_KINDS``.

>>> import numpy as np
>>> index = build_index("exact", np.eye(3, dtype=np.float32), ids=np.array([10, 11, 12]))
>>> scores, ids = index.search(np.array([[0.0, 2.0, 1.0]], np.float32), k=2)
>>> ids.tolist(), scores.tolist()
([[11, 12]], [[2.0, 1.0]])
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from tfcroloss.pipelines.retrieval.base import (
    METADATA_FILE,
    RetrievalIndex,
    agreement,
    catalog_ids,
    check_k,
    search_excluding,
)
from tfcroloss.registry import lookup

# kind -> (module, class); a module is imported only when its kind is used.
INDEX_KINDS: dict[str, tuple[str, str]] = {
    "exact": ("tfcroloss.pipelines.retrieval.exact", "ExactIndex"),
    "scann": ("tfcroloss.pipelines.retrieval.scann", "ScannIndex"),
}

__all__ = [
    "INDEX_KINDS",
    "RetrievalIndex",
    "agreement",
    "build_index",
    "catalog_ids",
    "check_k",
    "index_type",
    "load_index",
    "search_excluding",
]


def index_type(kind: str) -> type[RetrievalIndex]:
    """The ``RetrievalIndex`` class registered as ``kind``."""
    module, name = lookup(INDEX_KINDS, kind, "index kind")
    return getattr(importlib.import_module(module), name)


def build_index(
    kind: str, embeddings: np.ndarray, ids: np.ndarray | None = None, **overrides: Any
) -> RetrievalIndex:
    """Builds an index of ``kind`` (one of ``INDEX_KINDS``); ``overrides`` go to its constructor."""
    return index_type(kind)(embeddings, ids, **overrides)


def load_index(directory: str | os.PathLike) -> RetrievalIndex:
    """Restores any index written by ``RetrievalIndex.save``."""
    kind = json.loads((Path(directory) / METADATA_FILE).read_text())["kind"]
    return index_type(kind).load(directory)
