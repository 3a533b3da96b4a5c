"""CROLoss and LambdaCROLoss as tf-keras (Keras 2) losses: the flavour for TFRS.

Both take what ``tfrs.tasks.Retrieval`` hands its loss: ``y_true`` is
``[batch, candidates]`` with a single 1 at each row's positive, ``y_pred`` the
(already scaled) logits. Every other candidate is a negative, except those
TFRS masked (accidental hits, ``score_mask``), whose logits sit near
``float32.min / 100``: they are neither negatives nor counted. Each class holds
the arguments of its function in ``tfcroloss.functional`` and calls it, as Keras's
``LossFunctionWrapper`` does.

Loading this module makes ``tf.keras`` tf-keras (``import tfcroloss`` set
``TF_USE_LEGACY_KERAS=1``), so it refuses to load where that cannot hold: in a
process that uses ``tfcroloss.keras3``, or where TensorFlow was already imported
with Keras 3.

>>> import tensorflow as tf
>>> y_true = tf.constant([[1.0, 0.0, 0.0]])
>>> y_pred = tf.constant([[2.0, 1.0, -1.0]])
>>> loss = CROLoss(num_items=2, kernel="exponential", alpha=1.0)
>>> cross_entropy = tf.keras.losses.CategoricalCrossentropy(from_logits=True)
>>> round(float(loss(y_true, y_pred)), 4) == round(float(cross_entropy(y_true, y_pred)), 4)
True
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

if "tfcroloss.keras3" in sys.modules:
    raise ImportError(
        "tfcroloss is already in use with Keras 3 in this process (`import tfcroloss.keras3`); "
        "it cannot also use tf-keras (`from tfcroloss import CROLoss`, TFRS). tf-keras needs "
        "TF_USE_LEGACY_KERAS=1 before TensorFlow is imported, which makes tf.keras Keras 2 for "
        "the whole process: use one of the two per process."
    )
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # also when tfcroloss's root did not run first

import tensorflow as tf  # noqa: E402

from tfcroloss import backends, functional  # noqa: E402
from tfcroloss.functional import MASKED_LOGIT, KernelSpec  # noqa: E402

if not tf.keras.__name__.startswith("tf_keras"):
    raise ImportError(
        "tfcroloss needs Keras 2 (tf-keras) as tf.keras, but TensorFlow was imported with "
        f"Keras {getattr(tf.keras, '__version__', None) or tf.keras.__name__}. Set the environment "
        "variable TF_USE_LEGACY_KERAS=1 before TensorFlow is first imported (or import tfcroloss "
        "before tensorflow), and `pip install tf-keras`. For Keras 3 (TensorFlow, JAX or PyTorch "
        "backend) use `import tfcroloss.keras3` instead."
    )

__all__ = ["CROLoss", "LambdaCROLoss", "LossWrapper", "MASKED_LOGIT"]

_ops = backends.tensorflow_ops()
_HALF = (tf.float16, tf.bfloat16)


class LossWrapper(tf.keras.losses.Loss):
    """A tf-keras loss that holds the arguments of a ``tfcroloss.functional`` loss and calls it.

    ``call(y_true, y_pred, candidate_sampling_probability=None)`` gives per-example losses;
    ``__call__`` reduces them (``reduction``) and returns half-precision logits' dtype.
    The arguments are checked when the loss is made and kept as attributes
    (``loss.alpha``, ``loss.kernel``, ...).
    """

    def __init__(self, fn: Callable[..., Any], *, reduction: str, name: str, **arguments: Any):
        super().__init__(reduction=reduction, name=name)
        self.fn = fn
        self._fn_kwargs = functional.check_arguments(**arguments)
        self.__dict__.update(self._fn_kwargs)
        self._sampling_probability = None

    @contextlib.contextmanager
    def sampling_probability(self, candidate_sampling_probability: Any) -> Iterator[None]:
        """Inside this block, calls of the loss (``loss(y_true, y_pred, sample_weight)``, reduced as
        usual) use ``candidate_sampling_probability``: how ``tfcroloss.tfrs.Retrieval`` hands
        TFRS's ``q`` to the loss through ``tfrs.tasks.Retrieval``'s own call (at trace time
        inside ``tf.function``)."""
        self._sampling_probability = candidate_sampling_probability
        try:
            yield
        finally:
            self._sampling_probability = None

    def call(self, y_true: Any, y_pred: Any, candidate_sampling_probability: Any = None) -> tf.Tensor:
        """Per-example losses ``[batch]`` (float32 for half-precision inputs).

        Keras calls this with ``(y_true, y_pred)``. A model whose negatives are not
        uniform draws calls it with ``candidate_sampling_probability`` (``q_j`` per
        draw, ``[candidates]`` or ``[batch, candidates]``) and reduces the result
        itself, e.g. ``tf.nn.compute_average_loss(loss.call(y, s, q), sample_weight)``, or calls
        the loss inside ``with loss.sampling_probability(q):``.
        """
        if candidate_sampling_probability is None:
            candidate_sampling_probability = self._sampling_probability
        return self.fn(y_true, y_pred, candidate_sampling_probability=candidate_sampling_probability,
                       ops=_ops, **self._fn_kwargs)

    def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> tf.Tensor:
        loss = super().__call__(y_true, y_pred, sample_weight)
        dtype = getattr(y_pred, "dtype", None)
        if dtype is not None and tf.as_dtype(dtype) in _HALF:  # reduced in float32, cast once
            loss = tf.cast(loss, dtype)
        return loss

    def get_config(self) -> dict[str, Any]:
        arguments = functional.map_kernel_callables(self._fn_kwargs, tf.keras.utils.serialize_keras_object)
        return {**super().get_config(), **arguments}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LossWrapper:
        return cls(**functional.map_kernel_callables(config, tf.keras.utils.deserialize_keras_object))


@tf.keras.utils.register_keras_serializable(package="tfcroloss")
class CROLoss(LossWrapper):
    """Customizable Recall@N Optimization Loss: ``tfcroloss.functional.cro_loss`` per example.

    Per example: ``log(num_items + 1) * W_alpha(R)`` with
    ``R = num_items / M * (1 + sum_j phi(s_j - s+))`` over the row's ``M`` negatives.
    ``kernel="exponential", alpha=1`` is softmax cross-entropy (same gradient); BPR and the
    triplet loss are ``alpha=0`` with ``softplus`` and ``hinge``. NaN is never hidden (a NaN
    among a row's unmasked logits makes its loss NaN); float16 and bfloat16 logits are computed
    in float32 and the result is cast back to their dtype. Non-uniform negatives:
    ``loss.call(y_true, y_pred, candidate_sampling_probability=q)`` (``docs/unbiased-rank.md``).

    Args:
      num_items, alpha, kernel, margin, weighting: as in ``cro_loss``.
      reduction: a ``tf.keras.losses.Reduction``.
      name: the loss's name.
    """

    def __init__(self, num_items: int, alpha: float = functional.ALPHA,
                 kernel: KernelSpec = functional.KERNEL, margin: float = functional.MARGIN,
                 weighting: str = functional.WEIGHTING,
                 reduction: str = tf.keras.losses.Reduction.AUTO, name: str = "cro_loss"):
        super().__init__(functional.cro_loss, reduction=reduction, name=name, num_items=num_items,
                         alpha=alpha, kernel=kernel, margin=margin, weighting=weighting)


@tf.keras.utils.register_keras_serializable(package="tfcroloss")
class LambdaCROLoss(LossWrapper):
    """CROLoss with the Lambda method: ``tfcroloss.functional.lambda_cro_loss`` per example.

    The weight kernel phi1 estimates the rank under stop-gradient (it may be the unit step);
    the gradient kernel phi2 sets how hard each negative is pushed. NaN, half precision and
    ``candidate_sampling_probability`` as in ``CROLoss``.

    Args:
      num_items, alpha, weight_kernel, grad_kernel, margin, weighting: as in ``lambda_cro_loss``.
      reduction, name: as in ``CROLoss``.
    """

    def __init__(self, num_items: int, alpha: float = functional.ALPHA,
                 weight_kernel: KernelSpec = functional.WEIGHT_KERNEL,
                 grad_kernel: KernelSpec = functional.GRAD_KERNEL, margin: float = functional.MARGIN,
                 weighting: str = functional.WEIGHTING,
                 reduction: str = tf.keras.losses.Reduction.AUTO, name: str = "lambda_cro_loss"):
        super().__init__(functional.lambda_cro_loss, reduction=reduction, name=name, num_items=num_items,
                         alpha=alpha, weight_kernel=weight_kernel, grad_kernel=grad_kernel, margin=margin,
                         weighting=weighting)
