"""Model inputs from a prepared split: ``tf.data`` training cuts and evaluation samples.

A *cut* k of a user's time-ordered items splits them into a history (the last ``maxlen`` items
before k, zero-padded at the end, the authors' layout) and a target ``items[k]``. Training cuts are
drawn with stateless random ops inside the graph: nothing runs in Python per sample or per batch.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from tfcroloss.pipelines.data.dataset import DataError, Split
from tfcroloss.registry import lookup

TRAINING_SCHEMES = ("random_users", "all_cuts")


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


def training_dataset(
    split: Split,
    *,
    batch_size: int,
    maxlen: int,
    seed: int,
    scheme: str = "random_users",
    min_cut: int = 4,
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
    """
    _check_positive(batch_size=batch_size, maxlen=maxlen, min_cut=min_cut)
    lookup(dict.fromkeys(TRAINING_SCHEMES), scheme, "scheme", error=DataError)
    pipeline, num_pipelines, batches_per_step = 0, 1, 1
    if input_context is not None:
        batch_size = input_context.get_per_replica_batch_size(batch_size)
        pipeline, num_pipelines = input_context.input_pipeline_id, input_context.num_input_pipelines
        batches_per_step = max(1, input_context.num_replicas_in_sync // num_pipelines)
    lengths = split.lengths
    eligible = np.flatnonzero(lengths > min_cut)
    if eligible.size == 0:
        raise DataError(f"no training user has more than min_cut={min_cut} items")
    items = tf.constant(split.items, tf.int32)
    starts = tf.constant(split.offsets[eligible], tf.int64)
    lengths = tf.constant(lengths[eligible], tf.int64)

    def batch(users: tf.Tensor, cuts: tf.Tensor) -> dict[str, tf.Tensor]:
        start = tf.gather(starts, users)
        sizes = tf.minimum(cuts, maxlen)
        steps = tf.range(maxlen, dtype=tf.int64)
        positions = (start + cuts - sizes)[:, None] + steps
        valid = steps < sizes[:, None]
        history = tf.where(valid, tf.gather(items, tf.where(valid, positions, 0)), 0)
        return {"history": history, "item_id": tf.gather(items, start + cuts)}

    if scheme == "random_users":
        if batch_size > eligible.size:
            raise DataError(
                f"batch_size {batch_size} is larger than the {eligible.size} training users "
                f"with more than min_cut={min_cut} items; lower batch_size"
            )

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
            span = tf.gather(lengths, users) - min_cut
            cuts = min_cut + tf.minimum(
                tf.cast(uniform * tf.cast(span, tf.float64), tf.int64), span - 1
            )
            return batch(users, cuts)

        dataset = tf.data.Dataset.counter(start=start_step * batches_per_step).map(random_batch)
    else:
        cuts_per_user = split.lengths[eligible] - min_cut
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


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise DataError(f"{name} must be >= 1, got {value}")
