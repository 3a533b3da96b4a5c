"""``tfrs.tasks.Retrieval`` for the CROLoss family: TFRS's ``q`` reaches the loss.

TFRS's task applies ``candidate_sampling_probability`` as the log-Q shift of the logits,
right for softmax cross-entropy but not for a rank estimate, and never hands ``q`` to the
loss. :class:`Retrieval` is ``tfrs.tasks.Retrieval`` with the same arguments, metrics and
call, except that with a ``tfcroloss`` loss (``CROLoss``, ``LambdaCROLoss``) it leaves the
logits unshifted and gives ``q`` to the loss, which weights each negative by ``1 / (N q_j)``
(the importance-weighted rank, ``docs/unbiased-rank.md``). Temperature, accidental-hit
removal, ``score_mask``, metrics, batch metrics, loss metrics and the loss's reduction are
TFRS's own. With any other loss it is TFRS's task unchanged (log-Q included). A TFRS user
changes one name: ``tfrs.tasks.Retrieval(...)`` becomes ``tfcroloss.tfrs.Retrieval(...)``
(``docs/tfrs.md``).

Loading this module loads the tf-keras flavour (``tfcroloss.losses``) and TFRS.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf  # tf-keras as tf.keras: `import tfcroloss` set TF_USE_LEGACY_KERAS
import tensorflow_recommenders as tfrs

from tfcroloss.losses import LossWrapper

__all__ = ["Retrieval"]


class Retrieval(tfrs.tasks.Retrieval):
    """``tfrs.tasks.Retrieval`` that hands ``candidate_sampling_probability`` to a CROLoss-family
    loss instead of shifting the logits (same arguments as TFRS's task).

    With a ``tfcroloss`` loss, ``candidate_sampling_probability`` (``[num_candidates]``, each
    candidate's probability per draw) goes to ``loss.call(..., candidate_sampling_probability=q)``;
    ``num_hard_negatives`` cannot go with it (the hardest negatives are not draws from ``q``).
    When ``candidate_ids`` are given to an eager call, a ``num_items`` below the number of
    distinct ids is refused.
    """

    def call(
        self,
        query_embeddings: tf.Tensor,
        candidate_embeddings: tf.Tensor,
        sample_weight: tf.Tensor | None = None,
        candidate_sampling_probability: tf.Tensor | None = None,
        candidate_ids: tf.Tensor | None = None,
        compute_metrics: bool = True,
        compute_batch_metrics: bool = True,
        score_mask: tf.Tensor | None = None,
    ) -> tf.Tensor:
        """Computes the task loss and updates the metrics, as ``tfrs.tasks.Retrieval.call``."""
        loss = self._loss
        if not isinstance(loss, LossWrapper):
            return super().call(
                query_embeddings, candidate_embeddings, sample_weight, candidate_sampling_probability,
                candidate_ids, compute_metrics, compute_batch_metrics, score_mask,
            )
        if candidate_sampling_probability is not None and self._num_hard_negatives is not None:
            raise ValueError(
                "Retrieval: num_hard_negatives cannot go with candidate_sampling_probability for a "
                "tfcroloss loss: the hardest negatives are not draws from q, so q cannot weight them"
            )
        _check_num_items(loss, candidate_ids)
        with loss.sampling_probability(candidate_sampling_probability):
            return super().call(
                query_embeddings, candidate_embeddings, sample_weight, None,
                candidate_ids, compute_metrics, compute_batch_metrics, score_mask,
            )


def _check_num_items(loss: LossWrapper, candidate_ids: Any) -> None:
    """On eager ids: the catalog holds at least the batch's distinct candidates."""
    if candidate_ids is None or not tf.executing_eagerly():
        return
    distinct = int(tf.size(tf.unique(tf.reshape(candidate_ids, [-1])).y))
    if distinct > loss.num_items:
        raise ValueError(
            f"{loss.name}: num_items={loss.num_items} is smaller than the {distinct} distinct "
            "candidate ids in this batch; num_items must be the catalog size"
        )
