"""CROLoss and LambdaCROLoss for Keras 3: TensorFlow, JAX or PyTorch backend, and keras-rs.

Same constructor arguments, defaults (but Keras 3's ``reduction="sum_over_batch_size"``),
kernels, weightings, masking, NaN and half-precision contracts as the tf-keras classes
(``tfcroloss.CROLoss``): both run the maths in ``tfcroloss.functional``, here over
``keras.ops``. Importing this module imports no TensorFlow (unless Keras's backend is
TensorFlow) and leaves ``tf.keras`` as it is; a process uses either these classes or the
tf-keras ones (``tfcroloss.CROLoss``, module ``tfcroloss.losses``): each refuses to load
beside the other with an ``ImportError`` that says why.

Input checks (one 1 per row, 0/1 labels, ``q_j > 0``) raise ``ValueError`` on concrete
values; inside ``jax.jit``, ``torch.compile`` or ``tf.function`` those rows' losses are NaN
instead. A row may hold any number of candidates, duplicates included.

>>> import numpy as np
>>> loss = CROLoss(num_items=2, kernel="exponential", alpha=1.0)
>>> cross_entropy = keras.losses.CategoricalCrossentropy(from_logits=True)
>>> y_true, y_pred = np.array([[1.0, 0.0, 0.0]]), np.array([[2.0, 1.0, -1.0]])
>>> round(float(loss(y_true, y_pred)), 4) == round(float(cross_entropy(y_true, y_pred)), 4)
True
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import tfcroloss

if "tfcroloss.losses" in sys.modules:
    raise ImportError(
        "tfcroloss is already in use with tf-keras in this process (`from tfcroloss import "
        "CROLoss`, TFRS); it cannot also use Keras 3 (`import tfcroloss.keras3`). tf-keras needs "
        "TF_USE_LEGACY_KERAS=1 before TensorFlow is imported, which makes tf.keras Keras 2 for "
        "the whole process: use one of the two per process."
    )
if tfcroloss.SET_TF_USE_LEGACY_KERAS:  # set by `import tfcroloss` for the tf-keras flavour
    os.environ.pop("TF_USE_LEGACY_KERAS", None)

import keras  # noqa: E402

from tfcroloss import backends, functional  # noqa: E402
from tfcroloss.functional import MASKED_LOGIT, KernelSpec  # noqa: E402

ops = backends.keras_ops()

__all__ = [
    "CROLoss",
    "LambdaCROLoss",
    "LossWrapper",
    "cro_loss",
    "lambda_cro_loss",
    "remove_accidental_hits",
    "MASKED_LOGIT",
]


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


class LossWrapper(keras.losses.Loss):
    """A Keras 3 loss that holds the arguments of a ``tfcroloss.functional`` loss and calls it
    over ``keras.ops``; ``call(y_true, y_pred, candidate_sampling_probability=None)`` gives
    per-example losses. The arguments are checked when the loss is made and kept as attributes."""

    def __init__(self, fn: Callable[..., Any], *, reduction: str, name: str, dtype: Any, **arguments: Any):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.fn = fn
        self._fn_kwargs = functional.check_arguments(**arguments)
        self.__dict__.update(self._fn_kwargs)
        self._float16_call = False

    def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        # Keras 3 casts y_pred to the loss's dtype (float32) before `call`. Float16 logits (a
        # mixed_float16 model) still need their row losses to saturate as float16 inputs do, or
        # the gradients flowing back into them overflow: `call` reads this flag while it runs
        # (at trace time under jit / tf.function).
        dtype = getattr(y_pred, "dtype", None)
        self._float16_call = dtype is not None and keras.backend.standardize_dtype(dtype) == "float16"
        try:
            return super().__call__(y_true, y_pred, sample_weight)
        finally:
            self._float16_call = False

    def call(self, y_true: Any, y_pred: Any, candidate_sampling_probability: Any = None) -> Any:
        """Per-example losses ``[batch]``; see ``tfcroloss.losses.LossWrapper.call``."""
        row_loss = self.fn(y_true, y_pred, candidate_sampling_probability=candidate_sampling_probability,
                           ops=ops, **self._fn_kwargs)
        return functional.saturate_float16(ops, row_loss) if self._float16_call else row_loss

    def get_config(self) -> dict[str, Any]:
        arguments = functional.map_kernel_callables(self._fn_kwargs, keras.saving.serialize_keras_object)
        return {**super().get_config(), **arguments}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LossWrapper:
        return cls(**functional.map_kernel_callables(config, keras.saving.deserialize_keras_object))


@keras.saving.register_keras_serializable(package="tfcroloss")
class CROLoss(LossWrapper):
    """CROLoss for Keras 3: ``tfcroloss.functional.cro_loss`` per example; see
    ``tfcroloss.CROLoss`` for NaN, half precision and ``candidate_sampling_probability``.

    Args:
      num_items, alpha, kernel, margin, weighting: as in ``cro_loss``.
      reduction: a Keras 3 reduction ("sum_over_batch_size", "sum", "mean", "none", ...).
      name: the loss's name.
      dtype: the loss's compute dtype (Keras 3 casts the inputs to it); float32 when None.
    """

    def __init__(self, num_items: int, alpha: float = functional.ALPHA,
                 kernel: KernelSpec = functional.KERNEL, margin: float = functional.MARGIN,
                 weighting: str = functional.WEIGHTING,
                 reduction: str = "sum_over_batch_size", name: str = "cro_loss", dtype: Any = None):
        super().__init__(functional.cro_loss, reduction=reduction, name=name, dtype=dtype,
                         num_items=num_items, alpha=alpha, kernel=kernel, margin=margin, weighting=weighting)


@keras.saving.register_keras_serializable(package="tfcroloss")
class LambdaCROLoss(LossWrapper):
    """LambdaCROLoss for Keras 3: ``tfcroloss.functional.lambda_cro_loss`` per example.

    Args:
      num_items, alpha, weight_kernel, grad_kernel, margin, weighting: as in ``lambda_cro_loss``.
      reduction, name, dtype: as in ``CROLoss``.
    """

    def __init__(self, num_items: int, alpha: float = functional.ALPHA,
                 weight_kernel: KernelSpec = functional.WEIGHT_KERNEL,
                 grad_kernel: KernelSpec = functional.GRAD_KERNEL, margin: float = functional.MARGIN,
                 weighting: str = functional.WEIGHTING,
                 reduction: str = "sum_over_batch_size", name: str = "lambda_cro_loss", dtype: Any = None):
        super().__init__(functional.lambda_cro_loss, reduction=reduction, name=name, dtype=dtype,
                         num_items=num_items, alpha=alpha, weight_kernel=weight_kernel,
                         grad_kernel=grad_kernel, margin=margin, weighting=weighting)
