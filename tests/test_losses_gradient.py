"""The hand-written gradient of CROLoss and LambdaCROLoss (``tf.custom_gradient`` in
``tfcroloss.functional``) against TensorFlow's autodiff of the same forward and the NumPy
reference of ``tests/loss_cases.py``.

In float64 the three agree to rounding: every kernel and alpha, both losses, uniform and
importance-weighted negatives, per-row upstream weights (sample weights), masked candidates
(TFRS's ``MIN_FLOAT`` and ``-inf``) and duplicates. In half precision the fused and autodiff
gradients agree to the dtype's resolution. ``docs/losses.md``, "The fused gradient".
"""

import numpy as np
import pytest
import tensorflow as tf

from tests.loss_cases import (
    HALF_DTYPES,
    KERNELS,
    LAMBDA_CASES,
    MASKED,
    NUM_ITEMS,
    np_croloss,
    popularity,
)
from tfcroloss import backends, cro_loss, kernels, lambda_cro_loss

AUTODIFF = backends.TensorFlowOps(tf)
AUTODIFF.custom_gradient = backends.autodiff_only

CRO_CASES = [("cro", kernel, alpha, None) for kernel in KERNELS for alpha in (0.0, 0.6, 1.0, 1.4, 2.0)]
# (weight kernel, gradient kernel): the defaults (sigmoid, softplus) share the sigmoid's values.
LAMBDA = [("lambda", grad, alpha, weight) for weight, grad, alpha in LAMBDA_CASES]
SAMPLE_WEIGHT = np.array([1.0, 0.0, 2.5, 0.5, 1.5])


