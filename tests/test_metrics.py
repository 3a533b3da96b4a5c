"""Tests for tfcroloss.metrics against hand-worked values and a per-user NumPy reference."""

import math

import numpy as np
import pytest

from tfcroloss.metrics import retrieval_metrics, targets_from_lists


def reference_metrics(top_ids, target_lists, n):
    """Per-user loop straight from the definitions (slow, obviously right)."""
    recall, hit_rate, ndcg = [], [], []
    for row, targets in zip(top_ids, target_lists, strict=True):
        wanted = set(targets)
        hits = [item in wanted for item in row[:n]]
        dcg = sum(1 / math.log2(rank + 2) for rank, hit in enumerate(hits) if hit)
        idcg = sum(1 / math.log2(rank + 2) for rank in range(min(len(wanted), n)))
        recall.append(sum(hits) / len(targets))
        hit_rate.append(float(any(hits)))
        ndcg.append(dcg / idcg)
    return np.array(recall), np.array(hit_rate), np.array(ndcg)


def metrics(top_ids, target_lists, ns, **kwargs):
    offsets, targets = targets_from_lists(target_lists)
    return retrieval_metrics(np.array(top_ids), offsets, targets, ns, **kwargs)


def test_targets_from_lists_builds_csr():
    offsets, targets = targets_from_lists([[4], [], [1, 1, 2]])
    assert offsets.tolist() == [0, 1, 1, 4]
    assert targets.tolist() == [4, 1, 1, 2]
    assert offsets.dtype == np.int64 and targets.dtype == np.int64


def test_duplicated_targets_count_in_recall_denominator():
    # Targets [5, 5, 6]: one distinct hit (5) in the top 2 -> recall 1/3, not 1/2.
    # NDCG@2: DCG = 1 (rank 1); IDCG = 1 + 1/log2(3) for min(|{5, 6}|, 2) = 2 ideal hits.
    m = metrics([[5, 1, 6]], [[5, 5, 6]], ns=(2, 3))
    assert m["recall@2"] == pytest.approx(1 / 3)
    assert m["recall@3"] == pytest.approx(2 / 3)
    assert m["hit_rate@2"] == 1.0
    assert m["ndcg@2"] == pytest.approx(1 / (1 + 1 / math.log2(3)))
    # NDCG@3: DCG = 1 + 1/log2(4) = 1.5; IDCG = 1 + 1/log2(3) = 1.6309.
    assert m["ndcg@3"] == pytest.approx(1.5 / 1.6309297535714575)


def test_ndcg_hand_worked_and_not_comirec_normalisation():
    # Targets {10, 20}; hits at ranks 2 and 4:
    # DCG = 1/log2(3) + 1/log2(5) = 0.6309298 + 0.4306766 = 1.0616064
    # IDCG = 1 + 1/log2(3) = 1.6309298 -> NDCG@4 = 0.6509209
    assert metrics([[1, 10, 2, 20]], [[10, 20]], ns=(4,))["ndcg@4"] == pytest.approx(0.6509209)
    # Targets {1, 2, 3}, one hit at rank 1 in the top 2: DCG = 1, IDCG = 1 + 1/log2(3).
    # ComiRec divides by the IDCG of its 1 hit and would report 1.0.
    assert metrics([[1, 9]], [[1, 2, 3]], ns=(2,))["ndcg@2"] == pytest.approx(0.6131472)


def test_perfect_ranking_scores_one():
    m = metrics([[3, 1, 2, 9], [7, 8, 0, 5]], [[1, 2, 3], [7]], ns=(3, 4))
    for key in ("recall@3", "hit_rate@3", "ndcg@3", "recall@4", "hit_rate@4", "ndcg@4"):
        assert m[key] == pytest.approx(1.0), key


def test_no_hits_scores_zero():
    m = metrics([[1, 2, 3], [4, 5, 6]], [[7], [8, 9]], ns=(1, 3))
    assert all(value == 0.0 for value in m.values())
    assert list(m) == [
        "recall@1", "hit_rate@1", "ndcg@1", "recall@3", "hit_rate@3", "ndcg@3",
    ]  # fmt: skip


def test_catalog_smaller_than_n_uses_all_items():
    # A 3-item catalog fully ranked: "@500" uses all 3. Target 2 at rank 3.
    m = metrics([[1, 3, 2]], [[2]], ns=(2, 500), num_items=3)
    assert m["recall@2"] == 0.0
    assert m["recall@500"] == 1.0
    assert m["ndcg@500"] == pytest.approx(1 / math.log2(4))


def test_k_smaller_than_n_raises():
    with pytest.raises(ValueError, match="N=5 needs at least 5"):
        metrics([[1, 2, 3]], [[2]], ns=(2, 5))
    with pytest.raises(ValueError, match="N=5"):
        metrics([[1, 2, 3]], [[2]], ns=(5,), num_items=10)


def test_per_user_matches_reference_with_arbitrary_ids():
    rng = np.random.default_rng(0)
    num_users, k = 200, 30
    catalog = rng.choice(10**12, size=80, replace=False) - 5 * 10**11  # negative and huge ids
    top_ids = np.stack([rng.choice(catalog, size=k, replace=False) for _ in range(num_users)])
    target_lists = [rng.choice(catalog, size=rng.integers(1, 12)) for _ in range(num_users)]
    offsets, targets = targets_from_lists(target_lists)
    per_user = retrieval_metrics(top_ids, offsets, targets, (1, 10, 30), per_user=True)
    means = retrieval_metrics(top_ids, offsets, targets, (1, 10, 30))
    for n in (1, 10, 30):
        recall, hit_rate, ndcg = reference_metrics(top_ids, target_lists, n)
        np.testing.assert_allclose(per_user[f"recall@{n}"], recall)
        np.testing.assert_allclose(per_user[f"hit_rate@{n}"], hit_rate)
        np.testing.assert_allclose(per_user[f"ndcg@{n}"], ndcg)
        assert means[f"ndcg@{n}"] == pytest.approx(ndcg.mean())


@pytest.mark.parametrize(
    ("offsets", "targets", "message"),
    [
        ([0, 1], [1], "shape \\(3,\\)"),
        ([0, 1, 1], [1], "at least one target"),
        ([0, 1, 3], [1, 2], "end at len\\(targets\\)=2"),
    ],
)
def test_bad_targets_raise(offsets, targets, message):
    with pytest.raises(ValueError, match=message):
        retrieval_metrics(np.array([[1], [2]]), np.array(offsets), np.array(targets), ns=(1,))
