"""The two array namespaces the loss maths runs on.

The kernels, the power weighting, the rank estimator and the loss itself are written once
against a small numpy-like namespace ``ops`` (the names of ``keras.ops``). Two namespaces
implement it:

- :func:`tensorflow_ops`: TensorFlow functions, for the tf-keras losses (``tfcroloss.CROLoss``);
- :func:`keras_ops`: ``keras.ops``, for the Keras 3 losses (``import tfcroloss.keras3``),
  on whichever backend Keras 3 runs (TensorFlow, JAX, PyTorch).

Neither selects a Keras: which Keras a process uses is the flavour modules' business
(``tfcroloss.losses``, ``tfcroloss.keras3``). This module imports no framework itself.
"""

from __future__ import annotations

import os
from typing import Any

_namespaces: dict[str, Any] = {}


def tensorflow_ops() -> TensorFlowOps:
    """The namespace over TensorFlow (imported on first use; ``tf.keras`` is not touched)."""
    if "tensorflow" not in _namespaces:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        _namespaces["tensorflow"] = TensorFlowOps(tf)
    return _namespaces["tensorflow"]


def keras_ops() -> KerasOps:
    """The ``keras.ops`` namespace (Keras 3); imports no TensorFlow unless Keras's backend does."""
    if "keras" not in _namespaces:
        import keras

        if int(keras.__version__.split(".")[0]) < 3:
            raise ImportError(f"tfcroloss.keras3 needs Keras 3, found keras {keras.__version__}")
        _namespaces["keras"] = KerasOps(keras)
    return _namespaces["keras"]


def autodiff_only(forward: Any) -> Any:
    """``custom_gradient`` that ignores the hand-written gradient: ``forward(x)`` returns
    ``(outputs, gradient)``, this returns the outputs only, and autodiff differentiates them. Keras 3
    uses it on every backend (the hand-written gradient is TensorFlow's alone); the tests use it
    for autodiff's gradient of the same forward."""
    return lambda x: forward(x)[0]


class TensorFlowOps:
    """The ``ops`` namespace over TensorFlow; input checks raise on eager values only;
    ``custom_gradient`` is ``tf.custom_gradient`` (the losses' hand-written gradient)."""

    def __init__(self, tf: Any):
        self.tf = tf
        for name, fn in {
            "convert_to_tensor": tf.convert_to_tensor,
            "cast": tf.cast,
            "where": tf.where,
            "zeros_like": tf.zeros_like,
            "ones_like": tf.ones_like,
            "equal": tf.equal,
            "not_equal": tf.not_equal,
            "log": tf.math.log,
            "exp": tf.math.exp,
            "expm1": tf.math.expm1,
            "log1p": tf.math.log1p,
            "isnan": tf.math.is_nan,
            "minimum": tf.minimum,
            "maximum": tf.maximum,
            "relu": tf.nn.relu,
            "sigmoid": tf.math.sigmoid,
            "softplus": tf.math.softplus,
            "stop_gradient": tf.stop_gradient,
            "expand_dims": tf.expand_dims,
            "custom_gradient": tf.custom_gradient,
        }.items():
            setattr(self, name, fn)

    def full_like(self, x: Any, value: float) -> Any:
        return self.tf.fill(self.tf.shape(x), self.tf.constant(value, x.dtype))

    def sum(self, x: Any, axis: int | None = None, keepdims: bool = False) -> Any:
        return self.tf.reduce_sum(x, axis=axis, keepdims=keepdims)

    def max(self, x: Any, axis: int | None = None) -> Any:
        return self.tf.reduce_max(x, axis=axis)

    def any(self, x: Any, axis: int | None = None) -> Any:
        return self.tf.reduce_any(x, axis=axis)

    def logsumexp(self, x: Any, axis: int | None = None) -> Any:
        return self.tf.math.reduce_logsumexp(x, axis=axis)

    def concatenate(self, xs: list, axis: int = 0) -> Any:
        return self.tf.concat(xs, axis=axis)

    def dtype_name(self, x: Any) -> str:
        return self.tf.as_dtype(x.dtype).name

    def static_shape(self, x: Any) -> tuple | None:
        return None if x.shape.rank is None else tuple(x.shape)

    def check(self, bad: Any, message: str) -> None:
        """Raises ``ValueError(message)`` if any of ``bad`` is True, on eager values; inside
        ``tf.function`` nothing (the loss makes those rows NaN)."""
        if self.tf.executing_eagerly() and bool(self.tf.reduce_any(bad)):
            raise ValueError(message)


class KerasOps:
    """The ``ops`` namespace over ``keras.ops``; input checks raise ``ValueError`` on concrete
    (eager) values and are skipped while a function is traced (``jax.jit``, ``torch.compile``,
    ``tf.function``), as in tf-keras."""

    def __init__(self, keras: Any):
        self.keras = keras
        self._ops = keras.ops

    def __getattr__(self, name: str) -> Any:  # everything else is keras.ops itself
        return getattr(self._ops, name)

    def full_like(self, x: Any, value: float) -> Any:
        # zeros plus a scalar also works on PyTorch's "meta" tensors, which Keras uses to work out
        # output shapes; ``keras.ops.full_like`` does not there, and Keras then retries on real
        # tensors filled with placeholder values, which the input checks would refuse.
        return self._ops.zeros_like(x) + value

    def dtype_name(self, x: Any) -> str:
        return self.keras.backend.standardize_dtype(x.dtype)

    custom_gradient = staticmethod(autodiff_only)

    def static_shape(self, x: Any) -> tuple | None:
        return tuple(self._ops.shape(x))

    def check(self, bad: Any, message: str) -> None:
        """Raises ``ValueError(message)`` if any of ``bad`` is True, on concrete values; while a
        function is traced nothing (the loss makes those rows NaN)."""
        try:
            concrete = bool(self._ops.convert_to_numpy(self._ops.any(bad)))
        except Exception:  # a tracer or a symbolic tensor: no value to check
            return
        if concrete:
            raise ValueError(message)