def batch(seed=0):
    """5 rows of 12 candidates: masked ones (MIN_FLOAT, -inf), duplicated logits, a row with one
    negative left."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=2.5, size=(5, 12))
    labels = np.zeros_like(logits)
    positives = rng.integers(0, 12, 5)
    labels[np.arange(5), positives] = 1.0
    logits[:, 9:] = logits[:, :3]  # duplicates
    masked = np.zeros_like(logits, dtype=bool)
    masked[0, [2, 5]] = True
    masked[3] = True
    masked[3, (positives[3] + 1) % 12] = False  # one negative left
    masked[labels == 1] = False
    logits[masked] = MASKED
    masked[4, (positives[4] + 1) % 12] = True
    logits[4, (positives[4] + 1) % 12] = -np.inf
    return labels, logits, masked


def run(variant, kernel, alpha, weight_kernel, labels, logits, ops=None, q=None, dtype="float64"):
    """Per-row losses and d sum(SAMPLE_WEIGHT * loss) / d logits, as float64 NumPy."""
    x = tf.cast(tf.constant(logits), dtype)
    with tf.GradientTape() as tape:
        tape.watch(x)
        if variant == "cro":
            per_row = cro_loss(labels, x, num_items=NUM_ITEMS, alpha=alpha, kernel=kernel,
                               candidate_sampling_probability=q, ops=ops)
        else:
            per_row = lambda_cro_loss(labels, x, num_items=NUM_ITEMS, alpha=alpha, weight_kernel=weight_kernel,
                                      grad_kernel=kernel, candidate_sampling_probability=q, ops=ops)
        total = tf.reduce_sum(per_row * tf.constant(SAMPLE_WEIGHT, per_row.dtype))
    grad = tape.gradient(total, x)
    return tf.cast(per_row, tf.float64).numpy(), tf.cast(grad, tf.float64).numpy()


def reference(variant, kernel, alpha, weight_kernel, labels, logits, masked, q=None):
    """np_croloss row by row on the unmasked candidates; masked ones get no gradient."""
    values, grads = [], np.zeros_like(logits)
    for row in range(len(logits)):
        keep = ~masked[row]
        row_q = None if q is None else np.broadcast_to(q, logits.shape)[row, keep].astype(np.float64)
        value, grad = np_croloss(labels[row : row + 1, keep], logits[row : row + 1, keep], kernel, alpha,
                                 NUM_ITEMS, weight_kernel=weight_kernel if variant == "lambda" else None, q=row_q)
        values.append(value[0])
        grads[row, keep] = grad[0] * SAMPLE_WEIGHT[row]
    return np.array(values), grads


@pytest.mark.parametrize("sampling", ["uniform", "importance"])
@pytest.mark.parametrize("variant,kernel,alpha,weight_kernel", CRO_CASES + LAMBDA)
def test_fused_gradient_is_autodiffs_and_the_reference(variant, kernel, alpha, weight_kernel, sampling):
    labels, logits, masked = batch(seed=len(kernel) + int(10 * alpha))
    q = None if sampling == "uniform" else popularity(logits.shape[1])
    case = (variant, kernel, alpha, weight_kernel, labels, logits)
    value, grad = run(*case, q=q)
    auto_value, auto_grad = run(*case, ops=AUTODIFF, q=q)
    want_value, want_grad = reference(*case, masked, q=q)
    np.testing.assert_array_equal(value, auto_value)  # one forward
    np.testing.assert_allclose(grad, auto_grad, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(value, want_value, rtol=1e-9)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-8, atol=1e-13)
    assert not grad[masked].any()


@pytest.mark.parametrize("dtype", ["float32", *HALF_DTYPES])
@pytest.mark.parametrize("variant,kernel,alpha,weight_kernel", [
    ("cro", "softplus", 1.0, None), ("cro", "exponential", 0.0, None), ("cro", "hinge", 1.4, None),
    ("lambda", "softplus", 1.0, "sigmoid"), ("lambda", "exponential", 1.4, "unit_step"),
])
def test_fused_gradient_in_low_precision(variant, kernel, alpha, weight_kernel, dtype):
    labels, logits, _ = batch(seed=3)
    case = (variant, kernel, alpha, weight_kernel, labels, logits)
    value, grad = run(*case, dtype=dtype)
    auto_value, auto_grad = run(*case, ops=AUTODIFF, dtype=dtype)
    tolerance = {"float32": 1e-6, "float16": 2e-3, "bfloat16": 1.6e-2}[dtype]
    np.testing.assert_array_equal(value, auto_value)
    np.testing.assert_allclose(grad, auto_grad, rtol=tolerance, atol=tolerance * np.abs(auto_grad).max())
    assert np.abs(grad).max() > 0


def test_fused_gradient_inside_tf_function():
    labels, logits, _ = batch(seed=5)
    x = tf.constant(logits)

    @tf.function
    def gradient():
        with tf.GradientTape() as tape:
            tape.watch(x)
            total = tf.reduce_sum(lambda_cro_loss(labels, x, num_items=NUM_ITEMS))
        return tape.gradient(total, x)

    with tf.GradientTape() as tape:
        tape.watch(x)
        total = tf.reduce_sum(lambda_cro_loss(labels, x, num_items=NUM_ITEMS, ops=AUTODIFF))
    np.testing.assert_allclose(gradient().numpy(), tape.gradient(total, x).numpy(), rtol=1e-10, atol=1e-13)


def test_the_gradient_is_the_hand_written_one():
    """A kernel whose stated derivative is wrong gives that wrong gradient: the comparisons above
    test the hand-written code, not autodiff twice."""
    labels, logits, _ = batch(seed=6)
    wrong = kernels.Kernel("softplus", tf.math.softplus, derivative=lambda x, value: 2.0 * tf.math.sigmoid(x))
    x = tf.constant(logits)
    grads = []
    for kernel in (wrong, "softplus"):
        with tf.GradientTape() as tape:
            tape.watch(x)
            total = tf.reduce_sum(cro_loss(labels, x, num_items=NUM_ITEMS, kernel=kernel))
        grads.append(tape.gradient(total, x).numpy())
    np.testing.assert_allclose(grads[0], 2.0 * grads[1], rtol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_softplus_is_tensorflows_on_both_branches(dtype):
    """``ops.softplus`` is ``log1p(exp(x))`` while no x is above 80 and the stable form otherwise;
    both equal ``log(1 + e^x)`` to the dtype's rounding (``tf.math.softplus`` is within 5e-7 in float32
    too), and the gradient is the sigmoid, also at a tie (x = 0)."""
    ops = backends.tensorflow_ops()
    small = np.concatenate([np.linspace(-100.0, 80.0, 2001), [0.0]])
    for values in (small, np.concatenate([small, [80.5, 500.0, 1e30]])):
        x = tf.constant(values, dtype)
        with tf.GradientTape() as tape:
            tape.watch(x)
            got = ops.softplus(x)
        exact = np.logaddexp(0.0, x.numpy().astype(np.float64))
        # float32 flushes e^x below ~1e-38 (x < -87) to 0, as tf.math.softplus does
        np.testing.assert_allclose(got.numpy(), exact, rtol=5e-7 if dtype == "float32" else 1e-15, atol=1.2e-38)
        np.testing.assert_array_equal(tape.gradient(got, x).numpy(), tf.math.sigmoid(x).numpy())


@pytest.mark.parametrize("variant,kernel,alpha,weight_kernel", [
    ("cro", "softplus", 0.6, None), ("lambda", "softplus", 1.3, "sigmoid"), ("cro", "exponential", 1.0, None),
])
def test_gaps_above_80_match_the_reference(variant, kernel, alpha, weight_kernel):
    """Logits of scale ~100: gaps far above 80 take softplus's stable branch and the exponential
    kernel's shift; values and gradients are still the reference's."""
    labels, logits, masked = batch(seed=8)
    logits = np.where(masked, logits, 40.0 * logits)
    case = (variant, kernel, alpha, weight_kernel, labels, logits)
    assert (logits[~masked] - logits[labels == 1][:, None].repeat(12, 1)[~masked]).max() > 80
    value, grad = run(*case)
    want_value, want_grad = reference(*case, masked)
    np.testing.assert_allclose(value, want_value, rtol=1e-9)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-8, atol=1e-13)
