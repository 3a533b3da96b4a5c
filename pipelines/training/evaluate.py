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
from tfcroloss.pipelines.data.inputs import EvalSamples
from tfcroloss.pipelines.retrieval import agreement, build_index, catalog_ids, search_excluding

USER_BATCH = 4096


def user_embeddings(model: Any, histories: np.ndarray) -> np.ndarray:
    """User vectors for ``int32 [U, maxlen]`` histories, in batches."""
    parts = [
        model.user_embeddings(histories[start : start + USER_BATCH]).numpy()
        for start in range(0, len(histories), USER_BATCH)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, model.item_embedding.output_dim), np.float32)


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
    ids = catalog_ids(len(catalog))
    k = min(max(ns), len(catalog))
    queries = user_embeddings(model, samples.history)
    started = time.perf_counter()
    searcher = build_index(index, catalog, ids, **index_params)
    built = time.perf_counter()
    exclude = samples.history if exclude_history else None
    top = search_excluding(searcher, queries, k, exclude)[1]
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
        exact_index = build_index("exact", catalog, ids)
        exact = search_excluding(exact_index, queries[chosen], k, None if exclude is None else exclude[chosen])[1]
        result[f"agreement@{k}"] = agreement(top[chosen], exact)
        result["agreement_users"] = len(chosen)
    return result


def popularity_baseline(item_counts: np.ndarray, samples: EvalSamples, *, ns: list[int]) -> dict[str, Any]:
    """Metrics of recommending the most popular training items (``item_counts`` by item id, 0 is
    padding) to everyone: the floor any model must beat."""
    popular = np.argsort(-item_counts[1:], kind="stable")[: max(ns)] + 1
    top = np.broadcast_to(popular, (samples.num_users, len(popular)))
    return retrieval_metrics(top, samples.target_offsets, samples.targets, ns=ns)
