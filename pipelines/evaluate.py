"""Evaluation under the paper's protocol: every user scored against the whole catalog.

The retrieval back-end (exact or ScaNN) is the same one serving uses. A ScaNN
evaluation also reports its agreement with exact top-N on a sample of users, so
an approximate number never goes unchecked.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from tfcroloss.metrics import retrieval_metrics
from tfcroloss.pipelines.inputs import EvalSamples
from tfcroloss.pipelines.retrieval import RetrievalIndex, agreement, build_index

USER_BATCH = 4096


def user_embeddings(model: Any, histories: np.ndarray) -> np.ndarray:
    """User vectors for ``int32 [U, maxlen]`` histories, in batches."""
    parts = [
        model.user_embeddings(histories[start : start + USER_BATCH]).numpy()
        for start in range(0, len(histories), USER_BATCH)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, model.item_embedding.output_dim), np.float32)


def top_items(
    index: RetrievalIndex, queries: np.ndarray, k: int, exclude: np.ndarray | None = None
) -> np.ndarray:
    """``[U, k]`` item ids, best first; ids in ``exclude`` rows (0 = none) are skipped."""
    if exclude is None:
        return index.search(queries, k)[1]
    extra = int((exclude != 0).sum(axis=1).max(initial=0))
    _, ids = index.search(queries, min(k + extra, index.num_items))
    out = np.zeros((len(ids), min(k, ids.shape[1])), ids.dtype)
    for start in range(0, len(ids), 1024):  # chunks bound the [users, k, maxlen] comparison
        block, seen = ids[start : start + 1024], exclude[start : start + 1024]
        hidden = (block[:, :, None] == seen[:, None, :]).any(axis=2)
        order = np.argsort(hidden, axis=1, kind="stable")  # kept ids first, in rank order
        out[start : start + 1024] = np.take_along_axis(block, order, axis=1)[:, : out.shape[1]]
    return out


def evaluate(
    model: Any,
    samples: EvalSamples,
    *,
    ns: list[int],
    index: str = "exact",
    exclude_history: bool = False,
    agreement_users: int = 1000,
    seed: int = 0,
    **index_params: Any,
) -> dict[str, Any]:
    """Recall, HitRate and NDCG at each N in ``ns`` over ``samples``.

    Returns the metrics plus ``users``, ``num_items``, ``index``, timing, and for
    ScaNN ``agreement@K``: the mean share of exact top-K that ScaNN also returned,
    on up to ``agreement_users`` sampled users.
    """
    catalog = model.catalog_embeddings()
    ids = np.arange(1, len(catalog) + 1)
    k = min(max(ns), len(catalog))
    queries = user_embeddings(model, samples.history)
    started = time.perf_counter()
    searcher = build_index(index, catalog, ids, **index_params)
    built = time.perf_counter()
    exclude = samples.history if exclude_history else None
    top = top_items(searcher, queries, k, exclude)
    searched = time.perf_counter()
    result: dict[str, Any] = retrieval_metrics(
        top, samples.target_offsets, samples.targets, ns=ns, num_items=len(catalog)
    )
    result.update(
        users=samples.num_users,
        num_items=len(catalog),
        index=index,
        build_seconds=round(built - started, 3),
        search_seconds=round(searched - built, 3),
    )
    if not searcher.is_exact and samples.num_users and agreement_users > 0:
        rng = np.random.default_rng(seed)
        chosen = np.sort(rng.choice(samples.num_users, min(agreement_users, samples.num_users), replace=False))
        exact = top_items(build_index("exact", catalog, ids), queries[chosen], k, None if exclude is None else exclude[chosen])
        result[f"agreement@{k}"] = agreement(top[chosen], exact)
        result["agreement_users"] = len(chosen)
    return result
