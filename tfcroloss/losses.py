"""CROLoss and LambdaCROLoss as tf-keras (Keras 2) losses.

Both take what ``tfrs.tasks.Retrieval`` hands its loss: ``y_true`` is
``[batch, candidates]`` with a single 1 at each row's positive, ``y_pred`` the
(already scaled) logits. Every other candidate is a negative, except those
TFRS masked (accidental hits, ``score_mask``), whose logits sit near
``float32.min / 100``: they are neither negatives nor counted. The maths is in
``tfcroloss.functional``, shared with the Keras 3 classes (``tfcroloss.keras3``).

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

from tfcroloss import backends
from tfcroloss.functional import MASKED_LOGIT, CROLossSpec, LambdaCROLossSpec, SampledRankLossSpec

_ops = backends.tensorflow_ops()
tf = _ops.tf

__all__ = ["CROLoss", "LambdaCROLoss", "MASKED_LOGIT"]

KernelSpec = str | Callable[[tf.Tensor], tf.Tensor]
_HALF = (tf.float16, tf.bfloat16)


class _SampledRankLoss(SampledRankLossSpec, tf.keras.losses.Loss):
    """tf-keras plumbing for the family: reduction, name, config, half-precision result.

    ``call(y_true, y_pred, candidate_sampling_probability=None)`` (from
    ``SampledRankLossSpec``) gives per-example losses; leaves implement ``_row_loss``.
    """

    _ops = _ops

    def __init__(self, num_items: int, alpha: float, margin: float, weighting: str,
                 reduction: str, name: str):
        tf.keras.losses.Loss.__init__(self, reduction=reduction, name=name)
        self._configure(num_items, alpha, margin, weighting)

    def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> tf.Tensor:
        loss = tf.keras.losses.Loss.__call__(self, y_true, y_pred, sample_weight)
        dtype = getattr(y_pred, "dtype", None)
        if dtype is not None and tf.as_dtype(dtype) in _HALF:  # reduced in float32, cast once
            loss = tf.cast(loss, dtype)
        return loss

    @staticmethod
    def _serialize_kernel(kernel: KernelSpec) -> Any:
        return kernel if isinstance(kernel, str) else tf.keras.utils.serialize_keras_object(kernel)

    @staticmethod
    def _deserialize_kernel(config: Any) -> KernelSpec:
        return config if isinstance(config, str) else tf.keras.utils.deserialize_keras_object(config)

    def get_config(self) -> dict[str, Any]:
        return {**tf.keras.losses.Loss.get_config(self), **self._config()}


@tf.keras.utils.register_keras_serializable(package="tfcroloss")
class CROLoss(CROLossSpec, _SampledRankLoss):
    """Customizable Recall@N Optimization Loss (eq. 16 with the estimator of eq. 24).

    Per example: ``log(num_items + 1) * W_alpha(R)`` with
    ``R = num_items / M * (1 + sum_j phi(s_j - s+))`` over the row's ``M``
    negatives. Special cases (section 3.5): ``kernel="exponential", alpha=1``
    is softmax cross-entropy (same gradient, value shifted by ``log(N / M)``);
    ``kernel="softplus", alpha=0`` is BPR and ``kernel="hinge", alpha=0`` the
    triplet loss, each up to a positive factor and an offset.

    NaN is never hidden: a NaN in any unmasked logit of a row makes that row's
    loss NaN (so ``TerminateOnNaN`` stops a diverging run). float16 and bfloat16
    logits are computed in float32 and the result is cast back to their dtype.

    Non-uniform negatives: ``loss.call(y_true, y_pred, candidate_sampling_probability=q)``
    returns per-example losses whose rank estimate weights negative j by
    ``1 / (num_items * q_j)`` (``docs/unbiased-rank.md``); reduce them yourself.

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
        self._configure_kernel(kernel)



@tf.keras.utils.register_keras_serializable(package="tfcroloss")
class LambdaCROLoss(LambdaCROLossSpec, _SampledRankLoss):
    """CROLoss with the Lambda method (eq. 21-23).

    Per example: ``stop_gradient(lambda) * R_phi2`` where ``lambda`` is the
    derivative of ``log(num_items + 1) * W_alpha`` at ``R_phi1``. The gradient
    for each gap is therefore ``lambda * dR_phi2 / dgap``: the weight kernel
    phi1 estimates the rank (it may be the unit step), the gradient kernel phi2
    sets how hard each negative is pushed. NaN, half precision and
    ``candidate_sampling_probability`` (both ranks use the same importance
    weights) as in ``CROLoss``.

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
        self._configure_kernels(weight_kernel, grad_kernel)
