"""CROLoss and LambdaCROLoss for Keras 3: TensorFlow, JAX or PyTorch backend, and keras-rs.

Same constructor arguments, defaults (but Keras 3's ``reduction="sum_over_batch_size"``),
kernels, weightings, masking, NaN and half-precision contracts as the tf-keras classes
(``tfcroloss.CROLoss``): both run the maths in ``tfcroloss.functional``, here over
``keras.ops``. Importing this module imports no TensorFlow (unless Keras's backend is
TensorFlow) and leaves ``tf.keras`` as it is; a process uses either these classes or the
tf-keras ones (``import tfcroloss``), and asking for the other is an ``ImportError``.

Input checks (one 1 per row, 0/1 labels, no more negatives than ``num_items``,
``q_j > 0``) raise ``ValueError`` on concrete values; inside ``jax.jit`` they are skipped,
on the TensorFlow backend inside ``tf.function`` they are graph assertions.

>>> import numpy as np
>>> loss = CROLoss(num_items=2, kernel="exponential", alpha=1.0)
>>> cross_entropy = keras.losses.CategoricalCrossentropy(from_logits=True)
>>> y_true, y_pred = np.array([[1.0, 0.0, 0.0]]), np.array([[2.0, 1.0, -1.0]])
>>> round(float(loss(y_true, y_pred)), 4) == round(float(cross_entropy(y_true, y_pred)), 4)
True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tfcroloss import backends

ops = backends.keras_ops()  # selects Keras 3 for tfcroloss in this process, or raises

import keras  # noqa: E402

from tfcroloss import functional  # noqa: E402
from tfcroloss.functional import (  # noqa: E402
    MASKED_LOGIT,
    CROLossSpec,
    LambdaCROLossSpec,
    SampledRankLossSpec,
)

__all__ = [
    "CROLoss",
    "LambdaCROLoss",
    "cro_loss",
    "lambda_cro_loss",
    "remove_accidental_hits",
    "MASKED_LOGIT",
]

KernelSpec = str | Callable[[Any], Any]


def cro_loss(labels: Any, logits: Any, **kwargs: Any) -> Any:
    """``tfcroloss.functional.cro_loss`` over ``keras.ops``: CROLoss per row, ``[batch]``."""
    return functional.cro_loss(labels, logits, ops=ops, **kwargs)


def lambda_cro_loss(labels: Any, logits: Any, **kwargs: Any) -> Any:
    """``tfcroloss.functional.lambda_cro_loss`` over ``keras.ops``: per row, ``[batch]``."""
    return functional.lambda_cro_loss(labels, logits, ops=ops, **kwargs)


def remove_accidental_hits(logits: Any, labels: Any, candidate_ids: Any) -> Any:
    """Masks (sets to ``MASKED_LOGIT``) the negatives that are the row's positive item.

    Use this rather than ``keras_rs.layers.RemoveAccidentalHits`` with these losses:
    in keras-rs 0.4 that layer adds about 1e-40 to the hits' logits, which leaves them
    unchanged (keras-rs pull request 206), so they would still count as negatives.

    Args:
      logits: ``[batch, candidates]``.
      labels: ``[batch, candidates]`` one-hot.
      candidate_ids: ``[candidates]`` item ids.
    """
    positive_ids = ops.sum(ops.cast(labels, "int32") * ops.cast(candidate_ids, "int32")[None, :], axis=1)
    hits = ops.equal(ops.cast(candidate_ids, "int32")[None, :], positive_ids[:, None]) & ~ops.equal(
        labels, 1
    )
    return ops.where(hits, ops.full_like(logits, MASKED_LOGIT), logits)


class _SampledRankLoss(SampledRankLossSpec, keras.losses.Loss):
    """Keras 3 plumbing for the family: reduction, name, dtype, config."""

    _ops = ops

    def __init__(self, num_items: int, alpha: float, margin: float, weighting: str,
                 reduction: str, name: str, dtype: Any):
        keras.losses.Loss.__init__(self, name=name, reduction=reduction, dtype=dtype)
        self._configure(num_items, alpha, margin, weighting)

    def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        # Keras 3 casts y_pred to the loss's dtype (float32) before `call`. Float16 logits (a
        # mixed_float16 model) still need their row losses to saturate as float16 inputs do, or
        # the gradients flowing back into them overflow: `call` reads this flag while it runs
        # (at trace time under jit / tf.function).
        dtype = getattr(y_pred, "dtype", None)
        if dtype is None or keras.backend.standardize_dtype(dtype) != "float16":
            return keras.losses.Loss.__call__(self, y_true, y_pred, sample_weight)
        self._float16_call = True
        try:
            return keras.losses.Loss.__call__(self, y_true, y_pred, sample_weight)
        finally:
            self._float16_call = False

    def _float16_logits(self) -> bool:
        return getattr(self, "_float16_call", False)

    @staticmethod
    def _serialize_kernel(kernel: KernelSpec) -> Any:
        return kernel if isinstance(kernel, str) else keras.saving.serialize_keras_object(kernel)

    @staticmethod
    def _deserialize_kernel(config: Any) -> KernelSpec:
        return config if isinstance(config, str) else keras.saving.deserialize_keras_object(config)

    def get_config(self) -> dict[str, Any]:
        return {**keras.losses.Loss.get_config(self), **self._config()}


@keras.saving.register_keras_serializable(package="tfcroloss")
class CROLoss(CROLossSpec, _SampledRankLoss):
    """CROLoss for Keras 3; see ``tfcroloss.CROLoss`` for the loss, NaN, half precision
    and ``call(y_true, y_pred, candidate_sampling_probability=q)``.

    Args:
      num_items: catalog size |I|.
      alpha: weighting exponent >= 0.
      kernel: "sigmoid", "softplus", "exponential" ("exp"), "hinge", or a callable phi(x).
      margin: the hinge kernel's margin m.
      weighting: "power".
      reduction: a Keras 3 reduction ("sum_over_batch_size", "sum", "mean", "none", ...).
      name: the loss's name.
      dtype: the loss's compute dtype (Keras 3 casts the inputs to it); float32 when None.
    """

    def __init__(
        self,
        num_items: int,
        alpha: float = 1.0,
        kernel: KernelSpec = "softplus",
        margin: float = 5.0,
        weighting: str = "power",
        reduction: str = "sum_over_batch_size",
        name: str = "cro_loss",
        dtype: Any = None,
    ):
        super().__init__(num_items, alpha, margin, weighting, reduction, name, dtype)
        self._configure_kernel(kernel)


@keras.saving.register_keras_serializable(package="tfcroloss")
class LambdaCROLoss(LambdaCROLossSpec, _SampledRankLoss):
    """LambdaCROLoss for Keras 3; see ``tfcroloss.LambdaCROLoss``.

    Args:
      num_items, alpha: as in ``CROLoss``.
      weight_kernel: phi1, any kernel including "unit_step".
      grad_kernel: phi2, a differentiable kernel.
      margin, weighting, reduction, name, dtype: as in ``CROLoss``.
    """

    def __init__(
        self,
        num_items: int,
        alpha: float = 1.0,
        weight_kernel: KernelSpec = "sigmoid",
        grad_kernel: KernelSpec = "softplus",
        margin: float = 5.0,
        weighting: str = "power",
        reduction: str = "sum_over_batch_size",
        name: str = "lambda_cro_loss",
        dtype: Any = None,
    ):
        super().__init__(num_items, alpha, margin, weighting, reduction, name, dtype)
        self._configure_kernels(weight_kernel, grad_kernel)
