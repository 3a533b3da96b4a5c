"""The two array namespaces the loss maths runs on, and which Keras this process uses.

The kernels, the power weighting, the rank estimator and the loss itself are written once
against a small numpy-like namespace ``ops`` (the names of ``keras.ops``). Two namespaces
implement it:

- :func:`tensorflow_ops`: TensorFlow functions, for the tf-keras losses (``import tfcroloss``);
- :func:`keras_ops`: ``keras.ops``, for the Keras 3 losses (``import tfcroloss.keras3``),
  on whichever backend Keras 3 runs (TensorFlow, JAX, PyTorch).

A process uses one of the two. Asking for the second after the first is an ``ImportError``
that says why: tf-keras needs ``TF_USE_LEGACY_KERAS=1`` before TensorFlow is imported, which
changes what ``tf.keras`` is for the whole process. This module imports no framework itself.
"""

from __future__ import annotations

import os
from typing import Any

TF_KERAS = "tf-keras"
KERAS_3 = "Keras 3"

_selected: str | None = None
_namespaces: dict[str, Any] = {}

_OTHER_ENTRY = {
    TF_KERAS: "`import tfcroloss` / `from tfcroloss import CROLoss` (tf-keras)",
    KERAS_3: "`import tfcroloss.keras3` (Keras 3)",
}


def _select(keras: str) -> None:
    global _selected
    if _selected not in (None, keras):
        raise ImportError(
            f"tfcroloss is already in use with {_selected} in this process "
            f"({_OTHER_ENTRY[_selected]}); it cannot also use {keras} ({_OTHER_ENTRY[keras]}). "
            "tf-keras needs TF_USE_LEGACY_KERAS=1 before TensorFlow is imported, which makes "
            "tf.keras Keras 2 for the whole process: use one of the two per process."
            + (
                " (`from tfcroloss import keras3` imports the tf-keras package `tfcroloss` first; "
                "write `import tfcroloss.keras3` or `from tfcroloss.keras3 import CROLoss`.)"
                if keras == KERAS_3
                else ""
            )
        )
    _selected = keras


def selected() -> str | None:
    """The Keras this process's tfcroloss uses: ``TF_KERAS``, ``KERAS_3`` or None (not yet)."""
    return _selected


def tensorflow_ops() -> TensorFlowOps:
    """The TensorFlow namespace; selects tf-keras for ``tf.keras`` (see ``tfcroloss``)."""
    if TF_KERAS not in _namespaces:
        _select(TF_KERAS)
        # Also helps when tensorflow is imported but tf.keras not yet resolved (it loads lazily).
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
        import tensorflow as tf

        if not tf.keras.__name__.startswith("tf_keras"):
            version = getattr(tf.keras, "__version__", None) or tf.keras.__name__
            raise ImportError(
                "tfcroloss needs Keras 2 (tf-keras) as tf.keras, but TensorFlow was imported with "
                f"Keras {version}. Set the environment variable TF_USE_LEGACY_KERAS=1 before "
                "TensorFlow is first imported (or import tfcroloss before tensorflow), and "
                "`pip install tf-keras`. For Keras 3 (TensorFlow, JAX or PyTorch backend) use "
                "`import tfcroloss.keras3` instead."
            )
        _namespaces[TF_KERAS] = TensorFlowOps(tf)
    return _namespaces[TF_KERAS]


def keras_ops() -> KerasOps:
    """The ``keras.ops`` namespace (Keras 3); imports no TensorFlow unless Keras's backend does."""
    if KERAS_3 not in _namespaces:
        _select(KERAS_3)
        import keras

        if int(keras.__version__.split(".")[0]) < 3:
            raise ImportError(f"tfcroloss.keras3 needs Keras 3, found keras {keras.__version__}")
        _namespaces[KERAS_3] = KerasOps(keras)
    return _namespaces[KERAS_3]


class TensorFlowOps:
    """The ``ops`` namespace over TensorFlow; input checks become graph assertions."""

    def __init__(self, tf: Any):
        self.tf = tf
        for name, fn in {
            "convert_to_tensor": tf.convert_to_tensor,
            "cast": tf.cast,
            "where": tf.where,
            "zeros_like": tf.zeros_like,
            "ones_like": tf.ones_like,
            "equal": tf.equal,
            "abs": tf.abs,
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
        }.items():
            setattr(self, name, fn)

    def full_like(self, x: Any, value: float) -> Any:
        return self.tf.fill(self.tf.shape(x), self.tf.constant(value, x.dtype))

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

    # Input checks: graph assertions (tf.errors.InvalidArgumentError), also inside tf.function.
    def assert_equal(self, x: Any, y: Any, message: str) -> Any:
        return self.tf.debugging.assert_equal(x, y, message=message)

    def assert_less_equal(self, x: Any, y: Any, message: str) -> Any:
        return self.tf.debugging.assert_less_equal(x, y, message=message)

    def assert_greater(self, x: Any, y: Any, message: str) -> Any:
        return self.tf.debugging.assert_greater(x, y, message=message)

    def after(self, checks: list, fn: Any) -> Any:
        """``fn()``, computed only once ``checks`` have passed."""
        with self.tf.control_dependencies(checks):
            return fn()


class KerasOps:
    """The ``ops`` namespace over ``keras.ops``; input checks raise ``ValueError`` on concrete
    (eager) values and are skipped while a function is traced (``jax.jit``, ``torch.compile``),
    except on the TensorFlow backend, where they become graph assertions as in tf-keras."""

    def __init__(self, keras: Any):
        self.keras = keras
        self._ops = keras.ops
        self._tf_checks = None
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf  # already imported by Keras's TensorFlow backend

            self._tf_checks = TensorFlowOps(tf)

    def __getattr__(self, name: str) -> Any:  # everything else is keras.ops itself
        return getattr(self._ops, name)

    def dtype_name(self, x: Any) -> str:
        return self.keras.backend.standardize_dtype(x.dtype)

    def static_shape(self, x: Any) -> tuple | None:
        return tuple(self._ops.shape(x))

    def _in_tf_graph(self) -> bool:
        return self._tf_checks is not None and not self._tf_checks.tf.executing_eagerly()

    def _check(self, ok: Any, message: str) -> None:
        if _in_symbolic_scope():  # Keras working out output shapes on placeholder values
            return None
        try:
            concrete = bool(self._ops.convert_to_numpy(self._ops.all(ok)))
        except Exception:  # a tracer: no value to check while tracing
            return None
        if not concrete:
            raise ValueError(message)

    def assert_equal(self, x: Any, y: Any, message: str) -> Any:
        if self._in_tf_graph():
            return self._tf_checks.assert_equal(x, y, message)
        return self._check(self._ops.equal(x, y), message)

    def assert_less_equal(self, x: Any, y: Any, message: str) -> Any:
        if self._in_tf_graph():
            return self._tf_checks.assert_less_equal(x, y, message)
        return self._check(self._ops.less_equal(x, y), message)

    def assert_greater(self, x: Any, y: Any, message: str) -> Any:
        if self._in_tf_graph():
            return self._tf_checks.assert_greater(x, y, message)
        return self._check(self._ops.greater(x, y), message)

    def after(self, checks: list, fn: Any) -> Any:
        checks = [check for check in checks if check is not None]
        if checks:
            return self._tf_checks.after(checks, fn)
        return fn()


def _in_symbolic_scope() -> bool:
    try:
        from keras.src.backend.common.symbolic_scope import in_symbolic_scope
    except ImportError:  # a Keras without it: checks run on the placeholder values too
        return False
    return in_symbolic_scope()
