"""CROLoss and LambdaCROLoss as functions: the one place where the loss is computed.

``cro_loss`` and ``lambda_cro_loss`` return one loss per row. The Keras classes of both
flavours (``tfcroloss.CROLoss`` for tf-keras, ``tfcroloss.keras3.CROLoss`` for Keras 3) are thin
wrappers that hold a function's arguments and call it. The maths is written over an array
namespace ``ops`` (``tfcroloss.backends``), so TensorFlow and Keras 3 (TensorFlow, JAX, PyTorch)
run the same code. This module imports no framework: with ``ops=None`` the functions compute
with TensorFlow, imported at the first call.

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
- **Input checks.** A row may hold any number of candidates, duplicates included (in-batch
  negatives are draws with replacement, and a batch may be larger than the catalog). Labels
  that are not one 1 among 0s, and a ``candidate_sampling_probability`` that is not > 0 on a
  negative, raise ``ValueError`` on concrete (eager) values; inside a traced step (``fit``)
  those rows' losses are NaN, as for a NaN logit (``docs/losses.md``).
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

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from tfcroloss import backends, kernels, weightings
from tfcroloss.rank import log_counts, log_ratio

# The family's defaults, written once: the functions' and both Keras flavours' signatures use them.
ALPHA = 1.0
KERNEL = "softplus"
WEIGHT_KERNEL = "sigmoid"
GRAD_KERNEL = "softplus"
MARGIN = 5.0
WEIGHTING = "power"

KernelSpec = str | Callable[[Any], Any]

# Logits at or below this are treated as masked out (TFRS uses float32.min / 100).
MASKED_LOGIT = -3.4028234663852886e38 / 1000.0  # float32.min / 1000

# float16 row losses above this continue logarithmically (float16 tops out at 65504).
FLOAT16_SATURATION = 4096.0

_FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


@dataclasses.dataclass(frozen=True)
class Candidates:
    """One batch, prepared for the rank estimator (``[batch, candidates]`` unless noted).

    Attributes:
      logits: the logits in the compute dtype.
      positions: ``[batch, 2]`` int32, (row, column) of each row's positive.
      weights: None where every negative counts once (uniform draws): the rank estimator then
        leaves out the positive (gap 0) and masked candidates (gaps far below 0, where the
        kernels vanish) itself (``rank.log_counts``). With sampling probabilities, how many times
        each candidate counts: ``1 / (N q_j)`` on negatives, 0 elsewhere.
      num_negatives: ``[batch]``, the number M of negatives per row (a NaN logit counts, so that
        its row's loss is NaN).
      bad_rows: ``[batch]`` bool, rows whose labels or sampling probabilities break the input
        contract (their losses are NaN). A NaN logit needs no flag: it reaches the row's sum.
      input_dtype: the logits' dtype name.
    """

    logits: Any
    positions: Any
    weights: Any
    num_negatives: Any
    bad_rows: Any
    input_dtype: str

    def gaps(self, ops: Any, logits: Any) -> Any:
        """``s_candidate - s_positive`` for ``logits`` (these candidates' logits, or a function of
        them): 0 at the positive, ``MASKED_LOGIT`` or below at masked candidates."""
        return logits - ops.take_along_axis(logits, self.positions[:, 1:], axis=1)

    def negatives(self, ops: Any) -> Any:
        """``[batch, candidates]`` bool, True on negatives (unmasked candidates but the positive)."""
        unmasked = ~(self.logits <= MASKED_LOGIT)  # a NaN logit is a negative: its row is NaN
        return ops.scatter_update(unmasked, self.positions, ops.zeros_like(self.positions[:, 0]) > 0)


def prepare(
    ops: Any,
    labels: Any,
    logits: Any,
    num_items: int,
    candidate_sampling_probability: Any = None,
    name: str = "cro_loss",
) -> Candidates:
    """Checks the inputs and works out positives, negatives and importance weights.

    A row may hold any number of candidates, the same item several times included (in-batch
    negatives are draws with replacement): eq. 24's ``N / M (1 + sum phi)`` is defined for any M.
    Each pass over the ``[batch, candidates]`` inputs counts (``docs/losses.md``, "The fused
    gradient"): the positive is the labels' argmax, and the labels are checked with two reductions.
    """
    logits = ops.convert_to_tensor(logits)
    input_dtype = ops.dtype_name(logits)
    if input_dtype not in _FLOAT_DTYPES:
        raise ValueError(f"{name}: y_pred must hold float logits, got dtype {input_dtype}")
    compute_dtype = "float64" if input_dtype == "float64" else "float32"
    logits = ops.cast(logits, compute_dtype)
    labels = ops.cast(ops.convert_to_tensor(labels), compute_dtype)
    _check_shapes(ops, labels, logits, name)

    positive = ops.cast(ops.argmax(labels, axis=1), "int32")
    positions = ops.stack([ops.arange(ops.shape(labels)[0], dtype="int32"), positive], axis=1)
    # Rows that break the input contract: a ValueError on concrete (eager) values, a NaN row loss
    # inside a traced step (``docs/losses.md``, "Input checks"). Labels >= 0 whose largest is 1 and
    # whose sum is 1 are exactly "one 1 among 0s". Any number of candidates is fine.
    largest = ops.take_along_axis(labels, positions[:, 1:], axis=1)[:, 0]
    bad_rows = ~(ops.equal(largest, 1.0) & ops.equal(ops.sum(labels, axis=1), 1.0) & (ops.min(labels, axis=1) >= 0.0))
    ops.check(bad_rows, f"{name}: every row of y_true must hold exactly one 1 (the positive), 0 elsewhere")
    masked = ops.cast(logits <= MASKED_LOGIT, compute_dtype)
    positive_masked = ops.take_along_axis(masked, positions[:, 1:], axis=1)[:, 0]
    num_negatives = ops.cast(ops.shape(logits)[1], compute_dtype) - ops.sum(masked, axis=1) - (1.0 - positive_masked)
    candidates = Candidates(logits, positions, None, num_negatives, bad_rows, input_dtype)
    if candidate_sampling_probability is None:
        return candidates
    weights, bad_probability = _importance_weights(
        ops, candidate_sampling_probability, candidates.negatives(ops), num_items, compute_dtype, name
    )
    return dataclasses.replace(candidates, weights=weights, bad_rows=bad_rows | bad_probability)


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


def _importance_weights(
    ops: Any, probability: Any, negative_mask: Any, num_items: int, dtype: str, name: str
) -> tuple[Any, Any]:
    """``1 / (N q_j)`` on negatives, 0 elsewhere; and ``[batch]`` True where a negative has no
    q_j > 0 (such rows' losses are NaN)."""
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
    # `not >` rather than `<=`: a NaN probability is refused too.
    bad_probability = ~(probability > 0.0)
    bad_rows = ops.any(bad_probability, axis=1)
    ops.check(bad_rows, f"{name}: candidate_sampling_probability must be > 0 for every negative candidate")
    probability = ops.where(bad_probability, ops.ones_like(probability), probability)  # their rows are NaN
    # exp(-log N - log q) rather than 1 / (N q): N q may underflow where q is tiny.
    weights = ops.exp(-math.log(num_items) - ops.log(probability))
    return ops.where(negative_mask, weights, ops.zeros_like(weights)), bad_rows


def finish(ops: Any, candidates: Candidates, row_loss: Any) -> Any:
    """Zero for rows without negatives (NaN stays NaN), NaN for rows that break the input contract,
    float16 saturation for float16 logits."""
    row_loss = ops.where(candidates.num_negatives > 0, row_loss, row_loss * 0.0)
    row_loss = ops.where(candidates.bad_rows, ops.full_like(row_loss, float("nan")), row_loss)
    return saturate_float16(ops, row_loss) if candidates.input_dtype == "float16" else row_loss


# The arguments that name a kernel; a callable is stored by Keras's own serialization.
KERNEL_ARGUMENTS = ("kernel", "weight_kernel", "grad_kernel")


def check_arguments(
    *, num_items: int, alpha: float, margin: float, weighting: str, **kernel_arguments: Any
) -> dict[str, Any]:
    """Checks a loss's arguments without computing anything (no framework needed) and returns
    them normalised (alpha and margin as floats). ``kernel_arguments`` are those of
    ``KERNEL_ARGUMENTS`` the loss takes; every one but ``weight_kernel`` needs a gradient.

    >>> check_arguments(num_items=100, alpha=1, margin=5, weighting="power", kernel="exp")["alpha"]
    1.0
    >>> check_arguments(num_items=100, alpha=1, margin=5, weighting="power", kernel="unit_step")
    Traceback (most recent call last):
    ...
    ValueError: kernel 'unit_step' has no gradient; use it as LambdaCROLoss's weight_kernel
    """
    if isinstance(num_items, bool) or not isinstance(num_items, int) or num_items < 1:
        raise ValueError(f"num_items must be a positive integer (the catalog size), got {num_items!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not alpha >= 0:
        raise ValueError(f"alpha must be a number >= 0, got {alpha!r}")
    if isinstance(margin, bool) or not isinstance(margin, int | float):
        raise ValueError(f"margin must be a number, got {margin!r}")
    weightings.get(weighting)
    for argument, identifier in kernel_arguments.items():
        _check_kernel(argument, identifier)
    return {"num_items": num_items, "alpha": float(alpha), "margin": float(margin),
            "weighting": weighting, **kernel_arguments}


def map_kernel_callables(arguments: dict[str, Any], fn: Callable[[Any], Any]) -> dict[str, Any]:
    """``arguments`` with ``fn`` applied to each kernel that is not a name: how the Keras classes
    serialize (and deserialize) a callable kernel, with their Keras's own functions."""
    return {
        key: fn(value) if key in KERNEL_ARGUMENTS and not isinstance(value, str) else value
        for key, value in arguments.items()
    }


def _check_kernel(argument: str, identifier: Any) -> None:
    if argument not in KERNEL_ARGUMENTS:
        raise TypeError(f"unexpected argument {argument!r}")
    if isinstance(identifier, kernels.Kernel):
        differentiable = identifier.differentiable
    elif callable(identifier):
        differentiable = True
    elif isinstance(identifier, str):
        name = kernels.canonical_name(identifier)
        differentiable, identifier = name not in kernels.WEIGHT_ONLY, name
    else:
        raise ValueError(f"{argument} must be a kernel name or a callable, got {identifier!r}")
    if argument != "weight_kernel" and not differentiable:
        hint = (
            "use it as LambdaCROLoss's weight_kernel" if argument == "kernel" else "it can only be the weight_kernel"
        )
        raise ValueError(f"{argument} {getattr(identifier, 'name', identifier)!r} has no gradient; {hint}")


def cro_loss(
    labels: Any,
    logits: Any,
    *,
    num_items: int,
    alpha: float = ALPHA,
    kernel: KernelSpec = KERNEL,
    margin: float = MARGIN,
    weighting: str = WEIGHTING,
    candidate_sampling_probability: Any = None,
    ops: Any = None,
) -> Any:
    """CROLoss per row, ``[batch]``: ``log(N + 1) * W_alpha(R)`` (eq. 16, the rank R from eq. 24).

    Special cases (section 3.5): ``kernel="exponential", alpha=1`` is softmax cross-entropy (same
    gradient, value shifted by ``log(N / M)``); ``kernel="softplus", alpha=0`` is BPR and
    ``kernel="hinge", alpha=0`` the triplet loss, each up to a positive factor and an offset.

    Args:
      labels: ``[batch, candidates]``, one 1 per row at the positive.
      logits: ``[batch, candidates]`` scores; masked candidates at or below ``MASKED_LOGIT``.
      num_items: catalog size |I|; a row may hold more candidates than that (duplicates).
      alpha: weighting exponent >= 0; larger favours smaller retrieval sizes N.
      kernel: "sigmoid", "softplus", "exponential" ("exp"), "hinge", or a callable phi(x).
        The unit step has no gradient: use it in ``lambda_cro_loss``.
      margin: the hinge kernel's margin m.
      weighting: name of the rank weighting ("power", the paper's w_alpha).
      candidate_sampling_probability: ``q_j``, each candidate's probability per
        draw, ``[candidates]`` or ``[batch, candidates]``; None for uniform negatives.
      ops: the array namespace; TensorFlow when None (``tfcroloss.keras3`` passes ``keras.ops``).
    """
    arguments = check_arguments(num_items=num_items, alpha=alpha, margin=margin, weighting=weighting,
                                kernel=kernel)
    ops = ops or backends.tensorflow_ops()
    phi = kernels.get(kernel, margin=arguments["margin"], ops=ops)
    candidates = prepare(ops, labels, logits, num_items, candidate_sampling_probability, "cro_loss")
    (log_count,) = _log_counts(ops, candidates, [phi])
    log_rank = log_ratio(num_items, candidates.num_negatives, ops) + log_count
    return finish(ops, candidates, _weighting(ops, arguments).value(log_rank))


def lambda_cro_loss(
    labels: Any,
    logits: Any,
    *,
    num_items: int,
    alpha: float = ALPHA,
    weight_kernel: KernelSpec = WEIGHT_KERNEL,
    grad_kernel: KernelSpec = GRAD_KERNEL,
    margin: float = MARGIN,
    weighting: str = WEIGHTING,
    candidate_sampling_probability: Any = None,
    ops: Any = None,
) -> Any:
    """LambdaCROLoss per row, ``[batch]`` (eq. 21-23): ``stop_gradient(lambda) * R_phi2``.

    ``lambda`` is the derivative of ``log(N + 1) * W_alpha`` at ``R_phi1``, so the gradient for
    each gap is ``lambda * dR_phi2 / dgap``: the weight kernel phi1 estimates the rank (it may be
    the unit step), the gradient kernel phi2 sets how hard each negative is pushed. Both ranks
    use the same importance weights. Arguments as in :func:`cro_loss`, with:

    Args:
      weight_kernel: phi1, any kernel including "unit_step".
      grad_kernel: phi2, a differentiable kernel.
    """
    arguments = check_arguments(num_items=num_items, alpha=alpha, margin=margin, weighting=weighting,
                                weight_kernel=weight_kernel, grad_kernel=grad_kernel)
    ops = ops or backends.tensorflow_ops()
    phi1 = kernels.get(weight_kernel, margin=arguments["margin"], ops=ops)
    phi2 = kernels.get(grad_kernel, margin=arguments["margin"], ops=ops)
    candidates = prepare(ops, labels, logits, num_items, candidate_sampling_probability, "lambda_cro_loss")
    grad_count, weight_count = _log_counts(ops, candidates, [phi2, phi1])
    ratio = log_ratio(num_items, candidates.num_negatives, ops)
    weight = ops.stop_gradient(_weighting(ops, arguments).derivative(ratio + ops.stop_gradient(weight_count)))
    row_loss = weight * weightings.capped_exp(ratio + grad_count, ops)
    return finish(ops, candidates, row_loss)


def _weighting(ops: Any, arguments: dict[str, Any]) -> Any:
    return weightings.get(arguments["weighting"])(arguments["alpha"], arguments["num_items"], ops=ops)


def _log_counts(ops: Any, candidates: Candidates, phis: list[kernels.Kernel]) -> list[Any]:
    """``log(1 + sum_j w_j phi(gap_j))`` per row for each kernel (``rank.log_counts``), differentiable
    in the logits through the first only: the callers hold the others under stop-gradient.

    Where the first kernel's derivative is known, the gradient is written by hand
    (``ops.custom_gradient``: TensorFlow's ``tf.custom_gradient``; autodiff on Keras 3): one pass
    over the logits for the values, one for the gradient, with the positive's entry minus the row's
    sum (``gap = s_j - s_positive``). ``docs/losses.md``, "The fused gradient". A kernel that may
    not vanish far below (a callable) gets explicit 0/1 weights.
    """
    weights = candidates.weights
    if weights is None and not all(phi.vanishes_far_below for phi in phis):
        weights = ops.cast(candidates.negatives(ops), ops.dtype_name(candidates.logits))

    def forward(logits: Any) -> tuple[list[Any], Callable[..., Any]]:
        counts, gap_gradient = log_counts(candidates.gaps(ops, logits), weights, phis, ops)

        def gradient(upstream: Any, *stopped: Any) -> Any:
            # The positive's logit is in every gap: its entry is minus the negatives' sum.
            d_gaps = gap_gradient(upstream)
            d_positive = ops.take_along_axis(d_gaps, candidates.positions[:, 1:], axis=1)[:, 0]
            return ops.scatter_update(d_gaps, candidates.positions, d_positive - ops.sum(d_gaps, axis=1))

        return counts, gradient

    if phis[0].derivative is None:
        return forward(candidates.logits)[0]
    return ops.custom_gradient(forward)(candidates.logits)


def saturate_float16(ops: Any, row_loss: Any) -> Any:
    """Row losses above ``FLOAT16_SATURATION`` continue as ``log1p`` of the excess, so values and
    gradients stay inside float16's range (it tops out at 65504)."""
    return ops.minimum(row_loss, FLOAT16_SATURATION) + ops.log1p(ops.relu(row_loss - FLOAT16_SATURATION))
