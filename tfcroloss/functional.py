"""CROLoss and LambdaCROLoss as functions: the one place where the loss is computed.

``cro_loss`` and ``lambda_cro_loss`` return one loss per row. The Keras classes
(``tfcroloss.CROLoss``, ``tfcroloss.keras3.CROLoss``, ...) are thin wrappers
around the same machinery, :class:`SampledRankLossSpec` and its two leaves,
which is written over an array namespace ``ops`` (``tfcroloss.backends``) so that
TensorFlow and Keras 3 (TensorFlow, JAX, PyTorch) run the same maths.

Inputs, as ``tfrs.tasks.Retrieval`` hands them to its loss: ``labels`` is
``[batch, candidates]`` with a single 1 at each row's positive, ``logits`` the
(already scaled) scores. Every other candidate is a negative, except masked ones
(accidental hits, ``score_mask``), whose logits are at or below
:data:`MASKED_LOGIT`: they are neither negatives nor counted.

Contracts:

- **NaN is never hidden.** A NaN in any unmasked logit of a row makes that row's
  loss NaN (as softmax cross-entropy does), so ``TerminateOnNaN`` sees divergence.
- **Half precision.** float16 and bfloat16 logits are computed in float32; the
  per-row losses come back in float32 (so reductions do not overflow) and the
  Keras classes cast their result to the input dtype. For float16, a row loss
  above ``FLOAT16_SATURATION`` continues as ``log1p`` of the excess, so values and
  gradients stay inside float16's range (it tops out at 65504).
- **Non-uniform negatives.** With ``candidate_sampling_probability`` (``q_j``,
  the probability of candidate j per draw, ``[candidates]`` or
  ``[batch, candidates]``), the rank estimate weights each negative by
  ``1 / (N q_j)`` (Horvitz-Thompson, ``docs/unbiased-rank.md``); without it,
  negatives are taken as uniform draws (the paper's eq. 24).

>>> import tensorflow as tf
>>> labels = tf.constant([[1.0, 0.0, 0.0]])
>>> logits = tf.constant([[2.0, 1.0, -1.0]])
>>> [round(float(v), 4) for v in cro_loss(labels, logits, num_items=2, kernel="exp")]
[0.349]
>>> # log(2 / 2 * (1 + e**-1 + e**-3)): eq. 24
>>> q = tf.constant([0.5, 0.25, 0.25])   # q_j per draw, over the candidates
>>> [round(float(v), 4) for v in cro_loss(labels, logits, num_items=2, kernel="exp",
...                                        candidate_sampling_probability=q)]
[0.6072]
>>> # log(2 / 2 + (e**-1 + e**-3) / (2 * 0.25)): each negative counts 1 / (M q_j)
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import Any

from tfcroloss import backends, kernels, weightings
from tfcroloss.rank import sampled_log_rank

# Logits at or below this are treated as masked out (TFRS uses float32.min / 100).
MASKED_LOGIT = -3.4028234663852886e38 / 1000.0  # float32.min / 1000

# float16 row losses above this continue logarithmically (float16 tops out at 65504).
FLOAT16_SATURATION = 4096.0

_FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


@dataclasses.dataclass(frozen=True)
class Candidates:
    """One batch, prepared for the rank estimator (all ``[batch, candidates]`` unless noted).

    Attributes:
      gaps: ``s_candidate - s_positive`` in the compute dtype.
      negative_mask: True where a candidate counts as a negative.
      num_negatives: ``[batch]``, the mask's row sums M.
      nan_rows: ``[batch]`` bool, rows with a NaN among their unmasked logits.
      log_weights: ``-log(N q_j)`` on negatives (0 elsewhere), or None for uniform sampling.
      input_dtype: the logits' dtype name.
    """

    gaps: Any
    negative_mask: Any
    num_negatives: Any
    nan_rows: Any
    log_weights: Any
    input_dtype: str


def prepare(
    ops: Any,
    labels: Any,
    logits: Any,
    num_items: int,
    candidate_sampling_probability: Any = None,
    name: str = "cro_loss",
) -> Candidates:
    """Checks the inputs and works out gaps, negatives and importance weights."""
    logits = ops.convert_to_tensor(logits)
    input_dtype = ops.dtype_name(logits)
    if input_dtype not in _FLOAT_DTYPES:
        raise ValueError(f"{name}: y_pred must hold float logits, got dtype {input_dtype}")
    compute_dtype = "float64" if input_dtype == "float64" else "float32"
    logits = ops.cast(logits, compute_dtype)
    labels = ops.cast(ops.convert_to_tensor(labels), compute_dtype)
    _check_shapes(ops, labels, logits, name)

    is_positive = ops.equal(labels, 1.0)
    # `not <=` rather than `>`: a NaN logit stays a negative, so it reaches the loss.
    negative_mask = ~is_positive & ~(logits <= MASKED_LOGIT)
    num_negatives = ops.sum(ops.cast(negative_mask, compute_dtype), axis=1)
    checks = [  # a few reductions over the labels: cheap next to the kernel
        ops.assert_equal(
            ops.sum(labels, axis=1), ops.ones_like(num_negatives),
            message=f"{name}: every row of y_true must hold exactly one 1 (the positive)",
        ),
        ops.assert_equal(
            ops.max(ops.abs(labels * (1.0 - labels))), ops.cast(0.0, compute_dtype),
            message=f"{name}: y_true must hold only 0 and 1",
        ),
        ops.assert_less_equal(
            num_negatives, ops.cast(num_items, compute_dtype),
            message=f"{name}: a row has more negatives than num_items={num_items}; "
            "num_items must be the catalog size",
        ),
    ]
    log_weights = None
    if candidate_sampling_probability is not None:
        log_weights, check = _log_importance_weights(
            ops, candidate_sampling_probability, negative_mask, num_items, compute_dtype, name
        )
        checks.append(check)

    def positive_logit():
        return ops.sum(ops.where(is_positive, logits, ops.zeros_like(logits)), axis=1, keepdims=True)

    gaps = logits - ops.after(checks, positive_logit)
    nan_rows = ops.any(ops.isnan(logits), axis=1)  # masked logits are never NaN
    return Candidates(gaps, negative_mask, num_negatives, nan_rows, log_weights, input_dtype)


def _check_shapes(ops: Any, labels: Any, logits: Any, name: str) -> None:
    pred_shape, true_shape = ops.static_shape(logits), ops.static_shape(labels)
    if pred_shape is not None and len(pred_shape) != 2:
        raise ValueError(f"{name}: y_pred must be [batch, candidates], got shape {pred_shape}")
    if pred_shape is not None and true_shape is not None and not (
        len(true_shape) == len(pred_shape)
        and all(a is None or b is None or a == b for a, b in zip(true_shape, pred_shape, strict=True))
    ):
        raise ValueError(
            f"{name}: y_true and y_pred must have the same shape, got {true_shape} and {pred_shape}"
        )


def _log_importance_weights(
    ops: Any, probability: Any, negative_mask: Any, num_items: int, dtype: str, name: str
) -> tuple[Any, Any]:
    """``-log(N q_j)`` on negatives, 0 elsewhere; and the check that q_j > 0 there."""
    probability = ops.stop_gradient(ops.cast(ops.convert_to_tensor(probability), dtype))
    shape = ops.static_shape(probability)
    if shape is not None and len(shape) not in (1, 2):
        raise ValueError(
            f"{name}: candidate_sampling_probability must be [candidates] or [batch, candidates], "
            f"got shape {shape}"
        )
    if shape is not None and len(shape) == 1:
        probability = ops.expand_dims(probability, 0)
    probability = ops.where(negative_mask, probability, ops.ones_like(negative_mask, dtype=dtype))
    check = ops.assert_greater(
        ops.min(probability), ops.cast(0.0, dtype),
        message=f"{name}: candidate_sampling_probability must be > 0 for every negative candidate",
    )
    log_weights = -math.log(num_items) - ops.log(probability)
    return ops.where(negative_mask, log_weights, ops.zeros_like(log_weights)), check


def finish(ops: Any, candidates: Candidates, row_loss: Any, float16_logits: bool = False) -> Any:
    """Zero for rows without negatives, NaN for rows with a NaN, float16 saturation (for
    float16 inputs, or when ``float16_logits`` says the caller's logits were float16)."""
    row_loss = ops.where(candidates.num_negatives > 0, row_loss, ops.zeros_like(row_loss))
    row_loss = ops.where(candidates.nan_rows, ops.full_like(row_loss, float("nan")), row_loss)
    if float16_logits or candidates.input_dtype == "float16":
        row_loss = ops.minimum(row_loss, FLOAT16_SATURATION) + ops.log1p(
            ops.relu(row_loss - FLOAT16_SATURATION)
        )
    return row_loss


class SampledRankLossSpec(abc.ABC):
    """What every loss of the family shares, independent of Keras: argument checks,
    config, input preparation. A leaf supplies :meth:`_row_loss`; a Keras class mixes
    this in beside its ``Loss`` base and provides ``_ops`` and ``name``."""

    _ops: Any
    name: str

    def _configure(self, num_items: int, alpha: float, margin: float, weighting: str) -> None:
        if isinstance(num_items, bool) or not isinstance(num_items, int) or num_items < 1:
            raise ValueError(f"num_items must be a positive integer (the catalog size), got {num_items!r}")
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not alpha >= 0:
            raise ValueError(f"alpha must be a number >= 0, got {alpha!r}")
        if not isinstance(margin, int | float) or isinstance(margin, bool):
            raise ValueError(f"margin must be a number, got {margin!r}")
        self.num_items = num_items
        self.alpha = float(alpha)
        self.margin = float(margin)
        self.weighting = weighting
        self._weighting = weightings.get(weighting)(self.alpha, num_items, ops=self._ops)

    def _kernel(self, identifier: Any, argument: str, *, differentiable: bool) -> kernels.Kernel:
        kernel = kernels.get(identifier, margin=self.margin, ops=self._ops)
        if differentiable and not kernel.differentiable:
            hint = (
                "use it as LambdaCROLoss's weight_kernel"
                if argument == "kernel"
                else "it can only be the weight_kernel"
            )
            raise ValueError(f"{argument} {kernel.name!r} has no gradient; {hint}")
        return kernel

    def call(self, y_true: Any, y_pred: Any, candidate_sampling_probability: Any = None) -> Any:
        """Per-example losses ``[batch]`` (float32 for half-precision inputs).

        Keras calls this with ``(y_true, y_pred)``. A model whose negatives are not
        uniform draws calls it with ``candidate_sampling_probability`` (``q_j`` per
        draw, ``[candidates]`` or ``[batch, candidates]``) and reduces the result
        itself, e.g. ``tf.nn.compute_average_loss(loss.call(y, s, q), sample_weight)``.
        """
        candidates = prepare(
            self._ops, y_true, y_pred, self.num_items, candidate_sampling_probability, self.name
        )
        return finish(self._ops, candidates, self._row_loss(candidates), self._float16_logits())

    def _float16_logits(self) -> bool:
        """True while a Keras that cast float16 logits up before ``call`` runs this call."""
        return False

    @abc.abstractmethod
    def _row_loss(self, candidates: Candidates) -> Any:
        """``[batch]`` losses from prepared candidates (before masking NaN / empty rows)."""

    # The constructor arguments that name a kernel (a name, or a callable saved by Keras).
    _KERNEL_ARGUMENTS: tuple[str, ...] = ()

    @staticmethod
    def _serialize_kernel(kernel: Any) -> Any:
        """A kernel as ``get_config`` stores it; the framework classes serialize callables."""
        return kernel

    @staticmethod
    def _deserialize_kernel(config: Any) -> Any:
        return config

    def _config(self) -> dict[str, Any]:
        kernels_config = {name: self._serialize_kernel(getattr(self, name)) for name in self._KERNEL_ARGUMENTS}
        return {
            "num_items": self.num_items,
            "alpha": self.alpha,
            "margin": self.margin,
            "weighting": self.weighting,
            **kernels_config,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Any:
        kernels_config = {name: cls._deserialize_kernel(config[name]) for name in cls._KERNEL_ARGUMENTS}
        return cls(**{**config, **kernels_config})


class CROLossSpec(SampledRankLossSpec):
    """Eq. 16: ``log(N + 1) * W_alpha(R)`` with R from the rank estimator."""

    _KERNEL_ARGUMENTS = ("kernel",)

    def _configure_kernel(self, kernel: Any) -> None:
        self._kernel_fn = self._kernel(kernel, "kernel", differentiable=True)
        self.kernel = kernel

    def _row_loss(self, candidates: Candidates) -> Any:
        log_rank = sampled_log_rank(
            candidates.gaps, candidates.negative_mask, self._kernel_fn, self.num_items,
            candidates.num_negatives, candidates.log_weights, ops=self._ops,
        )
        return self._weighting.value(log_rank)


class LambdaCROLossSpec(SampledRankLossSpec):
    """Eq. 21-23: ``stop_gradient(lambda(R_phi1)) * R_phi2``."""

    _KERNEL_ARGUMENTS = ("weight_kernel", "grad_kernel")

    def _configure_kernels(self, weight_kernel: Any, grad_kernel: Any) -> None:
        self._weight_kernel_fn = self._kernel(weight_kernel, "weight_kernel", differentiable=False)
        self._grad_kernel_fn = self._kernel(grad_kernel, "grad_kernel", differentiable=True)
        self.weight_kernel = weight_kernel
        self.grad_kernel = grad_kernel

    def _row_loss(self, candidates: Candidates) -> Any:
        ops = self._ops
        mask, count, log_weights = (
            candidates.negative_mask, candidates.num_negatives, candidates.log_weights
        )
        weight_log_rank = sampled_log_rank(
            ops.stop_gradient(candidates.gaps), mask, self._weight_kernel_fn, self.num_items,
            count, log_weights, ops=ops,
        )
        lambda_weight = ops.stop_gradient(self._weighting.derivative(weight_log_rank))
        grad_log_rank = sampled_log_rank(
            candidates.gaps, mask, self._grad_kernel_fn, self.num_items, count, log_weights, ops=ops
        )
        return lambda_weight * weightings.capped_exp(grad_log_rank, ops)


class _CROFunction(CROLossSpec):
    def __init__(self, ops: Any, name: str, num_items: int, alpha: float, kernel: Any,
                 margin: float, weighting: str):
        self._ops, self.name = ops, name
        self._configure(num_items, alpha, margin, weighting)
        self._configure_kernel(kernel)


class _LambdaCROFunction(LambdaCROLossSpec):
    def __init__(self, ops: Any, name: str, num_items: int, alpha: float, weight_kernel: Any,
                 grad_kernel: Any, margin: float, weighting: str):
        self._ops, self.name = ops, name
        self._configure(num_items, alpha, margin, weighting)
        self._configure_kernels(weight_kernel, grad_kernel)


def cro_loss(
    labels: Any,
    logits: Any,
    *,
    num_items: int,
    alpha: float = 1.0,
    kernel: Any = "softplus",
    margin: float = 5.0,
    weighting: str = "power",
    candidate_sampling_probability: Any = None,
    ops: Any = None,
) -> Any:
    """CROLoss per row, ``[batch]``: ``log(N + 1) * W_alpha(R)`` (see ``tfcroloss.CROLoss``).

    Args:
      labels: ``[batch, candidates]``, one 1 per row at the positive.
      logits: ``[batch, candidates]`` scores; masked candidates at or below ``MASKED_LOGIT``.
      num_items, alpha, kernel, margin, weighting: as in ``CROLoss``.
      candidate_sampling_probability: ``q_j``, each candidate's probability per
        draw, ``[candidates]`` or ``[batch, candidates]``; None for uniform negatives.
      ops: the array namespace; TensorFlow when None (``tfcroloss.keras3`` passes ``keras.ops``).
    """
    ops = ops or backends.tensorflow_ops()
    loss = _CROFunction(ops, "cro_loss", num_items, alpha, kernel, margin, weighting)
    return loss.call(labels, logits, candidate_sampling_probability)


def lambda_cro_loss(
    labels: Any,
    logits: Any,
    *,
    num_items: int,
    alpha: float = 1.0,
    weight_kernel: Any = "sigmoid",
    grad_kernel: Any = "softplus",
    margin: float = 5.0,
    weighting: str = "power",
    candidate_sampling_probability: Any = None,
    ops: Any = None,
) -> Any:
    """LambdaCROLoss per row, ``[batch]`` (see ``tfcroloss.LambdaCROLoss``); arguments as in
    :func:`cro_loss`, with the weight kernel phi1 and the gradient kernel phi2."""
    ops = ops or backends.tensorflow_ops()
    loss = _LambdaCROFunction(
        ops, "lambda_cro_loss", num_items, alpha, weight_kernel, grad_kernel, margin, weighting
    )
    return loss.call(labels, logits, candidate_sampling_probability)
