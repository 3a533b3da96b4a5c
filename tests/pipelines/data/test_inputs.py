"""Training cuts and evaluation samples against a NumPy reference and hand-worked values."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfcroloss.pipelines.data.dataset import DataError, Split
from tfcroloss.pipelines.data.inputs import (
    MIN_CUT,
    check_batches,
    evaluation_samples,
    positive_probabilities,
    training_dataset,
)


def make_split(*sequences):
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in sequences])]).astype(np.int64)
    items = np.concatenate([np.asarray(s, np.int32) for s in sequences])
    return Split(
        user_index=np.arange(10, 10 + len(sequences), dtype=np.int64), offsets=offsets, items=items
    )


# User 0 has 7 items, user 1 has 5, user 2 has 4 (no cut >= 4 is possible), user 3 has 1.
SPLIT = make_split([11, 12, 13, 14, 15, 16, 17], [21, 22, 23, 24, 25], [31, 32, 33, 34], [41])


def test_evaluation_samples_worked_example():
    samples = evaluation_samples(SPLIT, maxlen=3)
    # k = int(0.8 * len): 5, 4, 3, 0 -> user 3 is skipped.
    assert samples.user_index.tolist() == [10, 11, 12]
    assert samples.history.tolist() == [[13, 14, 15], [22, 23, 24], [31, 32, 33]]
    assert [samples.targets_of(i).tolist() for i in range(3)] == [[16, 17], [25], [34]]
    assert samples.target_offsets.tolist() == [0, 2, 3, 4]
    short = evaluation_samples(SPLIT, maxlen=6)
    assert short.history[1].tolist() == [21, 22, 23, 24, 0, 0]  # zero-padded at the end
    assert short.history.dtype == np.int32 and short.targets.dtype == np.int32


def reference_cut(split, user, cut, maxlen):
    sequence = split.sequence(user)
    history = sequence[max(0, cut - maxlen) : cut].tolist()
    return history + [0] * (maxlen - len(history)), int(sequence[cut])


def collect(dataset, batches=None):
    rows = []
    for batch in dataset.take(batches) if batches else dataset:
        rows += list(
            zip(
                map(tuple, batch["history"].numpy()), batch["item_id"].numpy().tolist(), strict=True
            )
        )
    return rows


def test_all_cuts_are_epochs_over_every_cut():
    dataset = training_dataset(SPLIT, batch_size=2, maxlen=3, seed=5, scheme="all_cuts")
    # Cuts: user 0 -> k in 4..6 (3 cuts), user 1 -> k = 4 (1 cut); users 2 and 3 give none.
    expected = [reference_cut(SPLIT, 0, k, 3) for k in (4, 5, 6)] + [reference_cut(SPLIT, 1, 4, 3)]
    expected = sorted((tuple(h), t) for h, t in expected)
    first = collect(dataset, batches=2)  # 4 cuts in batches of 2: one epoch
    assert sorted(first) == expected
    assert (
        collect(training_dataset(SPLIT, batch_size=2, maxlen=3, seed=5, scheme="all_cuts"), 2)
        == first
    )
    assert ((12, 13, 14), 15) in first  # user 0, k = 4
    epochs = collect(dataset, batches=16)
    assert all(sorted(epochs[i : i + 4]) == expected for i in range(0, 32, 4))
    assert len({tuple(epochs[i : i + 4]) for i in range(0, 32, 4)}) > 1  # a new order per epoch


@pytest.mark.parametrize("scheme", ["random_users", "all_cuts"])
def test_start_step_resumes_the_stream(scheme):
    def stream(start_step, batches):
        dataset = training_dataset(
            SPLIT, batch_size=2, maxlen=3, seed=5, scheme=scheme, start_step=start_step
        )
        return collect(dataset, batches)

    assert stream(0, 7)[2 * 3 :] == stream(3, 4)


def test_all_cuts_shards_are_disjoint_and_complete():
    split = make_split(
        *[list(range(100 * u + 1, 100 * u + 1 + n)) for u, n in enumerate([9, 6, 12, 5])]
    )
    whole = sorted(
        collect(training_dataset(split, batch_size=4, maxlen=4, seed=1, scheme="all_cuts"), 4)
    )
    shards = []
    for pipeline in range(2):
        context = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=pipeline, num_replicas_in_sync=2
        )
        shard = training_dataset(
            split, batch_size=4, maxlen=4, seed=1, scheme="all_cuts", input_context=context
        )
        assert shard.element_spec["history"].shape.as_list() == [None, 4]
        shards.append(collect(shard, 4))
    assert sorted(shards[0] + shards[1]) == whole
    assert len(whole) == (9 - 4) + (6 - 4) + (12 - 4) + (5 - 4)


def test_random_users_draws_distinct_users_and_valid_cuts():
    lengths = [5, 8, 12, 30, 6, 9, 7, 15]
    split = make_split(*[[1000 * (u + 1) + i for i in range(n)] for u, n in enumerate(lengths)])
    dataset = training_dataset(split, batch_size=5, maxlen=6, seed=3)
    assert dataset.element_spec["history"].shape.as_list() == [5, 6]
    seen_cuts = set()
    for batch in dataset.take(60):
        targets = batch["item_id"].numpy()
        users, cuts = targets // 1000 - 1, targets % 1000
        assert len(set(users)) == 5
        for user, cut, history in zip(users, cuts, batch["history"].numpy(), strict=True):
            assert 4 <= cut < lengths[user]
            assert history.tolist() == reference_cut(split, user, cut, 6)[0]
            seen_cuts.add((user, cut))
    assert len(seen_cuts) > 40  # most of the 62 cuts are reached
    again = collect(training_dataset(split, batch_size=5, maxlen=6, seed=3), 10)
    assert again == collect(dataset, 10)
    assert collect(training_dataset(split, batch_size=5, maxlen=6, seed=4), 10) != again
    context = tf.distribute.InputContext(
        num_input_pipelines=2, input_pipeline_id=1, num_replicas_in_sync=2
    )
    sharded = training_dataset(split, batch_size=4, maxlen=6, seed=3, input_context=context)
    assert sharded.element_spec["item_id"].shape.as_list() == [2]


def test_bad_arguments():
    with pytest.raises(DataError, match="batch_size 3 is larger than the 2 training users"):
        training_dataset(SPLIT, batch_size=3, maxlen=3, seed=0)
    with pytest.raises(DataError, match="unknown scheme 'epochs'; valid schemes: random_users, all_cuts"):
        training_dataset(SPLIT, batch_size=1, maxlen=3, seed=0, scheme="epochs")
    with pytest.raises(DataError, match="no training user has more than min_cut=9"):
        training_dataset(SPLIT, batch_size=1, maxlen=3, seed=0, min_cut=9)
    with pytest.raises(DataError, match="maxlen must be >= 1, got 0"):
        evaluation_samples(SPLIT, maxlen=0)
    with pytest.raises(DataError, match="batch_size 3 is larger than the 2 training users"):
        check_batches(SPLIT, batch_size=3, scheme="random_users")
    check_batches(SPLIT, batch_size=3, scheme="all_cuts")  # epochs of cuts: any batch size


def small_split():
    # user 0: 6 items (cuts 4, 5), user 1: 5 items (cut 4), user 2: 3 items (never a target)
    sequences = [[1, 2, 3, 4, 5, 6], [2, 3, 4, 1, 7], [5, 6, 7]]
    offsets = np.cumsum([0] + [len(s) for s in sequences])
    return Split(user_index=np.arange(3), offsets=offsets, items=np.concatenate(sequences).astype(np.int32))


def test_random_users_probability_is_uniform_user_then_uniform_cut():
    p = positive_probabilities(small_split(), num_items=7, scheme="random_users")
    want = np.zeros(8)
    want[[5, 6]] += 0.5 * 0.5  # user 0: items 5, 6 with probability 1/2 each
    want[7] += 0.5  # user 1: item 7
    np.testing.assert_allclose(p, want)


def test_all_cuts_probability_counts_target_positions():
    p = positive_probabilities(small_split(), num_items=7, scheme="all_cuts")
    np.testing.assert_allclose(p[[5, 6, 7]], [1 / 3, 1 / 3, 1 / 3])


def test_probability_follows_min_cut():
    p = positive_probabilities(small_split(), num_items=7, scheme="all_cuts", min_cut=MIN_CUT + 1)
    np.testing.assert_allclose(p[6], 1.0)  # only user 0's last item is a target


def test_probability_matches_the_batches_drawn(tiny_dataset):
    from tfcroloss.pipelines.data.dataset import PreparedDataset

    dataset = PreparedDataset.load(tiny_dataset)
    p = positive_probabilities(dataset.train, dataset.num_items, "random_users")
    batches = training_dataset(dataset.train, batch_size=16, maxlen=5, seed=0).take(400)
    drawn = np.concatenate([b["item_id"].numpy() for b in batches])
    frequency = np.bincount(drawn, minlength=dataset.num_items + 1) / drawn.size
    assert np.abs(frequency - p).sum() < 0.15  # total variation of 6,400 draws from the exact law
