"""The two-tower retrieval model (TFRS): a user tower over the history, the item embedding table.

Scores are ``tau * cosine(user, item)`` (section 4.1, tau = 10). Item id 0 is
padding; real items are 1..num_items. Negatives for each positive:

- ``"sampled"``: the paper's scheme, ``negatives_per_positive * batch`` items
  drawn uniformly and shared by the whole (global) batch;
- ``"in_batch"``: the other positives of the (global) batch (TFRS's default);
- ``"both"``: the union.

Candidates that are the row's own positive item (accidental hits) are never
negatives. The loss sees the catalog size through ``build_loss``.

In-batch negatives are popularity draws, not uniform ones. ``correction`` says how
the loss accounts for that, given ``item_probabilities`` (each item's per-draw
probability as a batch positive):

- ``"log_q"``: TFRS's sampled-softmax correction, ``s_j - log q_j`` on the logits:
  right for softmax cross-entropy (``tfrs_softmax``, the ``softmax`` preset);
- ``"importance"``: the CROLoss family's unbiased (Horvitz-Thompson) rank estimate,
  ``loss.call(labels, logits, candidate_sampling_probability=q)``
  (``docs/unbiased-rank.md``); for ``"both"``, q is the mixture's per-draw
  probability ``(B p_j + U / |I|) / (B + U)`` with B = batch - 1 in-batch and
  U = ``negatives_per_positive * batch`` uniform negatives per row;
- ``"none"``: eq. 24 as if the draws were uniform (biased for in-batch negatives);
- ``"auto"`` (default): ``"none"`` for ``"sampled"`` negatives or without
  ``item_probabilities``, else ``"log_q"`` for softmax-type losses and
  ``"importance"`` for the rest of the CROLoss family.

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

from tfcroloss import CROLoss, LambdaCROLoss
from tfcroloss.models import towers
from tfcroloss.models.optimizers import SparseAdam
from tfcroloss.registry import lookup

NEGATIVE_MODES = ("sampled", "in_batch", "both")
CORRECTIONS = ("auto", "none", "log_q", "importance")
# Item table initializers (Keras identifiers). "uniform" is Keras's Embedding default (+-0.05);
# "glorot_uniform" is TF1's default for tf.get_variable, which the authors' code relies on.
ITEM_INITIALIZERS = {"uniform": "uniform", "glorot_uniform": "glorot_uniform"}


def is_softmax_type(loss: tf.keras.losses.Loss) -> bool:
    """True for losses that are softmax cross-entropy: not of the CROLoss family, or CROLoss
    with the exponential kernel at alpha = 1 (section 3.5); these take the log-Q correction."""
    if isinstance(loss, LambdaCROLoss):
        return False
    if not isinstance(loss, CROLoss):
        return True
    return loss.kernel in ("exponential", "exp") and loss.alpha == 1.0


def resolve_correction(correction: str, negatives: str, loss: tf.keras.losses.Loss, has_probabilities: bool) -> str:
    """The correction ``"auto"`` stands for (see the module docstring); others are checked and returned.

    >>> resolve_correction("auto", "in_batch", CROLoss(100, reduction="none"), has_probabilities=True)
    'importance'
    """
    lookup(dict.fromkeys(CORRECTIONS), correction, "correction")
    if correction == "auto":
        if negatives == "sampled" or not has_probabilities:
            return "none"
        return "log_q" if is_softmax_type(loss) else "importance"
    if correction != "none" and negatives == "sampled":
        raise ValueError(f"correction {correction!r}: 'sampled' negatives are uniform draws; use 'none'")
    if correction != "none" and not has_probabilities:
        raise ValueError(f"correction {correction!r} needs item_probabilities (each item's share of batch positives)")
    if correction == "importance" and not isinstance(loss, CROLoss | LambdaCROLoss):
        raise ValueError(
            f"correction 'importance' needs a CROLoss-family loss, got {type(loss).__name__}; use 'log_q'"
        )
    return correction


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
      item_probabilities: ``[num_items + 1]`` per-draw probabilities of items as
        in-batch candidates (batch positives); ``"in_batch"`` and ``"both"`` only.
      correction: one of ``CORRECTIONS`` (module docstring); ``"auto"`` by default.
      item_initializer: one of ``ITEM_INITIALIZERS``, for the item embedding table.
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
        correction: str = "auto",
        item_initializer: str = "uniform",
    ):
        super().__init__()
        lookup(dict.fromkeys(NEGATIVE_MODES), negatives, "negatives mode")
        if negatives != "in_batch" and negatives_per_positive < 1:
            raise ValueError(f"negatives_per_positive must be >= 1 for {negatives!r} negatives")
        if item_probabilities is not None and negatives == "sampled":
            raise ValueError("item_probabilities apply to 'in_batch' and 'both' negatives only")
        if getattr(loss, "reduction", "none") != tf.keras.losses.Reduction.NONE:
            raise ValueError("the model reduces the loss itself across replicas: build the loss with reduction='none'")
        self._config = {
            "num_items": int(num_items), "loss": tf.keras.losses.serialize(loss), "embedding_dim": embedding_dim,
            "hidden_dims": list(hidden_dims), "tower": tower, "temperature_scale": float(temperature_scale),
            "negatives": negatives, "negatives_per_positive": int(negatives_per_positive),
            "item_probabilities": None if item_probabilities is None else np.asarray(item_probabilities).tolist(),
            "seed": int(seed), "correction": correction, "item_initializer": item_initializer,
        }
        self.correction = resolve_correction(correction, negatives, loss, item_probabilities is not None)
        self.num_items = int(num_items)
        self.negatives = negatives
        self.negatives_per_positive = int(negatives_per_positive)
        self.seed = int(seed)
        self.item_embedding = tf.keras.layers.Embedding(
            num_items + 1, embedding_dim, name="item_embedding",
            embeddings_initializer=lookup(ITEM_INITIALIZERS, item_initializer, "item initializer"),
        )
        self.user_tower = towers.get(tower)(hidden_dims, embedding_dim, name="user_tower")
        self._item_probabilities = (
            None if item_probabilities is None else tf.constant(np.asarray(item_probabilities), tf.float32)
        )
        self.loss_function = loss
        self.task = tfrs.tasks.Retrieval(
            loss=loss, temperature=1.0 / temperature_scale, remove_accidental_hits=True
        )
        self.temperature_scale = float(temperature_scale)
        # Advanced once per step: replicas all take the first replica's update.
        self.sampler_step = tf.Variable(
            0, dtype=tf.int64, trainable=False, name="sampler_step",
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
        )
        self.user_embeddings(tf.zeros([1, 1], tf.int32))  # creates the variables (an optimizer builds on them)

    def item_rows(self, item_ids: tf.Tensor) -> tf.Tensor:
        """The item table's rows for ``item_ids``: with a built ``SparseAdam`` (``adam``), as
        dense Adam has them at this step (its ``lookup``), so every read sees caught-up rows."""
        optimizer = getattr(self, "optimizer", None)
        if isinstance(optimizer, SparseAdam) and optimizer.built:
            return optimizer.lookup(self.item_embedding.embeddings, item_ids)
        return self.item_embedding(item_ids)

    def user_embeddings(self, history: tf.Tensor) -> tf.Tensor:
        """L2-normalised user vectors ``[batch, dim]`` for ``int [batch, maxlen]`` histories."""
        history = tf.cast(history, tf.int32)
        return self.user_tower(self.item_rows(history), tf.not_equal(history, 0))

    def item_vectors(self, item_ids: tf.Tensor) -> tf.Tensor:
        """L2-normalised item vectors for ``item_ids``."""
        return tf.math.l2_normalize(self.item_rows(item_ids), axis=-1)

    def catalog_embeddings(self) -> np.ndarray:
        """``[num_items, dim]`` float32 vectors of items 1..num_items (row i is item i + 1)."""
        return self.item_vectors(tf.range(1, self.num_items + 1)).numpy()

    def call(self, history: tf.Tensor) -> tf.Tensor:
        return self.user_embeddings(history)

    def train_step(self, inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        if isinstance(self.optimizer, SparseAdam):  # its lookups need its per-row state from the first step on
            with tf.init_scope():
                self.optimizer.build(self.trainable_variables)
        return super().train_step(inputs)

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
        candidate_ids, score_mask = positives, None
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
        if self.correction == "none":
            probabilities = None
        else:
            probabilities = self._draw_probabilities(candidate_ids, global_batch_size)
        candidates = self.item_vectors(candidate_ids)
        if self.correction == "importance":
            labels = tf.eye(batch_size, tf.shape(candidate_ids)[0])
            logits = self._logits(users, candidates, labels, candidate_ids, score_mask)
            per_example = self.loss_function.call(labels, logits, candidate_sampling_probability=probabilities)
        else:  # TFRS's pipeline; with "log_q" it subtracts log q from the logits
            per_example = self.task(
                users,
                candidates,
                candidate_ids=candidate_ids,
                candidate_sampling_probability=probabilities,
                score_mask=score_mask,
                compute_metrics=False,
                compute_batch_metrics=False,
            )
        return tf.nn.compute_average_loss(per_example, global_batch_size=global_batch_size)

    def _draw_probabilities(self, candidate_ids: tf.Tensor, global_batch_size: tf.Tensor) -> tf.Tensor:
        """q_j per candidate: the item's share of batch positives, or for ``"both"`` the mixture of
        B = batch - 1 such draws and U = n_rn * batch uniform ones, ``(B p_j + U / |I|) / (B + U)``."""
        popularity = tf.gather(self._item_probabilities, candidate_ids)
        if self.negatives == "in_batch":
            return popularity
        in_batch = tf.cast(global_batch_size - 1, tf.float32)
        uniform = tf.cast(global_batch_size * self.negatives_per_positive, tf.float32)
        return (in_batch * popularity + uniform / self.num_items) / (in_batch + uniform)

    def _logits(self, users: tf.Tensor, candidates: tf.Tensor, labels: tf.Tensor, candidate_ids: tf.Tensor,
                score_mask: tf.Tensor | None) -> tf.Tensor:
        """TFRS ``Retrieval.call``'s logits without its log-Q step: scores / temperature, accidental
        hits and ``score_mask`` set to TFRS's MIN_FLOAT (the loss neither counts nor uses them)."""
        scores = tf.linalg.matmul(users, candidates, transpose_b=True) / (1.0 / self.temperature_scale)
        scores = tfrs.layers.loss.RemoveAccidentalHits()(labels, scores, candidate_ids)
        if score_mask is not None:
            scores = tf.where(score_mask, scores, tfrs.layers.loss.MIN_FLOAT)
        return scores

    def get_config(self) -> dict[str, Any]:
        return dict(self._config)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TwoTowerModel:
        return cls(**{**config, "loss": tf.keras.losses.deserialize(config["loss"])})
