"""The sampled rank estimator of eq. 24, in log space, with importance weights.

For a row with positive score ``s+`` and ``M`` sampled negatives out of a
catalog of ``N`` items::

    R = N / M * (1 + sum_j phi(s_j - s+))

estimates the positive's rank in the whole catalog when the negatives are drawn
uniformly. With non-uniform negatives, negative ``j`` drawn with probability
``q_j`` per draw counts ``1 / (N q_j)`` times (Horvitz-Thompson, see
``docs/unbiased-rank.md``)::

    R = N / M + sum_j phi(s_j - s+) / (M q_j)

which is eq. 24 again for ``q_j = 1 / N``. The caller passes each candidate's weight
``w_j = 1 / (N q_j)`` (1 for uniform draws, 0 for what is not a negative). Written once over an
array namespace ``ops`` (see ``tfcroloss.backends``): TensorFlow by default.

>>> import tensorflow as tf
>>> from tfcroloss import kernels
>>> gaps = tf.constant([[0.0, -100.0, -100.0]])    # one tie, two clear losers
>>> weights = tf.constant([[1.0, 1.0, 1.0]])      # three uniform negatives
>>> log_rank = sampled_log_rank(gaps, weights, kernels.get("unit_step"), num_items=30)
>>> round(float(tf.exp(log_rank)[0]), 4)   # 30 / 3 * (1 + 1)
20.0
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from tfcroloss import backends
from tfcroloss.kernels import Kernel


def sampled_log_rank(
    gaps: Any,
    weights: Any,
    kernel: Kernel,
    num_items: int,
    num_negatives: Any = None,
    ops: Any = None,
) -> Any:
    """``log R`` per row.

    Args:
      gaps: ``[batch, candidates]`` float, ``s_candidate - s_positive``.
      weights: ``[batch, candidates]`` float, how many times each candidate counts: 0 where it is
        not a negative (the positive, masked candidates), 1 for a uniformly drawn negative (eq. 24),
        ``1 / (N q_j)`` for one drawn with probability ``q_j``. None: ``gaps`` hold each row's
        positive (gap 0, left out here) and masked candidates at gaps where the kernel vanishes
        (``-3e35`` and below); every other candidate counts once. ``num_negatives`` is then needed.
      kernel: the comparison kernel phi.
      num_items: catalog size N.
      num_negatives: ``[batch]`` float, the number M of negatives per row; by default the number
        of nonzero weights.
      ops: the array namespace; TensorFlow when None.

    Returns:
      ``[batch]`` log rank estimates. Rows with no negative get ``log N``
      (``M`` is taken as 1); the loss zeroes them.
    """
    ops = ops or backends.tensorflow_ops()
    if num_negatives is None:
        if weights is None:
            raise ValueError("sampled_log_rank: num_negatives is needed when weights is None")
        num_negatives = ops.sum(ops.cast(weights > 0, ops.dtype_name(weights)), axis=1)
    (log_count,), _ = log_counts(gaps, weights, [kernel], ops)
    return log_ratio(num_items, num_negatives, ops) + log_count


def log_ratio(num_items: int, num_negatives: Any, ops: Any) -> Any:
    """``log(N / M)`` per row, with M taken as 1 in rows without negatives."""
    return ops.log(ops.cast(num_items, ops.dtype_name(num_negatives))) - ops.log(ops.maximum(num_negatives, 1.0))


def log_counts(
    gaps: Any, weights: Any, kernels: Sequence[Kernel], ops: Any
) -> tuple[list[Any], Callable[[Any], Any] | None]:
    """``log(1 + sum_j w_j phi(gap_j))`` per row for each kernel phi, one pass over the gaps each,
    and the gradient of the first by hand. ``weights`` None: every ``w_j`` is 1 but the positive's,
    whose gap is 0 and whose term is taken back out (see :func:`sampled_log_rank`).

    Returns:
      ``([batch] per kernel, gradient)``: ``gradient(upstream)`` is
      ``d sum(upstream * counts[0]) / d gaps`` (``[batch, candidates]``, 0 off negatives but, with
      no weights, at the positive, which the caller overwrites), or None
      where the first kernel has no derivative (a callable: autodiff then goes through the values,
      whose masked gaps are set to 0 so that it stays finite).
    """
    if weights is not None and any(kernel.derivative is None and kernel.differentiable for kernel in kernels):
        gaps = ops.where(weights > 0, gaps, ops.zeros_like(gaps))

    def weighted(value: Any) -> Any:
        return value if weights is None else weights * value

    counts, values, totals = [], [], []
    for kernel in kernels:
        if kernel.log_fn is None:
            value = kernel.fn(gaps)
            weighted_sum = ops.sum(weighted(value), axis=1)
            if weights is None:  # the positive's phi(0), taken back out
                weighted_sum = weighted_sum - kernel.fn(ops.zeros_like(weighted_sum))
            total = 1.0 + weighted_sum
            counts.append(ops.log1p(weighted_sum))
        else:  # phi = exp(log_fn), summed shifted by the row's largest term, as logsumexp does
            log_terms = kernel.log_fn(gaps)
            if weights is not None:
                log_terms = ops.where(weights > 0, log_terms, ops.full_like(log_terms, -float("inf")))
            shift = ops.stop_gradient(ops.maximum(ops.max(log_terms, axis=1), 0.0))
            value = ops.exp(log_terms - shift[:, None])  # phi / exp(shift)
            # The "1 +" is exp(log_fn(0)) = 1, shifted: without weights, the positive's own term.
            total = ops.sum(weighted(value), axis=1) + (0.0 if weights is None else ops.exp(-shift))
            counts.append(shift + ops.log(total))
        values.append(value)
        totals.append(total)
    first = kernels[0]
    if first.derivative is None:
        return counts, None

    def gradient(upstream: Any) -> Any:
        # phi'(gap): another kernel's values where it is phi' (LambdaCROLoss's sigmoid beside a
        # softplus), else from the gap and phi's own values.
        shared = [v for k, v in zip(kernels[1:], values[1:], strict=True)
                  if k.name == first.derivative_name and k.log_fn is None]
        derivative = shared[0] if shared else first.derivative(gaps, values[0])
        return weighted(derivative) * (upstream / totals[0])[:, None]

    return counts, gradient
