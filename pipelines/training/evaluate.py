"""Evaluation under the paper's protocol: every user scored against the whole catalog.

The retrieval back-end (exact or ScaNN) is the same one serving uses. A ScaNN
evaluation also reports its agreement with exact top-N on a sample of users, so
an approximate number never goes unchecked.

``write_per_user`` keeps a finished run's per-user Recall@N on the valid and test splits
(``per_user.npz`` in the run directory), so that two runs on the same users can be compared
user by user (``intervals.paired_bootstrap``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from tfcroloss.metrics import retrieval_metrics
from tfcroloss.pipelines.data.inputs import EvalSamples, evaluation_samples
from tfcroloss.pipelines.files import atomic_file
from tfcroloss.pipelines.retrieval import agreement, build_index, catalog_ids, search_excluding

USER_BATCH = 4096
PER_USER_FILE = "per_user.npz"
PER_USER_SPLITS = ("valid", "test")


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
    per_user: bool = False,
    **index_params: Any,
) -> dict[str, Any]:
    """Recall, HitRate and NDCG at each N in ``ns`` over ``samples`` (``[U]`` arrays, one value
    per user in the samples' order, with ``per_user``).

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
        top, samples.target_offsets, samples.targets, ns=ns, num_items=len(catalog), per_user=per_user
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


def write_per_user(run_dir: str | Path) -> Path:
    """Writes ``per_user.npz`` into a finished run's directory: per-user Recall@N of its best
    weights at the config's Ns, on every user of the valid and test splits (``valid/recall@N``,
    ``test/recall@N``, and ``valid/users``, ``test/users``: the users' vocabulary indices)."""
    from tfcroloss.pipelines.training.run_directory import load_run

    run = load_run(run_dir)
    evaluation, arrays = run.config.evaluation, {}
    for split in PER_USER_SPLITS:
        samples = evaluation_samples(getattr(run.dataset, split), maxlen=run.config.data.maxlen)
        metrics = evaluate(run.model, samples, ns=evaluation.ns, index=evaluation.index,
                           exclude_history=evaluation.exclude_history, agreement_users=0, per_user=True)
        arrays[f"{split}/users"] = samples.user_index
        arrays.update({f"{split}/{key}": metrics[key].astype(np.float32) for key in metrics if key.startswith("recall@")})
    path = Path(run_dir) / PER_USER_FILE
    with atomic_file(path) as tmp, open(tmp, "wb") as file:
        np.savez_compressed(file, **arrays)
    return path


def read_per_user(run_dir: str | Path) -> dict[str, np.ndarray] | None:
    """``per_user.npz``'s arrays, or None for a run without them (made before they were kept)."""
    path = Path(run_dir) / PER_USER_FILE
    if not path.exists():
        return None
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def popularity_baseline(item_counts: np.ndarray, samples: EvalSamples, *, ns: list[int]) -> dict[str, Any]:
    """Metrics of recommending the most popular training items (``item_counts`` by item id, 0 is
    padding) to everyone: the floor any model must beat."""
    popular = np.argsort(-item_counts[1:], kind="stable")[: max(ns)] + 1
    top = np.broadcast_to(popular, (samples.num_users, len(popular)))
    return retrieval_metrics(top, samples.target_offsets, samples.targets, ns=ns)
