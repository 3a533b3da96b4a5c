"""The two-tower retrieval model (TFRS): a user tower over the history, the item embedding table.

Scores are ``tau * cosine(user, item)`` (section 4.1, tau = 10). Item id 0 is
padding; real items are 1..num_items. Negatives for each positive:

- ``"sampled"``: the paper's scheme, ``negatives_per_positive * batch`` items
  drawn uniformly and shared by the whole (global) batch;
- ``"in_batch"``: the other positives of the (global) batch (TFRS's default),
  with an optional log-Q correction from item probabilities;
- ``"both"``: the union.

Candidates that are the row's own positive item (accidental hits) are never
negatives. The loss sees the catalog size through ``build_loss``.

Under a synchronous ``tf.distribute`` strategy each replica scores its rows
against the candidates of the global batch: the shared draw is the same on
every replica, in-batch positives are all-gathered, and the loss is averaged
over the global batch, so loss and gradients equal those of one replica.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfcroloss.models import towers
from tfcroloss.registry import lookup

NEGATIVE_MODES = ("sampled", "in_batch", "both")


def negatives_per_row(mode: str, batch_size: int, negatives_per_positive: int) -> int:
    """How many negatives each row's loss sees with (global) ``batch_size`` rows: the shared draw
    of ``negatives_per_positive * batch_size`` items and/or the ``batch_size - 1`` other positives.

    >>> negatives_per_row("both", batch_size=256, negatives_per_positive=10)
    2815
    """
    lookup(dict.fromkeys(NEGATIVE_MODES), mode, "negatives mode")
    sampled = batch_size * negatives_per_positive if mode != "in_batch" else 0
    return sampled + (batch_size - 1 if mode != "sampled" else 0)


@tf.keras.utils.register_keras_serializable(package="tfcroloss")
class TwoTowerModel(tfrs.Model):
    """Two-tower retrieval model trained with any Keras loss that takes TFRS's (labels, logits).

    Args:
      num_items: catalog size (ids 1..num_items; 0 is padding).
      loss: a Keras loss with reduction NONE (see ``loss_presets.build_loss``).
      embedding_dim: item and user vector size.
      hidden_dims: hidden layer sizes of the user tower.
      tower: "mean" (the paper's) or "gru".
      temperature_scale: tau, multiplying the cosine.
      negatives: one of ``NEGATIVE_MODES``.
      negatives_per_positive: n_rn, for "sampled" and "both".
      item_probabilities: ``[num_items + 1]`` sampling probabilities of items as
        in-batch candidates; enables the log-Q correction (``"in_batch"`` only).
      seed: seed of the negative sampler; draws are a function of (seed, step),
        so they repeat after a resume and agree across replicas.
    """

    def __init__(
        self,
        num_items: int,
        loss: tf.keras.losses.Loss,
        embedding_dim: int = 32,
        hidden_dims=(32,),
        tower: str = "mean",
        temperature_scale: float = 10.0,
        negatives: str = "sampled",
        negatives_per_positive: int = 10,
        item_probabilities: np.ndarray | None = None,
        seed: int = 0,
    ):
        super().__init__()
        lookup(dict.fromkeys(NEGATIVE_MODES), negatives, "negatives mode")
        if negatives != "in_batch" and negatives_per_positive < 1:
            raise ValueError(f"negatives_per_positive must be >= 1 for {negatives!r} negatives")
        if item_probabilities is not None and negatives != "in_batch":
            raise ValueError("the log-Q correction (item_probabilities) applies to 'in_batch' negatives only")
        if getattr(loss, "reduction", "none") != tf.keras.losses.Reduction.NONE:
            raise ValueError("the model reduces the loss itself across replicas: build the loss with reduction='none'")
        self._config = {
            "num_items": int(num_items), "loss": tf.keras.losses.serialize(loss), "embedding_dim": embedding_dim,
            "hidden_dims": list(hidden_dims), "tower": tower, "temperature_scale": float(temperature_scale),
            "negatives": negatives, "negatives_per_positive": int(negatives_per_positive),
            "item_probabilities": None if item_probabilities is None else np.asarray(item_probabilities).tolist(),
            "seed": int(seed),
        }
        self.num_items = int(num_items)
        self.negatives = negatives
        self.negatives_per_positive = int(negatives_per_positive)
        self.seed = int(seed)
        self.item_embedding = tf.keras.layers.Embedding(num_items + 1, embedding_dim, name="item_embedding")
        self.user_tower = towers.get(tower)(hidden_dims, embedding_dim, name="user_tower")
        self._log_q = (
            None if item_probabilities is None else tf.constant(np.asarray(item_probabilities), tf.float32)
        )
        self.task = tfrs.tasks.Retrieval(
            loss=loss, temperature=1.0 / temperature_scale, remove_accidental_hits=True
        )
        self.temperature_scale = float(temperature_scale)
        # Advanced once per step: replicas all take the first replica's update.
        self.sampler_step = tf.Variable(
            0, dtype=tf.int64, trainable=False, name="sampler_step",
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
        )

    def user_embeddings(self, history: tf.Tensor) -> tf.Tensor:
        """L2-normalised user vectors ``[batch, dim]`` for ``int [batch, maxlen]`` histories."""
        history = tf.cast(history, tf.int32)
        return self.user_tower(self.item_embedding(history), tf.not_equal(history, 0))

    def item_vectors(self, item_ids: tf.Tensor) -> tf.Tensor:
        """L2-normalised item vectors for ``item_ids``."""
        return tf.math.l2_normalize(self.item_embedding(item_ids), axis=-1)

    def catalog_embeddings(self) -> np.ndarray:
        """``[num_items, dim]`` float32 vectors of items 1..num_items (row i is item i + 1)."""
        return self.item_vectors(tf.range(1, self.num_items + 1)).numpy()

    def call(self, history: tf.Tensor) -> tf.Tensor:
        return self.user_embeddings(history)

    def _global_batch(self, positives: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """(global batch size, this replica's first row in it, the global batch's positives).

        The global batch is the local one without a strategy or with one replica per step
        (parameter servers); otherwise it is all-gathered in replica order. The positives
        are gathered only when they serve as in-batch negatives.
        """
        context = tf.distribute.get_replica_context()
        size = tf.shape(positives)[0]
        if context.num_replicas_in_sync == 1:
            return size, tf.constant(0), positives
        sizes = context.all_gather(size[None], axis=0)
        first = tf.reduce_sum(sizes[: context.replica_id_in_sync_group])
        gathered = positives if self.negatives == "sampled" else context.all_gather(positives, axis=0)
        return tf.reduce_sum(sizes), first, gathered

    def _shared_negatives(self, global_batch_size: tf.Tensor, training: bool) -> tf.Tensor:
        # n_rn * global batch ids, the same on every replica: (seed, step) fixes the draw.
        step = self.sampler_step.assign_add(1) if training else self.sampler_step
        return tf.random.stateless_uniform(
            [global_batch_size * self.negatives_per_positive],
            seed=tf.stack([tf.constant(self.seed, tf.int64), tf.convert_to_tensor(step)]),
            minval=1, maxval=self.num_items + 1, dtype=tf.int32,
        )

    def compute_loss(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        users = self.user_embeddings(features["history"])
        positives = tf.cast(features["item_id"], tf.int32)
        batch_size = tf.shape(positives)[0]
        global_batch_size, first, global_positives = self._global_batch(positives)
        candidate_ids, score_mask, probabilities = positives, None, None
        if self.negatives != "sampled":  # this replica's positives first, as TFRS's labels expect
            others = tf.concat([global_positives[:first], global_positives[first + batch_size :]], axis=0)
            candidate_ids = tf.concat([positives, others], axis=0)
        if self.negatives != "in_batch":
            sampled = self._shared_negatives(global_batch_size, training)
            candidate_ids = tf.concat([candidate_ids, sampled], axis=0)
            if self.negatives == "sampled":  # other rows' positives are not negatives here
                score_mask = tf.concat(
                    [tf.eye(batch_size, dtype=tf.bool), tf.ones([batch_size, tf.shape(sampled)[0]], tf.bool)], axis=1
                )
        if self._log_q is not None:
            probabilities = tf.gather(self._log_q, candidate_ids)
        per_example = self.task(
            users,
            self.item_vectors(candidate_ids),
            candidate_ids=candidate_ids,
            candidate_sampling_probability=probabilities,
            score_mask=score_mask,
            compute_metrics=False,
            compute_batch_metrics=False,
        )
        return tf.nn.compute_average_loss(per_example, global_batch_size=global_batch_size)

    def get_config(self) -> dict[str, Any]:
        return dict(self._config)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TwoTowerModel:
        return cls(**{**config, "loss": tf.keras.losses.deserialize(config["loss"])})
