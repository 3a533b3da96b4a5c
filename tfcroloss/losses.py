"""CROLoss and LambdaCROLoss as Keras losses.

Both take what ``tfrs.tasks.Retrieval`` hands its loss: ``y_true`` is
``[batch, candidates]`` with a single 1 at each row's positive, ``y_pred`` the
(already scaled) logits. Every other candidate is a negative, except those
TFRS masked (accidental hits, ``score_mask``), whose logits sit near
``float32.min / 100``: they are neither negatives nor counted.

>>> import tensorflow as tf
>>> y_true = tf.constant([[1.0, 0.0, 0.0]])
>>> y_pred = tf.constant([[2.0, 1.0, -1.0]])
>>> loss = CROLoss(num_items=2, kernel="exponential", alpha=1.0)
>>> cross_entropy = tf.keras.losses.CategoricalCrossentropy(from_logits=True)
>>> round(float(loss(y_true, y_pred)), 4) == round(float(cross_entropy(y_true, y_pred)), 4)
True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf

from tfcroloss import kernels, weightings
from tfcroloss.rank import sampled_log_rank

# Logits at or below this are treated as masked out (TFRS uses float32.min / 100).
MASKED_LOGIT = float(tf.float32.min) / 1000.0

KernelSpec = str | Callable[[tf.Tensor], tf.Tensor]


def _serialize_kernel(kernel: KernelSpec) -> Any:
    return kernel if isinstance(kernel, str) else tf.keras.utils.serialize_keras_object(kernel)


def _deserialize_kernel(config: Any) -> KernelSpec:
    return config if isinstance(config, str) else tf.keras.utils.deserialize_keras_object(config)


class _SampledRankLoss(tf.keras.losses.Loss):
    """Shared machinery: argument checks, masking, gaps; subclasses score rows."""

    def __init__(
        self,
        num_items: int,
        alpha: float,
        margin: float,
        weighting: str,
        reduction: str,
        name: str,
    ):
        super().__init__(reduction=reduction, name=name)
        if isinstance(num_items, bool) or not isinstance(num_items, int) or num_items < 1:
            raise ValueError(f"num_items must be a positive integer (the catalog size), got {num_items!r}")
        if not isinstance(alpha, int | float) or not alpha >= 0:
            raise ValueError(f"alpha must be a number >= 0, got {alpha!r}")
        self.num_items = num_items
        self.alpha = float(alpha)
        self.margin = float(margin)
        self.weighting = weighting
        self._weighting = weightings.get(weighting)(self.alpha, num_items)

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        y_pred = tf.convert_to_tensor(y_pred)
        if not y_pred.dtype.is_floating:
            raise ValueError(f"{self.name}: y_pred must hold float logits, got dtype {y_pred.dtype.name}")
        compute_dtype = tf.float64 if y_pred.dtype == tf.float64 else tf.float32
        y_pred = tf.cast(y_pred, compute_dtype)
        y_true = tf.cast(tf.convert_to_tensor(y_true), compute_dtype)
        self._check_shapes(y_true, y_pred)

        is_positive = tf.equal(y_true, 1.0)
        negative_mask = ~is_positive & (y_pred > MASKED_LOGIT)
        num_negatives = tf.reduce_sum(tf.cast(negative_mask, compute_dtype), axis=1)
        checks = [  # a few reductions over the labels: cheap next to the kernel
            tf.debugging.assert_equal(
                tf.reduce_sum(y_true, axis=1), tf.ones_like(num_negatives),
                message=f"{self.name}: every row of y_true must hold exactly one 1 (the positive)",
            ),
            tf.debugging.assert_equal(
                tf.reduce_max(tf.abs(y_true * (1.0 - y_true))), tf.zeros([], compute_dtype),
                message=f"{self.name}: y_true must hold only 0 and 1",
            ),
            tf.debugging.assert_less_equal(
                num_negatives, tf.cast(self.num_items, compute_dtype),
                message=f"{self.name}: a row has more negatives than num_items={self.num_items}; "
                "num_items must be the catalog size",
            ),
        ]
        with tf.control_dependencies(checks):
            positive_logit = tf.reduce_sum(tf.where(is_positive, y_pred, 0.0), axis=1, keepdims=True)
        gaps = y_pred - positive_logit
        has_negatives = tf.cast(num_negatives > 0, compute_dtype)
        return has_negatives * self._row_loss(gaps, negative_mask, num_negatives)

    def _check_shapes(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> None:
        if y_pred.shape.rank is not None and y_pred.shape.rank != 2:
            raise ValueError(f"{self.name}: y_pred must be [batch, candidates], got shape {y_pred.shape}")
        if not y_true.shape.is_compatible_with(y_pred.shape):
            raise ValueError(
                f"{self.name}: y_true and y_pred must have the same shape, got {y_true.shape} and {y_pred.shape}"
            )

    def _row_loss(self, gaps: tf.Tensor, negative_mask: tf.Tensor, num_negatives: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            num_items=self.num_items, alpha=self.alpha, margin=self.margin, weighting=self.weighting
        )
        return config


@tf.keras.utils.register_keras_serializable(package="tfcroloss")
class CROLoss(_SampledRankLoss):
    """Customizable Recall@N Optimization Loss (eq. 16 with the estimator of eq. 24).

    Per example: ``log(num_items + 1) * W_alpha(R)`` with
    ``R = num_items / M * (1 + sum_j phi(s_j - s+))`` over the row's ``M``
    negatives. Special cases (section 3.5): ``kernel="exponential", alpha=1``
    is softmax cross-entropy (same gradient, value shifted by ``log(N / M)``);
    ``kernel="softplus", alpha=0`` is BPR and ``kernel="hinge", alpha=0`` the
    triplet loss, each up to a positive factor and an offset.

    Args:
      num_items: catalog size |I|, at least the number of negatives per row.
      alpha: weighting exponent >= 0; larger favours smaller retrieval sizes N.
      kernel: "sigmoid", "softplus", "exponential" ("exp"), "hinge", or a
        callable phi(x). The unit step has no gradient: use it in LambdaCROLoss.
      margin: the hinge kernel's margin m.
      weighting: name of the rank weighting ("power", the paper's w_alpha).
      reduction: a ``tf.keras.losses.Reduction``.
      name: the loss's name.
    """

    def __init__(
        self,
        num_items: int,
        alpha: float = 1.0,
        kernel: KernelSpec = "softplus",
        margin: float = 5.0,
        weighting: str = "power",
        reduction: str = tf.keras.losses.Reduction.AUTO,
        name: str = "cro_loss",
    ):
        super().__init__(num_items, alpha, margin, weighting, reduction, name)
        self._kernel = kernels.get(kernel, margin=self.margin)
        if not self._kernel.differentiable:
            raise ValueError(
                f"kernel {self._kernel.name!r} has no gradient; use it as LambdaCROLoss's weight_kernel"
            )
        self.kernel = kernel

    def _row_loss(self, gaps: tf.Tensor, negative_mask: tf.Tensor, num_negatives: tf.Tensor) -> tf.Tensor:
        log_rank = sampled_log_rank(gaps, negative_mask, self._kernel, self.num_items, num_negatives)
        return self._weighting.value(log_rank)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "kernel": _serialize_kernel(self.kernel)}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> CROLoss:
        return cls(**{**config, "kernel": _deserialize_kernel(config["kernel"])})


@tf.keras.utils.register_keras_serializable(package="tfcroloss")
class LambdaCROLoss(_SampledRankLoss):
    """CROLoss with the Lambda method (eq. 21-23).

    Per example: ``stop_gradient(lambda) * R_phi2`` where ``lambda`` is the
    derivative of ``log(num_items + 1) * W_alpha`` at ``R_phi1``. The gradient
    for each gap is therefore ``lambda * dR_phi2 / dgap``: the weight kernel
    phi1 estimates the rank (it may be the unit step), the gradient kernel phi2
    sets how hard each negative is pushed.

    Args:
      num_items: catalog size |I|.
      alpha: weighting exponent >= 0.
      weight_kernel: phi1, any kernel including "unit_step".
      grad_kernel: phi2, a differentiable kernel.
      margin, weighting, reduction, name: as in ``CROLoss``.
    """

    def __init__(
        self,
        num_items: int,
        alpha: float = 1.0,
        weight_kernel: KernelSpec = "sigmoid",
        grad_kernel: KernelSpec = "softplus",
        margin: float = 5.0,
        weighting: str = "power",
        reduction: str = tf.keras.losses.Reduction.AUTO,
        name: str = "lambda_cro_loss",
    ):
        super().__init__(num_items, alpha, margin, weighting, reduction, name)
        self._weight_kernel = kernels.get(weight_kernel, margin=self.margin)
        self._grad_kernel = kernels.get(grad_kernel, margin=self.margin)
        if not self._grad_kernel.differentiable:
            raise ValueError(
                f"grad_kernel {self._grad_kernel.name!r} has no gradient; "
                "it can only be the weight_kernel"
            )
        self.weight_kernel = weight_kernel
        self.grad_kernel = grad_kernel

    def _row_loss(self, gaps: tf.Tensor, negative_mask: tf.Tensor, num_negatives: tf.Tensor) -> tf.Tensor:
        weight_log_rank = sampled_log_rank(
            tf.stop_gradient(gaps), negative_mask, self._weight_kernel, self.num_items, num_negatives
        )
        lambda_weight = tf.stop_gradient(self._weighting.derivative(weight_log_rank))
        grad_log_rank = sampled_log_rank(gaps, negative_mask, self._grad_kernel, self.num_items, num_negatives)
        return lambda_weight * weightings.capped_exp(grad_log_rank)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "weight_kernel": _serialize_kernel(self.weight_kernel),
            "grad_kernel": _serialize_kernel(self.grad_kernel),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LambdaCROLoss:
        return cls(
            **{
                **config,
                "weight_kernel": _deserialize_kernel(config["weight_kernel"]),
                "grad_kernel": _deserialize_kernel(config["grad_kernel"]),
            }
        )
