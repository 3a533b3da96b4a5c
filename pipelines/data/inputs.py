"""Model inputs from a prepared split: ``tf.data`` training cuts and evaluation samples.

A *cut* k of a user's time-ordered items splits them into a history (the last ``maxlen`` items
before k, zero-padded at the end, the authors' layout) and a target ``items[k]``. Training cuts are
drawn with stateless random ops inside the graph: nothing runs in Python per sample or per batch;
``positive_probabilities`` is the law of a batch's positive under the same rule (``training_cuts``).

A split read from shards (``Split.shards``, format 2) is streamed: the input pipeline reads the
shard files with ``tf.io.read_file`` by the byte ranges of ``shards.json`` (no Python, so it runs
on parameter-server workers too), a few shards at a time; no process holds the split in the input
pipeline and no split travels inside a graph.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import tensorflow as tf

from tfcroloss.pipelines.data.dataset import DataError, Split
from tfcroloss.pipelines.data.shards import Shard
from tfcroloss.registry import lookup

TRAINING_SCHEMES = ("random_users", "all_cuts")
# A training cut k is at least MIN_CUT: every training target has at least that much history.
MIN_CUT = 4
SHARDS_READ_AT_ONCE = 8  # shards a streamed pipeline reads together (and draws each batch from)
_CHUNK = 1024  # the cuts of a shard are drawn this many at a time


@dataclasses.dataclass(frozen=True)
class EvalSamples:
    """Histories and targets of the evaluated users of a split (targets in CSR layout)."""

    history: np.ndarray  # int32 [U, maxlen], zero-padded at the end
    target_offsets: np.ndarray  # int64 [U+1]
    targets: np.ndarray  # int32 [T]
    user_index: np.ndarray  # int64 [U]: index into the user vocabulary

    @property
    def num_users(self) -> int:
        return int(self.user_index.shape[0])

    def targets_of(self, i: int) -> np.ndarray:
        return self.targets[self.target_offsets[i] : self.target_offsets[i + 1]]


def evaluation_samples(split: Split, *, maxlen: int, history_fraction: float = 0.8) -> EvalSamples:
    """ComiRec evaluation: k = int(history_fraction * len), history = last ``maxlen`` of
    items[:k], targets = items[k:]. Users with k == 0 or no target are skipped."""
    _check_positive(maxlen=maxlen)
    if not 0 < history_fraction < 1:
        raise DataError(f"history_fraction must be in (0, 1), got {history_fraction}")
    lengths = split.lengths
    cuts = (history_fraction * lengths).astype(np.int64)
    users = np.flatnonzero((cuts > 0) & (cuts < lengths))
    starts, cuts, lengths = split.offsets[users], cuts[users], lengths[users]
    history = _histories(split.items, starts, cuts, maxlen)
    counts = lengths - cuts
    target_offsets = np.zeros(users.size + 1, np.int64)
    np.cumsum(counts, out=target_offsets[1:])
    positions = np.repeat(starts + cuts - target_offsets[:-1], counts) + np.arange(
        target_offsets[-1]
    )
    return EvalSamples(
        history=history,
        target_offsets=target_offsets,
        targets=split.items[positions],
        user_index=split.user_index[users],
    )


def _histories(items: np.ndarray, starts: np.ndarray, cuts: np.ndarray, maxlen: int) -> np.ndarray:
    sizes = np.minimum(cuts, maxlen)
    steps = np.arange(maxlen)
    positions = (starts + cuts - sizes)[:, None] + steps
    valid = steps < sizes[:, None]
    return np.where(valid, items[np.where(valid, positions, 0)], 0).astype(np.int32)


def training_cuts(split: Split, min_cut: int = MIN_CUT) -> np.ndarray:
    """``int64 [users]``: how many training cuts each user of ``split`` gives, the cuts k in
    [min_cut, len - 1] (0 for a user with at most ``min_cut`` items)."""
    return np.maximum(split.lengths - min_cut, 0).astype(np.int64)


def check_batches(split: Split, *, batch_size: int, scheme: str, min_cut: int = MIN_CUT) -> None:
    """Raises ``DataError`` when ``training_dataset`` cannot draw batches of ``batch_size`` from
    ``split`` under ``scheme`` (no training user, or fewer than a ``random_users`` batch)."""
    _check_positive(batch_size=batch_size, min_cut=min_cut)
    lookup(dict.fromkeys(TRAINING_SCHEMES), scheme, "scheme", error=DataError)
    users = int(np.count_nonzero(training_cuts(split, min_cut)))
    if users == 0:
        raise DataError(f"no training user has more than min_cut={min_cut} items")
    if scheme == "random_users" and batch_size > users:
        raise DataError(
            f"batch_size {batch_size} is larger than the {users} training users "
            f"with more than min_cut={min_cut} items; lower batch_size"
        )


def positive_probabilities(split: Split, num_items: int, scheme: str, min_cut: int = MIN_CUT) -> np.ndarray:
    """``[num_items + 1]`` float64: the probability that a training batch's positive is item i,
    under ``scheme`` (what an in-batch negative's q_j is; ``training_dataset`` draws the batches).

    ``random_users`` takes a uniform user with a training cut and a uniform cut of that user, the
    positive being the item at the cut; ``all_cuts`` takes every (user, cut) pair equally often.
    """
    cuts = training_cuts(split, min_cut)
    lengths = split.lengths
    position = np.arange(len(split.items)) - np.repeat(split.offsets[:-1], lengths)
    user = np.repeat(np.arange(len(lengths)), lengths)
    target = (position >= min_cut) & (cuts[user] > 0)
    weights = 1.0 / cuts[user[target]] if scheme == "random_users" else np.ones(int(target.sum()))
    probabilities = np.bincount(split.items[target], weights=weights, minlength=num_items + 1).astype(np.float64)
    return probabilities / probabilities.sum()


def _examples(items: tf.Tensor, start: tf.Tensor, cuts: tf.Tensor, maxlen: int) -> dict[str, tf.Tensor]:
    """Training examples of sequences starting at ``start`` in ``items``, cut at ``cuts``: the last
    ``maxlen`` items before the cut (left-aligned, 0-padded) and the item at the cut."""
    sizes = tf.minimum(cuts, maxlen)
    steps = tf.range(maxlen, dtype=tf.int64)
    positions = (start + cuts - sizes)[:, None] + steps
    valid = steps < sizes[:, None]
    history = tf.where(valid, tf.gather(items, tf.where(valid, positions, 0)), 0)
    return {"history": history, "item_id": tf.gather(items, start + cuts)}


def training_dataset(
    split: Split,
    *,
    batch_size: int,
    maxlen: int,
    seed: int,
    scheme: str = "random_users",
    min_cut: int = MIN_CUT,
    input_context: tf.distribute.InputContext | None = None,
    start_step: int = 0,
) -> tf.data.Dataset:
    """Training batches ``{"history": int32 [B, maxlen], "item_id": int32 [B]}``.

    Only users with more than ``min_cut`` items can give a cut k in [min_cut, len - 1].
    - ``"random_users"`` (the authors' sampler, infinite): each step takes ``batch_size`` distinct
      users uniformly at random and one uniform cut for each.
    - ``"all_cuts"`` (infinite): epochs over every (user, cut) pair, each in its own seeded random
      order, the last batch of an epoch possibly smaller.
    Batches depend only on ``seed``. With ``input_context``, ``batch_size`` is the global batch:
    each input pipeline yields its per-replica share, from its own random stream
    (``random_users``) or its own shard of the cuts (``all_cuts``). The stream starts after
    ``start_step`` (global) training steps, exactly where an uninterrupted run would be: a
    pipeline feeding several replicas has given each of them a batch per step.

    A split with ``shards`` is streamed from them in epochs (``_streamed``): each epoch visits
    the shards in a seeded order, each pipeline its own share of them (under parameter-server
    training each worker is a pipeline), reading ``SHARDS_READ_AT_ONCE`` at a time and taking
    their cuts in a seeded order: ``random_users`` gives every user with a cut one uniform cut
    per epoch, ``all_cuts`` every cut once per epoch. A batch's users therefore come from the
    shards being read, not from the whole split; over an epoch the law of a batch's positive is
    ``positive_probabilities``' as in memory.
    """
    _check_positive(maxlen=maxlen)
    pipeline, num_pipelines, batches_per_step = 0, 1, 1
    if input_context is not None:
        batch_size = input_context.get_per_replica_batch_size(batch_size)
        pipeline, num_pipelines = input_context.input_pipeline_id, input_context.num_input_pipelines
        batches_per_step = max(1, input_context.num_replicas_in_sync // num_pipelines)
    check_batches(split, batch_size=batch_size, scheme=scheme, min_cut=min_cut)
    if split.shards:
        worker = _parameter_server_worker()
        if worker is not None:  # every worker is a pipeline; the steps are shared among them
            pipeline, num_pipelines = worker
            batches_per_step, start_step = 1, start_step // num_pipelines
        streamed = _streamed(split.shards, batch_size=batch_size, maxlen=maxlen, seed=seed, scheme=scheme,
                             min_cut=min_cut, pipeline=pipeline, num_pipelines=num_pipelines)
        return streamed.skip(start_step * batches_per_step).prefetch(tf.data.AUTOTUNE)
    cuts_per_user = training_cuts(split, min_cut)
    eligible = np.flatnonzero(cuts_per_user)
    cuts_per_user = cuts_per_user[eligible]
    items = tf.constant(split.items, tf.int32)
    starts = tf.constant(split.offsets[eligible], tf.int64)
    spans = tf.constant(cuts_per_user, tf.int64)

    def batch(users: tf.Tensor, cuts: tf.Tensor) -> dict[str, tf.Tensor]:
        return _examples(items, tf.gather(starts, users), cuts, maxlen)

    if scheme == "random_users":

        def random_batch(step: tf.Tensor) -> dict[str, tf.Tensor]:
            stream = step * num_pipelines + pipeline
            users = tf.random.experimental.index_shuffle(
                tf.range(batch_size, dtype=tf.int64),
                seed=tf.stack([tf.constant(seed, tf.int64), 2 * stream]),
                max_index=eligible.size - 1,
            )
            uniform = tf.random.stateless_uniform(
                [batch_size],
                seed=tf.stack([tf.constant(seed, tf.int64), 2 * stream + 1]),
                dtype=tf.float64,
            )
            span = tf.gather(spans, users)
            cuts = min_cut + tf.minimum(
                tf.cast(uniform * tf.cast(span, tf.float64), tf.int64), span - 1
            )
            return batch(users, cuts)

        dataset = tf.data.Dataset.counter(start=start_step * batches_per_step).map(random_batch)
    else:
        first_cut = tf.constant(np.cumsum(cuts_per_user) - cuts_per_user, tf.int64)
        total = int(cuts_per_user.sum())

        def epoch(epoch_index: tf.Tensor) -> tf.data.Dataset:
            def shuffled_batch(index: tf.Tensor) -> dict[str, tf.Tensor]:
                cut_id = tf.random.experimental.index_shuffle(
                    index,
                    seed=tf.stack([tf.constant(seed, tf.int64), epoch_index]),
                    max_index=total - 1,
                )
                users = tf.searchsorted(first_cut, cut_id, side="right") - 1
                return batch(users, min_cut + cut_id - tf.gather(first_cut, users))

            return (
                tf.data.Dataset.range(pipeline, total, num_pipelines)
                .batch(batch_size)
                .map(shuffled_batch)
            )

        batches_per_epoch = -(-len(range(pipeline, total, num_pipelines)) // batch_size)
        first_epoch, skipped = divmod(start_step * batches_per_step, batches_per_epoch)
        dataset = tf.data.Dataset.counter(start=first_epoch).flat_map(epoch).skip(skipped)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _parameter_server_worker() -> tuple[tf.Tensor, int] | None:
    """(this worker's index, the number of workers) inside a parameter-server worker's input
    function, else None."""
    try:
        index = tf.distribute.coordinator.experimental_get_current_worker_index()
    except (RuntimeError, ValueError):
        return None
    return index, len(json.loads(os.environ["TF_CONFIG"])["cluster"]["worker"])


def _streamed(
    shards: tuple[Shard, ...],
    *,
    batch_size: int,
    maxlen: int,
    seed: int,
    scheme: str,
    min_cut: int,
    pipeline: int | tf.Tensor,
    num_pipelines: int,
) -> tf.data.Dataset:
    """Batches streamed from ``shards`` (see ``training_dataset``). With fewer shards than
    pipelines, every pipeline reads every shard and keeps every ``num_pipelines``-th user."""
    count = len(shards)
    paths = tf.constant([shard.path for shard in shards])
    ranges = tf.constant([[*shard.ranges[1], *shard.ranges[2]] for shard in shards], tf.int64)
    share_files = count >= num_pipelines
    seed = tf.constant(seed, tf.int64)

    def examples(epoch: tf.Tensor, number: tf.Tensor) -> tf.data.Dataset:
        data = tf.io.read_file(tf.gather(paths, number))
        lengths_from, lengths_to, items_from, items_to = tf.unstack(tf.gather(ranges, number))
        lengths = tf.cast(tf.io.decode_raw(tf.strings.substr(data, lengths_from, lengths_to - lengths_from), tf.int32), tf.int64)
        items = tf.io.decode_raw(tf.strings.substr(data, items_from, items_to - items_from), tf.int32)
        spans = tf.maximum(lengths - min_cut, 0)
        mine = spans > 0
        if not share_files:
            mine &= tf.range(tf.size(lengths, tf.int64)) % num_pipelines == tf.cast(pipeline, tf.int64)
        users = tf.where(mine)[:, 0]
        starts = tf.gather(tf.cumsum(lengths, exclusive=True), users)
        spans = tf.gather(spans, users)
        stream = 4 * (epoch * count + number)

        def history(start: tf.Tensor, cuts: tf.Tensor) -> dict[str, tf.Tensor]:
            return _examples(items, start, cuts, maxlen)

        if scheme == "random_users":
            total = tf.size(users, tf.int64)

            def chunk(index: tf.Tensor) -> dict[str, tf.Tensor]:
                user = tf.random.experimental.index_shuffle(index, tf.stack([seed, stream]), total - 1)
                chunk_seed = tf.random.experimental.stateless_fold_in(tf.stack([seed, stream + 1]), index[0])
                uniform = tf.random.stateless_uniform(tf.shape(index), chunk_seed, dtype=tf.float64)
                span = tf.gather(spans, user)
                return history(tf.gather(starts, user), min_cut + tf.minimum(tf.cast(uniform * tf.cast(span, tf.float64), tf.int64), span - 1))
        else:
            first_cut = tf.cumsum(spans, exclusive=True)
            total = tf.reduce_sum(spans)

            def chunk(index: tf.Tensor) -> dict[str, tf.Tensor]:
                cut = tf.random.experimental.index_shuffle(index, tf.stack([seed, stream]), total - 1)
                user = tf.searchsorted(first_cut, cut, side="right") - 1
                return history(tf.gather(starts, user), min_cut + cut - tf.gather(first_cut, user))

        return tf.data.Dataset.range(total).batch(_CHUNK).map(chunk).unbatch()

    def epoch(index: tf.Tensor) -> tf.data.Dataset:
        order = tf.data.Dataset.range(count).map(
            lambda k: tf.random.experimental.index_shuffle(k, tf.stack([seed, -1 - index]), count - 1)
        )
        if share_files:
            order = order.shard(num_pipelines, pipeline)
        return order.interleave(
            lambda number: examples(index, number), cycle_length=min(count, SHARDS_READ_AT_ONCE),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True,
        )

    return tf.data.Dataset.counter().flat_map(epoch).batch(batch_size, drop_remainder=True)


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise DataError(f"{name} must be >= 1, got {value}")
