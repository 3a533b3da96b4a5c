"""Training batches streamed from Parquet shards, against the in-memory split's cuts."""

from __future__ import annotations

import collections
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from tfcroloss.pipelines.data.dataset import PreparedDataset
from tfcroloss.pipelines.data.inputs import positive_probabilities, training_dataset
from tfcroloss.pipelines.data.prepare import PrepareConfig, prepare_file
from tfcroloss.pipelines.data.synthetic import write_synthetic

MAXLEN = 5


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    root = tmp_path_factory.mktemp("streamed")
    write_synthetic(root / "log.txt", "tiny", seed=4)
    prepare_file("comirec", root / "log.txt", root / "out", config=PrepareConfig(users_per_shard=9))
    return PreparedDataset.load(root / "out").train


def all_cuts(split, min_cut=4):
    """Counter of (history, target) over every training cut of the split (NumPy reference)."""
    cuts = collections.Counter()
    for i in range(split.num_users):
        items = split.sequence(i).tolist()
        for k in range(min_cut, len(items)):
            history = items[max(0, k - MAXLEN) : k]
            cuts[(tuple(history + [0] * (MAXLEN - len(history))), items[k])] += 1
    return cuts


def drawn(dataset, count):
    examples = collections.Counter()
    for batch in dataset.unbatch().take(count):
        examples[(tuple(batch["history"].numpy().tolist()), int(batch["item_id"]))] += 1
    return examples


class Context:
    """An ``InputContext`` of ``pipelines`` pipelines with one replica each."""

    def __init__(self, pipeline, pipelines):
        self.input_pipeline_id, self.num_input_pipelines, self.num_replicas_in_sync = pipeline, pipelines, pipelines

    def get_per_replica_batch_size(self, batch_size):
        return batch_size // self.num_replicas_in_sync


@pytest.mark.parametrize("pipelines", [1, 2, None])  # None: one more pipeline than shards
def test_all_cuts_epoch_streams_every_cut_once_over_the_pipelines(sharded, pipelines):
    assert len(sharded.shards) > 2
    pipelines = pipelines or len(sharded.shards) + 1
    reference = all_cuts(sharded)
    together = collections.Counter()
    for pipeline in range(pipelines):
        dataset = training_dataset(sharded, batch_size=pipelines, maxlen=MAXLEN, seed=3, scheme="all_cuts",
                                   input_context=Context(pipeline, pipelines) if pipelines > 1 else None)
        # An epoch of one pipeline: its own cuts; count them from the in-memory split's shards.
        own = sum(reference.values()) if pipelines == 1 else None
        if own is None:
            own = _pipeline_cuts(sharded, pipeline, pipelines, seed=3)
        together += drawn(dataset, own)
    assert together == reference


def _pipeline_cuts(split, pipeline, pipelines, seed):
    """How many cuts a pipeline streams in epoch 0: its shards' (or, with fewer shards than
    pipelines, its users') cuts. The epoch's shard order comes from the same index_shuffle."""
    count = len(split.shards)
    order = [int(tf.random.experimental.index_shuffle(k, tf.constant([seed, -1], tf.int64), count - 1))
             for k in range(count)]
    lengths = split.lengths
    cuts, first = [], 0
    for shard in split.shards:
        cuts.append(np.maximum(lengths[first : first + shard.users] - 4, 0))
        first += shard.users
    if count >= pipelines:
        return int(sum(cuts[number].sum() for number in order[pipeline::pipelines]))
    return int(sum(c[pipeline::pipelines].sum() for c in cuts))


def test_random_users_epoch_gives_every_user_one_valid_cut(sharded):
    reference = all_cuts(sharded)
    users = int(np.count_nonzero(sharded.lengths > 4))
    first = drawn(training_dataset(sharded, batch_size=1, maxlen=MAXLEN, seed=5), users)
    assert sum(first.values()) == users and set(first) <= set(reference)
    targets = collections.Counter(target for _, target in first.elements())
    # One cut per user: no target appears more often than the users who hold it.
    holders = collections.Counter(item for i in range(sharded.num_users) for item in set(sharded.sequence(i)[4:].tolist())
                                  if sharded.lengths[i] > 4)
    assert all(count <= holders[item] for item, count in targets.items())


def test_streams_are_seeded_and_resume_where_they_were(sharded):
    def batches(seed, start_step=0, count=6):
        dataset = training_dataset(sharded, batch_size=16, maxlen=MAXLEN, seed=seed, start_step=start_step)
        return [batch["history"].numpy().tolist() for batch in dataset.take(count)]

    assert batches(1) == batches(1) and batches(1) != batches(2)
    assert batches(1, start_step=4, count=2) == batches(1)[4:]


def test_streamed_positives_follow_positive_probabilities(sharded):
    """Over whole epochs a streamed batch's positive has the in-memory law (random_users)."""
    users = int(np.count_nonzero(sharded.lengths > 4))
    epochs = 60
    drawn_targets = np.zeros(sharded.items.max() + 1)
    dataset = training_dataset(sharded, batch_size=users, maxlen=MAXLEN, seed=9)
    for batch in dataset.take(epochs):
        np.add.at(drawn_targets, batch["item_id"].numpy(), 1)
    expected = positive_probabilities(sharded, int(sharded.items.max()), "random_users")
    assert np.abs(drawn_targets / drawn_targets.sum() - expected).sum() < 0.1
    in_memory = dataclasses.replace(sharded, shards=())
    assert np.allclose(expected, positive_probabilities(in_memory, int(sharded.items.max()), "random_users"))
