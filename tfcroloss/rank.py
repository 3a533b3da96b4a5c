"""The sampled rank estimator of eq. 24, in log space.

For a row with positive score ``s+`` and ``M`` sampled negatives out of a
catalog of ``N`` items::

    R = N / M * (1 + sum_j phi(s_j - s+))

estimates the positive's rank in the whole catalog.

>>> import tensorflow as tf
>>> from tfcroloss import kernels
>>> gaps = tf.constant([[0.0, -100.0, -100.0]])    # one tie, two clear losers
>>> valid = tf.constant([[True, True, True]])
>>> log_rank = sampled_log_rank(gaps, valid, kernels.get("unit_step"), num_items=30)
>>> round(float(tf.exp(log_rank)[0]), 4)   # 30 / 3 * (1 + 1)
20.0
"""

from __future__ import annotations

import tensorflow as tf

from tfcroloss.kernels import Kernel


def sampled_log_rank(
    gaps: tf.Tensor,
    negative_mask: tf.Tensor,
    kernel: Kernel,
    num_items: int,
    num_negatives: tf.Tensor | None = None,
) -> tf.Tensor:
    """``log R`` per row.

    Args:
      gaps: ``[batch, candidates]`` float, ``s_candidate - s_positive``.
      negative_mask: ``[batch, candidates]`` bool, True where the candidate is
        a negative to count (not the positive, not masked out).
      kernel: the comparison kernel phi.
      num_items: catalog size N.
      num_negatives: ``[batch]`` float, the mask's row sums M, if already known.

    Returns:
      ``[batch]`` log rank estimates. Rows with no negative get ``log N``
      (``M`` is taken as 1); the loss zeroes them.
    """
    safe_gaps = tf.where(negative_mask, gaps, tf.zeros_like(gaps))  # finite kernel inputs, finite gradients
    weights = tf.cast(negative_mask, gaps.dtype)
    if kernel.log_fn is not None:
        log_terms = tf.where(negative_mask, kernel.log_fn(safe_gaps), tf.fill(tf.shape(gaps), -float("inf")))
        log_terms = tf.concat([tf.zeros_like(log_terms[:, :1]), log_terms], axis=1)  # the "1 +"
        log_count = tf.math.reduce_logsumexp(log_terms, axis=1)
    else:
        log_count = tf.math.log1p(tf.reduce_sum(kernel.fn(safe_gaps) * weights, axis=1))
    if num_negatives is None:
        num_negatives = tf.reduce_sum(weights, axis=1)
    log_ratio = tf.math.log(tf.cast(num_items, gaps.dtype)) - tf.math.log(tf.maximum(num_negatives, 1.0))
    return log_ratio + log_count
