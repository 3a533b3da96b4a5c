"""The sampled rank estimator of eq. 24, in log space, with importance weights.

For a row with positive score ``s+`` and ``M`` sampled negatives out of a
catalog of ``N`` items::

    R = N / M * (1 + sum_j phi(s_j - s+))

estimates the positive's rank in the whole catalog when the negatives are drawn
uniformly. With non-uniform negatives, negative ``j`` drawn with probability
``q_j`` per draw counts ``1 / (N q_j)`` times (Horvitz-Thompson, see
``docs/unbiased-rank.md``)::

    R = N / M + sum_j phi(s_j - s+) / (M q_j)

which is eq. 24 again for ``q_j = 1 / N``. The caller passes the weights as
``log_weights = -log(N q_j)``. Written once over an array namespace ``ops``
(see ``tfcroloss.backends``): TensorFlow by default.

>>> import tensorflow as tf
>>> from tfcroloss import kernels
>>> gaps = tf.constant([[0.0, -100.0, -100.0]])    # one tie, two clear losers
>>> valid = tf.constant([[True, True, True]])
>>> log_rank = sampled_log_rank(gaps, valid, kernels.get("unit_step"), num_items=30)
>>> round(float(tf.exp(log_rank)[0]), 4)   # 30 / 3 * (1 + 1)
20.0
"""

from __future__ import annotations

from typing import Any

from tfcroloss import backends
from tfcroloss.kernels import Kernel


def sampled_log_rank(
    gaps: Any,
    negative_mask: Any,
    kernel: Kernel,
    num_items: int,
    num_negatives: Any = None,
    log_weights: Any = None,
    ops: Any = None,
) -> Any:
    """``log R`` per row.

    Args:
      gaps: ``[batch, candidates]`` float, ``s_candidate - s_positive``.
      negative_mask: ``[batch, candidates]`` bool, True where the candidate is
        a negative to count (not the positive, not masked out).
      kernel: the comparison kernel phi.
      num_items: catalog size N.
      num_negatives: ``[batch]`` float, the mask's row sums M, if already known.
      log_weights: ``[batch, candidates]`` float, ``-log(N q_j)``, each negative's
        importance weight relative to uniform sampling; 0 where the mask is False.
        None is uniform sampling (eq. 24).
      ops: the array namespace; TensorFlow when None.

    Returns:
      ``[batch]`` log rank estimates. Rows with no negative get ``log N``
      (``M`` is taken as 1); the loss zeroes them.
    """
    ops = ops or backends.tensorflow_ops()
    dtype = ops.dtype_name(gaps)
    safe_gaps = ops.where(negative_mask, gaps, ops.zeros_like(gaps))  # finite kernel inputs, finite gradients
    weights = ops.cast(negative_mask, dtype)
    if kernel.log_fn is not None:
        log_terms = kernel.log_fn(safe_gaps)
        if log_weights is not None:
            log_terms = log_terms + log_weights
        log_terms = ops.where(negative_mask, log_terms, ops.full_like(gaps, -float("inf")))
        log_terms = ops.concatenate([ops.zeros_like(log_terms[:, :1]), log_terms], axis=1)  # the "1 +"
        log_count = ops.logsumexp(log_terms, axis=1)
    else:
        if num_negatives is None:
            num_negatives = ops.sum(weights, axis=1)
        if log_weights is not None:
            weights = weights * ops.exp(log_weights)
        log_count = ops.log1p(ops.sum(kernel.fn(safe_gaps) * weights, axis=1))
    if num_negatives is None:
        num_negatives = ops.sum(weights, axis=1)
    log_ratio = ops.log(ops.cast(num_items, dtype)) - ops.log(ops.maximum(num_negatives, 1.0))
    return log_ratio + log_count
