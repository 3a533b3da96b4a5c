"""Top-N retrieval metrics under the CROLoss/ComiRec evaluation protocol.

Each user has a ranked list of retrieved ids (``top_ids``, one row per user) and a
variable-length list of target ids stored in CSR form (``target_offsets``, ``targets``):
user ``u``'s targets are ``targets[target_offsets[u]:target_offsets[u + 1]]``.

- ``recall@N``: ``|top-N ∩ set(targets)| / len(targets)``. Duplicated targets count in the
  denominator, as in ComiRec and the paper.
- ``hit_rate@N``: 1 if at least one target is in the top N, else 0.
- ``ndcg@N``: binary-relevance NDCG. DCG sums ``1 / log2(rank + 1)`` over the hits in the
  top N; IDCG is the DCG of ``min(|set(targets)|, N)`` hits ranked first. ComiRec instead
  divides by the IDCG of the *number of hits*, which gives a perfect score to any list
  whose hits happen to be ranked first and overstates NDCG; we do not copy that.

All metrics are averaged over users (or returned per user with ``per_user=True``).
The computation is vectorised over users: no Python loop per user.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

DEFAULT_NS: tuple[int, ...] = (20, 50, 100, 200, 500)


def targets_from_lists(lists: Iterable[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Packs per-user target lists into CSR form ``(target_offsets, targets)``.

    >>> offsets, targets = targets_from_lists([[3, 5], [7]])
    >>> offsets.tolist(), targets.tolist()
    ([0, 2, 3], [3, 5, 7])
    """
    arrays = [np.asarray(row, dtype=np.int64).reshape(-1) for row in lists]
    lengths = np.array([len(row) for row in arrays], dtype=np.int64)
    offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    targets = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)
    return offsets, targets


def retrieval_metrics(
    top_ids: np.ndarray,
    target_offsets: np.ndarray,
    targets: np.ndarray,
    ns: Sequence[int] = DEFAULT_NS,
    *,
    num_items: int | None = None,
    per_user: bool = False,
) -> dict[str, float] | dict[str, np.ndarray]:
    """Recall, HitRate and NDCG at each cut-off in ``ns``.

    Args:
      top_ids: ``[U, K]`` retrieved ids, best first, without duplicates within a row
        (every index in ``tfcroloss.pipelines.retrieval`` guarantees this).
      target_offsets: ``[U + 1]`` CSR offsets into ``targets``; every user needs a target.
      targets: ``[T]`` target ids.
      ns: cut-offs N. Each needs ``N <= K``, unless ``num_items`` says the catalog holds
        only ``K`` items: then the whole ranked catalog is the top N and the metric is
        reported under its requested name (``recall@500`` of a 300-item catalog uses
        all 300 items).
      num_items: catalog size, only needed to allow ``N > K`` as above.
      per_user: return ``[U]`` float64 arrays (for spread and significance tests)
        instead of means.

    Returns:
      ``{"recall@N": ..., "hit_rate@N": ..., "ndcg@N": ...}`` for each N, in order.

    >>> offsets, targets = targets_from_lists([[1, 2, 2], [9]])
    >>> top = np.array([[2, 7, 1], [4, 5, 6]])
    >>> m = retrieval_metrics(top, offsets, targets, ns=(1, 3))
    >>> [round(float(m[key]), 4) for key in ("recall@1", "recall@3", "hit_rate@3")]
    [0.1667, 0.3333, 0.5]
    >>> round(float(m["ndcg@3"]), 4)  # user 0: (1 + 1/2) / (1 + 1/log2(3)); user 1: 0
    0.4599
    """
    top_ids = np.asarray(top_ids)
    offsets = np.asarray(target_offsets, dtype=np.int64)
    targets = np.asarray(targets).reshape(-1)
    if top_ids.ndim != 2:
        raise ValueError(f"top_ids must be 2-D [users, K], got shape {top_ids.shape}.")
    num_users, k = top_ids.shape
    if offsets.shape != (num_users + 1,):
        raise ValueError(
            f"target_offsets must have shape ({num_users + 1},) for {num_users} users, "
            f"got {offsets.shape}."
        )
    if offsets[0] != 0 or offsets[-1] != len(targets):
        raise ValueError(
            f"target_offsets must start at 0 and end at len(targets)={len(targets)}, "
            f"got {offsets[0]} and {offsets[-1]}."
        )
    if num_users == 0:
        raise ValueError("retrieval_metrics needs at least one user.")
    lengths = np.diff(offsets)
    if np.any(lengths <= 0):
        raise ValueError(
            f"Every user needs at least one target; {int(np.sum(lengths <= 0))} users have none."
        )
    cutoffs = _cutoffs(ns, k, num_items)

    user_of_target = np.repeat(np.arange(num_users, dtype=np.int64), lengths)
    hits, num_unique = _hits(top_ids, user_of_target, targets, num_users)
    discounts = 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))
    ideal = np.concatenate([[0.0], np.cumsum(discounts)])

    result: dict[str, np.ndarray] = {}
    for n, used in cutoffs:
        num_hits = hits[:, :used].sum(axis=1, dtype=np.float64)
        dcg = hits[:, :used] @ discounts[:used]
        result[f"recall@{n}"] = num_hits / lengths
        result[f"hit_rate@{n}"] = (num_hits > 0).astype(np.float64)
        result[f"ndcg@{n}"] = dcg / ideal[np.minimum(num_unique, used)]
    if per_user:
        return result
    return {key: float(values.mean()) for key, values in result.items()}


def _cutoffs(ns: Sequence[int], k: int, num_items: int | None) -> list[tuple[int, int]]:
    """Pairs each requested N with the number of ranked columns it uses."""
    cutoffs = []
    for n in ns:
        if int(n) != n or n < 1:
            raise ValueError(f"Cut-offs must be positive integers, got {n!r}.")
        if n > k and num_items != k:
            raise ValueError(
                f"Cut-off N={n} needs at least {n} retrieved ids per user, got K={k}. "
                "Retrieve more, or pass num_items=K when the catalog holds only K items."
            )
        cutoffs.append((int(n), min(int(n), k)))
    return cutoffs


def _hits(
    top_ids: np.ndarray, user_of_target: np.ndarray, targets: np.ndarray, num_users: int
) -> tuple[np.ndarray, np.ndarray]:
    """Float ``[U, K]`` hit matrix and the number of distinct targets per user.

    Ids are first coded by their rank among the distinct target ids, so that a
    (user, item) pair becomes one int64 key ``user * V + code`` whatever the id range.
    """
    vocab = np.unique(targets)
    keys = np.unique(user_of_target * len(vocab) + np.searchsorted(vocab, targets))
    num_unique = np.bincount(keys // len(vocab), minlength=num_users)

    codes = np.searchsorted(vocab, top_ids)
    np.minimum(codes, len(vocab) - 1, out=codes)
    in_vocab = vocab[codes] == top_ids
    users = np.arange(num_users, dtype=np.int64)[:, None]
    top_keys = users * len(vocab) + codes
    positions = np.minimum(np.searchsorted(keys, top_keys), len(keys) - 1)
    hits = in_vocab & (keys[positions] == top_keys)
    return hits.astype(np.float64), num_unique
