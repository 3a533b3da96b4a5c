"""Pairwise comparison kernels phi(x), the smooth stand-ins for the unit step.

A kernel maps the gap ``x = s_negative - s_positive`` between two scores to a
"how much does this negative outrank the positive" count (section 3.4 of the
paper). Kernels live in a small registry; look one up by name with :func:`get`.
The registry is written once over an array namespace ``ops`` (see
``tfcroloss.backends``): TensorFlow by default, ``keras.ops`` for ``tfcroloss.keras3``.

>>> import tensorflow as tf
>>> kernel = get("softplus")
>>> [round(float(v), 4) for v in kernel(tf.constant([-2.0, 0.0, 2.0]))]
[0.1269, 0.6931, 2.1269]
>>> get("hinge", margin=0.5)(tf.constant([-1.0, 0.0])).numpy().tolist()
[0.0, 0.5]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from tfcroloss import backends
from tfcroloss.registry import unknown_name

KernelFn = Callable[[Any], Any]


@dataclasses.dataclass(frozen=True)
class Kernel:
    """A named comparison kernel.

    Attributes:
      name: registry name, or the callable's name for user kernels.
      fn: phi(x), elementwise.
      log_fn: log(phi(x)) where a stable closed form exists, with phi(0) = 1; the rank
        estimator then sums in log space (used by the exponential kernel).
      differentiable: False for the unit step, which may only weight gradients.
      derivative: phi'(x) as ``derivative(x, value)`` from x and ``value = phi(x)``, for the
        losses' hand-written gradient; None for callables (autodiff). With ``log_fn``, ``value``
        may be phi(x) scaled by a positive per-row constant, and the result scales alike.
      derivative_name: the kernel whose values are phi' (softplus: sigmoid), so a loss that
        computes both reuses them.
      vanishes_far_below: phi (and phi') is exactly 0 at ``-inf`` and at the gaps of masked
        candidates (``-3e35`` and below), so the losses need no weights to leave those out; False
        for callables, which get explicit weights.
    """

    name: str
    fn: KernelFn
    log_fn: KernelFn | None = None
    differentiable: bool = True
    derivative: Callable[[Any, Any], Any] | None = None
    derivative_name: str | None = None
    vanishes_far_below: bool = False

    def __call__(self, x: Any) -> Any:
        return self.fn(x)


def _builders(ops: Any, margin: float) -> dict[str, Kernel]:
    return {
        "sigmoid": Kernel(
            "sigmoid", ops.sigmoid, derivative=lambda x, value: value * (1.0 - value), vanishes_far_below=True
        ),
        "softplus": Kernel(
            "softplus", ops.softplus, derivative=lambda x, value: ops.sigmoid(x), derivative_name="sigmoid",
            vanishes_far_below=True,
        ),
        "exponential": Kernel(
            "exponential", ops.exp, log_fn=lambda x: x, derivative=lambda x, value: value,
            derivative_name="exponential", vanishes_far_below=True,
        ),
        "hinge": Kernel(
            "hinge", lambda x: ops.relu(x + margin),
            derivative=lambda x, value: ops.cast(value > 0, ops.dtype_name(x)), vanishes_far_below=True,
        ),
        "unit_step": Kernel(
            "unit_step", lambda x: ops.cast(x >= 0, ops.dtype_name(x)), differentiable=False,
            vanishes_far_below=True,
        ),
    }


ALIASES = {"exp": "exponential", "step": "unit_step"}
NAMES = ("sigmoid", "softplus", "exponential", "hinge", "unit_step")


def canonical_name(identifier: str) -> str:
    """The registry name of ``identifier`` (a name or an alias, any case); needs no framework.

    Raises:
      ValueError: for an unknown name; the message lists the valid ones.
    """
    name = ALIASES.get(identifier.lower(), identifier.lower())
    if name not in NAMES:
        raise ValueError(f"{unknown_name('kernel', identifier, sorted(NAMES + tuple(ALIASES)))}, or a callable")
    return name


# Kernels without a gradient: they may only weight gradients (LambdaCROLoss's weight_kernel).
WEIGHT_ONLY = ("unit_step",)


def get(identifier: str | KernelFn | Kernel, margin: float = 5.0, ops: Any = None) -> Kernel:
    """Returns the kernel named ``identifier`` (or wraps a callable).

    Args:
      identifier: one of ``NAMES`` (or an alias in ``ALIASES``), a ``Kernel``,
        or a callable ``phi(x)`` taking and returning a float tensor.
      margin: the hinge kernel's margin m in ``phi(x) = max(x + m, 0)``.
      ops: the array namespace the kernel computes with; TensorFlow when None.

    Raises:
      ValueError: for an unknown name; the message lists the valid ones.
    """
    if isinstance(identifier, Kernel):
        return identifier
    if callable(identifier):
        return Kernel(getattr(identifier, "__name__", "custom"), identifier)
    if not isinstance(identifier, str):
        raise TypeError(f"kernel must be a name or a callable, got {identifier!r}")
    return _builders(ops or backends.tensorflow_ops(), float(margin))[canonical_name(identifier)]
