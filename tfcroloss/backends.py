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
            "log": tf.math.log,
            "exp": tf.math.exp,
            "expm1": tf.math.expm1,
            "log1p": tf.math.log1p,
            "minimum": tf.minimum,
            "maximum": tf.maximum,
            "relu": tf.nn.relu,
            "sigmoid": tf.math.sigmoid,
            "stop_gradient": tf.stop_gradient,
            "expand_dims": tf.expand_dims,
            "stack": tf.stack,
            "shape": tf.shape,
            "scatter_update": tf.tensor_scatter_nd_update,
            "custom_gradient": tf.custom_gradient,
        }.items():
            setattr(self, name, fn)

    def full_like(self, x: Any, value: float) -> Any:
        return self.tf.fill(self.tf.shape(x), self.tf.constant(value, x.dtype))

    def softplus(self, x: Any) -> Any:
        """``log(1 + e^x)`` with the sigmoid as its gradient. On CPU, ``log1p(exp(x))`` costs a
        third of ``tf.math.softplus`` over the loss's logits (``docs/losses.md``, "The fused
        gradient"); it is exact where ``e^x`` does not overflow, so it is taken when no ``x`` is
        above ``SOFTPLUS_DIRECT_MAX``, else ``relu(x) + log1p(e^-|x|)``."""
        return _softplus(self.tf)(x)

    def argmax(self, x: Any, axis: int) -> Any:
        return self.tf.math.argmax(x, axis=axis, output_type=self.tf.int32)

    def arange(self, n: Any, dtype: str = "int32") -> Any:
        return self.tf.range(n, dtype=dtype)

    def take_along_axis(self, x: Any, indices: Any, axis: int) -> Any:
        return self.tf.gather(x, indices, axis=axis, batch_dims=1)

    def sum(self, x: Any, axis: int | None = None, keepdims: bool = False) -> Any:
        return self.tf.reduce_sum(x, axis=axis, keepdims=keepdims)

    def max(self, x: Any, axis: int | None = None) -> Any:
        return self.tf.reduce_max(x, axis=axis)

    def min(self, x: Any, axis: int | None = None) -> Any:
        return self.tf.reduce_min(x, axis=axis)

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


# exp(x) is finite up to about 88 in float32.
SOFTPLUS_DIRECT_MAX = 80.0


def _softplus(tf: Any) -> Any:
    @tf.custom_gradient
    def softplus(x: Any) -> Any:
        value = tf.cond(
            tf.reduce_max(x) <= SOFTPLUS_DIRECT_MAX,
            lambda: tf.math.log1p(tf.math.exp(x)),
            lambda: tf.nn.relu(x) + tf.math.log1p(tf.math.exp(-tf.math.abs(x))),
        )
        return value, lambda upstream: upstream * tf.math.sigmoid(x)

    return softplus


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
