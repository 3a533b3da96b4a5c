"""Weightings over ranks: how much Recall@x matters for each retrieval size x.

The paper's weighting (eq. 12-13) is the power density ``w_alpha(x) ~ x**-alpha``
on ``[1, num_items + 1)``. CROLoss minimises ``log(num_items + 1) * W_alpha(R)``,
where ``W_alpha`` is the cumulative distribution; the scale makes alpha = 1 read
``log(R)``, the softmax cross-entropy case. Both the value and its derivative
(the Lambda method's weight) are computed from ``log R``, so they stay finite
for rank estimates far beyond float32 range. Written once over an array namespace
``ops`` (see ``tfcroloss.backends``): TensorFlow by default.

>>> import tensorflow as tf
>>> weighting = get("power")(alpha=1.0, num_items=1000)
>>> round(float(weighting.value(tf.math.log(10.0))), 4)  # log(10)
2.3026
>>> round(float(weighting.derivative(tf.math.log(10.0))), 4)  # 1 / 10
0.1
"""

from __future__ import annotations

import math
from typing import Any

from tfcroloss import backends
from tfcroloss.registry import lookup

# Rank estimates beyond exp(LOG_RANK_CAP) (about 1e26, far above any catalog
# size) continue linearly instead of exponentially, so values stay finite.
LOG_RANK_CAP = 60.0


def _capped_expm1(x: Any, ops: Any) -> Any:
    """expm1(x) up to LOG_RANK_CAP, then its tangent line: finite and monotone."""
    capped = ops.minimum(x, LOG_RANK_CAP)
    return ops.expm1(capped) + math.exp(LOG_RANK_CAP) * ops.relu(x - LOG_RANK_CAP)


def capped_exp(x: Any, ops: Any = None) -> Any:
    """exp(x) with the same linear continuation above LOG_RANK_CAP."""
    return _capped_expm1(x, ops or backends.tensorflow_ops()) + 1.0


class PowerWeighting:
    """``log(N + 1) * W_alpha(R)`` with ``W_alpha`` from eq. 13, for any alpha >= 0.

    Args:
      alpha: decay of the density; larger alpha favours small retrieval sizes.
        alpha = 0 weighs every rank alike (BPR, triplet); alpha = 1 is ``log R``.
      num_items: catalog size |I| (N in eq. 13 is the rank, not this).
      ops: the array namespace; TensorFlow when None.
    """

    def __init__(self, alpha: float, num_items: int, ops: Any = None):
        if not alpha >= 0:
            raise ValueError(f"alpha must be >= 0, got {alpha!r}")
        self.alpha = float(alpha)
        self.num_items = int(num_items)
        self._ops = ops
        log_span = math.log(self.num_items + 1.0)
        exponent = 1.0 - self.alpha
        # value(R) = scale * expm1(exponent * log R), derivative = scale * exponent * R**-alpha;
        # both tend to the alpha = 1 forms (log R, 1 / R) as exponent -> 0.
        self._scale = log_span if exponent == 0 else log_span / math.expm1(exponent * log_span)
        self._exponent = exponent

    @property
    def ops(self) -> Any:
        return self._ops or backends.tensorflow_ops()

    def value(self, log_rank: Any) -> Any:
        """``log(N + 1) * W_alpha(R)`` given ``log R``; 0 at R = 1."""
        if self._exponent == 0:
            return log_rank
        return self._scale * _capped_expm1(self._exponent * log_rank, self.ops)

    def derivative(self, log_rank: Any) -> Any:
        """``d value / d R`` given ``log R``: the Lambda method's weight (eq. 21)."""
        if self._exponent == 0:
            return self.ops.exp(-log_rank)
        return self._scale * self._exponent * self.ops.exp(-self.alpha * log_rank)


_REGISTRY = {"power": PowerWeighting}


def get(name: str) -> type[PowerWeighting]:
    """Returns the weighting class registered as ``name``."""
    return lookup(_REGISTRY, name, "weighting")
