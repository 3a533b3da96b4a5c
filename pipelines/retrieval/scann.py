"""Approximate top-k by inner product with Google's ScaNN, with parameters chosen from the catalog
size and k (``scann_parameters``). ScaNN itself is imported when an index is built or loaded."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from tfcroloss.pipelines.files import atomic_directory
from tfcroloss.pipelines.retrieval import base
from tfcroloss.pipelines.retrieval.base import RetrievalIndex
from tfcroloss.registry import lookup

PARTITION_MIN_ITEMS = 20_000
"""Below this catalog size ScaNN scores every item (its docs' rule of thumb: 20k)."""
AH_MAX_K = 200
"""From this k on, ScaNN scores the searched leaves exactly instead of with AH."""
SEARCHED_FRACTION = {"ah": 0.04, "brute_force": 0.07}
"""Share of the leaves searched by default, per scoring method (see ``scann_parameters``)."""
SCORINGS = ("ah", "brute_force")


def _scann_ops() -> Any:
    from scann.scann_ops.py import scann_ops_pybind

    return scann_ops_pybind


def scann_parameters(num_items: int, k: int, num_leaves: int | None = None) -> dict[str, Any]:
    """ScaNN settings for a catalog of ``num_items`` searched for the top ``k`` (with
    ``num_leaves`` leaves when given: the leaves searched follow it).

    Follows ScaNN's ``docs/algorithms.md``: no partitioning below ``PARTITION_MIN_ITEMS``
    items (brute force); above it a tree of about ``sqrt(n)`` leaves, searching a share of
    them (``SEARCHED_FRACTION``) and at least enough for 20k candidates. Chosen from
    ``benchmarks/sweep_scann.py`` on a clustered 1.7M x 32 catalog
    (``benchmarks/results/scann-sweep*.jsonl``):

    - ``k < AH_MAX_K``: anisotropic hashing with one dimension per block (threshold 0.2) and
      exact re-scoring of ``max(4k, 200)`` candidates, 4% of the leaves (two dimensions per
      block agreed less with exact top-k at the same cost).
    - ``k >= AH_MAX_K``: exact scoring of 7% of the leaves: at large k, AH needs re-scoring
      depths that make it slower than scoring the searched leaves exactly.

    The agreement and cost of each choice are in docs/serving.md ("ScaNN's parameters").

    Every entry can be overridden in ``ScannIndex`` (``scann_settings`` checks them).
    """
    if num_items < 1 or k < 1:
        raise ValueError(f"num_items and k must be positive, got {num_items} and {k}.")
    num_leaves = num_leaves or max(1, round(math.sqrt(num_items)))
    items_per_leaf = num_items / num_leaves
    partition = num_items >= PARTITION_MIN_ITEMS
    scoring = "ah" if partition and k < AH_MAX_K else "brute_force"
    wanted_leaves = max(math.ceil(SEARCHED_FRACTION[scoring] * num_leaves), math.ceil(20_000 / items_per_leaf))
    return {
        "partition": partition,
        "scoring": scoring,
        "num_leaves": num_leaves,
        "num_leaves_to_search": min(num_leaves, wanted_leaves),
        "training_sample_size": min(num_items, 250_000),
        "reorder": max(4 * k, 200),
        "dimensions_per_block": 1,
        "anisotropic_threshold": 0.2,
    }


def scann_settings(num_items: int, k_default: int, **overrides: Any) -> dict[str, Any]:
    """``scann_parameters`` with ``overrides`` (``ScannIndex``'s arguments, ``None`` = default),
    checked against the catalog before anything is built: leaves within ``[1, num_items]``,
    leaves searched within ``[1, num_leaves]``, the training sample within
    ``[num_leaves, num_items]``, every count a positive integer."""
    unknown = set(overrides) - set(_OVERRIDABLE)
    if unknown:
        raise TypeError(f"unknown ScaNN settings: {', '.join(sorted(unknown))}")
    if isinstance(k_default, bool) or not isinstance(k_default, int) or k_default < 1:
        raise ValueError(f"k_default must be a positive integer, got {k_default!r}.")
    given = {key: value for key, value in overrides.items() if value is not None}
    for key in _COUNTS:
        if key in given and (isinstance(given[key], bool) or not isinstance(given[key], int) or given[key] < 1):
            raise ValueError(f"{key} must be an integer >= 1, got {given[key]!r}")
    params = {**scann_parameters(num_items, min(k_default, num_items), given.get("num_leaves")), **given}
    lookup(dict.fromkeys(SCORINGS), params["scoring"], "scoring method")
    ranges = {
        "num_leaves": (1, num_items, f"the catalog's {num_items:,} items"),
        "num_leaves_to_search": (1, params["num_leaves"], "num_leaves"),
        "training_sample_size": (params["num_leaves"], num_items, "num_leaves to the catalog's items"),
    }
    for key, (low, high, what) in ranges.items():
        if not low <= params[key] <= high:
            raise ValueError(f"{key} must be within [{low:,}, {high:,}] ({what}), got {params[key]:,}")
    return {**params, "k_default": k_default}


# ScannIndex's settings, and those of them that count something.
_OVERRIDABLE = tuple(scann_parameters(1, 1))
_COUNTS = ("num_leaves", "num_leaves_to_search", "training_sample_size", "reorder", "dimensions_per_block")


class ScannIndex(RetrievalIndex):
    """Approximate top-k by inner product with ScaNN.

    Arguments left ``None`` take their value from ``scann_parameters(n, k_default)``; all are
    checked against the catalog (``scann_settings``). ``partition=True`` forces a tree on a
    small catalog; ``scoring`` is one of ``SCORINGS``; the AH settings apply only to
    ``scoring="ah"``. Results that ScaNN cannot fill (fewer than k candidates in the searched
    leaves) come back with id ``-1`` and score ``-inf``.
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
        dimensions_per_block: int | None = None,
        anisotropic_threshold: float | None = None,
        k_default: int = 500,
    ):
        embeddings, ids = base.check_catalog(embeddings, ids)
        params = scann_settings(
            len(embeddings),
            k_default,
            partition=partition,
            scoring=scoring,
            num_leaves=num_leaves,
            num_leaves_to_search=num_leaves_to_search,
            training_sample_size=training_sample_size,
            reorder=reorder,
            dimensions_per_block=dimensions_per_block,
            anisotropic_threshold=anisotropic_threshold,
        )
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
        positions, scores = self._searcher.search_batched_parallel(
            queries, batch_size=search_batch_size(len(queries)), **options
        )
        positions = positions.astype(np.int64)  # ScaNN's are uint32
        missing = np.isnan(scores)
        if missing.any():  # fewer than k candidates in the searched leaves
            positions[missing] = -1
            scores = np.where(missing, -np.inf, scores)
        return scores.astype(np.float32, copy=False), positions

    def save(self, directory: str | os.PathLike) -> None:
        def write(path: Path) -> None:
            (path / "searcher").mkdir()
            self._searcher.serialize(str(path / "searcher"), relative_path=True)
            np.save(path / base.IDS_FILE, self._ids)
            base.write_json(path / base.METADATA_FILE, {**self._metadata(), "params": self.params})

        with atomic_directory(directory) as staging:
            write(staging)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> ScannIndex:
        path = Path(directory)
        metadata = base.read_metadata(path, cls.kind)
        index = cls.__new__(cls)
        RetrievalIndex.__init__(index, np.load(path / base.IDS_FILE), metadata["dim"])
        index.params = metadata["params"]
        index._searcher = _scann_ops().load_searcher(str(path / "searcher"))
        return index


def search_batch_size(num_queries: int) -> int:
    """Queries per ScaNN batch: two batches per core, so that every core searches. ScaNN's
    default (256) searched a service's micro-batch of 4-8 queries on one core, and cost more per
    query on large query sets too (docs/serving.md)."""
    return math.ceil(num_queries / (2 * (os.cpu_count() or 1)))


def _build_scann(embeddings: np.ndarray, params: dict[str, Any]) -> Any:
    builder = _scann_ops().builder(embeddings, params["k_default"], "dot_product")
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


