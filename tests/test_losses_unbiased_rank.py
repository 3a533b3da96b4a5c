"""The importance-weighted rank estimate is unbiased under non-uniform negatives (Monte Carlo).

A 200-item catalog with fixed scores; the positive is a mid-ranked item; negatives are drawn with
replacement. For each scheme, 20,000 draws of M = 20 negatives give 20,000 estimates through the
loss's own code path (``functional.prepare`` + ``rank.sampled_log_rank``). The estimator
``R = N / M + sum_j phi_j / (M q_j)`` has the constant ``N / M`` (the paper's "1 +", scaled as in
eq. 24) plus a sum whose expectation is ``S = sum_{i != +} phi(s_i - s+)`` (for the unit step,
the exact rank minus 1). We compare the mean sum with S, and the uncorrected eq. 24 with it.
``docs/unbiased-rank.md`` quotes the numbers this prints (``pytest -s``).
"""

import numpy as np
import pytest
import tensorflow as tf

from tests.loss_cases import np_croloss
from tfcroloss import backends, functional, kernels
from tfcroloss.rank import sampled_log_rank

N, M, DRAWS = 200, 20, 20_000
RNG = np.random.default_rng(0)
POPULARITY = 1.0 / np.arange(1, N + 1)  # Zipf: item 0 is the most popular
SCORES = np.log(POPULARITY) / np.log(N) + RNG.normal(scale=0.5, size=N)  # popular items score higher
POSITIVE = int(np.argsort(-SCORES)[30])  # the 31st best item: exact rank 31


def estimate_sums(items, probability, kernel, masked=None):
    """Per draw row: the sum part of R (R - N / M') with and without importance weights."""
    ops = backends.tensorflow_ops()
    logits = np.concatenate([np.full((len(items), 1), SCORES[POSITIVE]), SCORES[items]], axis=1)
    if masked is not None:
        logits[:, 1:][masked] = functional.MASKED_LOGIT
    labels = np.zeros_like(logits)
    labels[:, 0] = 1.0
    q = np.concatenate([np.ones((len(items), 1)), probability], axis=1)
    phi = kernels.get(kernel)
    sums = {}
    for name, sampling in [("corrected", q), ("uncorrected", None)]:
        candidates = functional.prepare(ops, labels.astype(np.float32), logits.astype(np.float32), N, sampling)
        log_rank = sampled_log_rank(candidates.gaps(ops, candidates.logits), candidates.weights, phi, N,
                                    candidates.num_negatives)
        m = np.maximum(candidates.num_negatives.numpy().astype(np.float64), 1.0)
        sums[name] = np.exp(log_rank.numpy().astype(np.float64)) - N / m
    return sums


def exact_sum(kernel):
    others = np.delete(np.arange(N), POSITIVE)
    gaps = tf.constant(SCORES[others] - SCORES[POSITIVE], tf.float32)
    return float(tf.reduce_sum(kernels.get(kernel)(gaps)))


def draw(probability, size, seed):
    rng = np.random.default_rng(seed)
    return rng.choice(N, size=size, p=probability / probability.sum())


def without_positive(weights):
    weights = weights.copy()
    weights[POSITIVE] = 0.0
    return weights / weights.sum()


def report(scheme, kernel, sums, exact):
    result = {name: (values.mean() - exact) / exact for name, values in sums.items()}
    stderr = sums["corrected"].std() / np.sqrt(len(sums["corrected"])) / exact
    print(f"\n{scheme:>12} {kernel:>9}: exact sum {exact:8.2f}; relative bias corrected "
          f"{result['corrected']:+.4f} (s.e. {stderr:.4f}), uncorrected eq. 24 {result['uncorrected']:+.4f}")
    return result, stderr


@pytest.mark.parametrize("kernel", ["unit_step", "sigmoid", "softplus"])
def test_popularity_sampling(kernel):
    q = without_positive(POPULARITY)
    items = draw(q, (DRAWS, M), seed=1)
    sums = estimate_sums(items, q[items], kernel)
    bias, stderr = report("popularity", kernel, sums, exact_sum(kernel))
    assert abs(bias["corrected"]) < max(4 * stderr, 0.01)
    assert abs(bias["uncorrected"]) > 0.1  # eq. 24 is far off when negatives are popular ones


@pytest.mark.parametrize("kernel", ["unit_step", "softplus"])
def test_mixed_in_batch_and_uniform_sampling(kernel):
    """15 in-batch (popularity) and 5 uniform negatives per row; q_j is the mixture probability."""
    pop, uniform = without_positive(POPULARITY), without_positive(np.ones(N))
    items = np.concatenate([draw(pop, (DRAWS, 15), seed=2), draw(uniform, (DRAWS, 5), seed=3)], axis=1)
    mixture = 15 / M * pop + 5 / M * uniform
    sums = estimate_sums(items, mixture[items], kernel)
    bias, stderr = report("mixed", kernel, sums, exact_sum(kernel))
    assert abs(bias["corrected"]) < max(4 * stderr, 0.01)
    assert abs(bias["uncorrected"]) > 0.1


def test_accidental_hits_dropped_scale_the_sum_by_one_over_one_minus_q_positive():
    """Draws of the positive itself are masked and dropped from M and the sum: the estimate of S
    becomes S / (1 - q+) (eq. 24 has the same factor, N / (N - 1), for uniform draws)."""
    q = POPULARITY / POPULARITY.sum()
    items = draw(q, (DRAWS, M), seed=4)
    sums = estimate_sums(items, q[items], "unit_step", masked=items == POSITIVE)
    print(f"\nq+ = {q[POSITIVE]:.4f}: expected relative bias 1 / (1 - q+) - 1 = {q[POSITIVE] / (1 - q[POSITIVE]):+.4f}")
    exact = exact_sum("unit_step")
    bias, stderr = report("with hits", "unit_step", sums, exact)
    assert abs((1 + bias["corrected"]) * (1 - q[POSITIVE]) - 1) < max(4 * stderr, 0.01)


def test_uniform_probability_is_eq_24_exactly():
    """q_j = 1 / N gives eq. 24's rank: the same estimates as no probabilities at all."""
    items = draw(np.ones(N), (64, M), seed=5)
    sums = estimate_sums(items, np.full(items.shape, 1.0 / N), "softplus")
    np.testing.assert_allclose(sums["corrected"], sums["uncorrected"], rtol=1e-5)


def test_loss_gradient_with_popularity_matches_reference():
    """The loss with q (CROLoss and Lambda) against the NumPy reference, on draws from the catalog."""
    items = draw(without_positive(POPULARITY), (8, M), seed=6)
    logits = np.concatenate([np.full((8, 1), SCORES[POSITIVE]), SCORES[items]], axis=1).astype(np.float32)
    labels = np.zeros((8, M + 1), np.float32)
    labels[:, 0] = 1.0
    q = np.concatenate([np.ones((8, 1)), without_positive(POPULARITY)[items]], axis=1).astype(np.float32)
    for loss, want_kwargs in [
        (lambda z: functional.cro_loss(labels, z, num_items=N, alpha=1.4, kernel="softplus",
                                       candidate_sampling_probability=q), {}),
        (lambda z: functional.lambda_cro_loss(labels, z, num_items=N, alpha=1.4,
                                              candidate_sampling_probability=q),
         {"weight_kernel": "sigmoid"}),
    ]:
        z = tf.constant(logits)
        with tf.GradientTape() as tape:
            tape.watch(z)
            value = loss(z)
        want_value, want_grad = np_croloss(labels, logits.astype(np.float64), "softplus", 1.4, N,
                                           q=q.astype(np.float64), **want_kwargs)
        np.testing.assert_allclose(value.numpy(), want_value, rtol=5e-5)
        np.testing.assert_allclose(tape.gradient(value, z).numpy(), want_grad, rtol=5e-4, atol=1e-7)


@pytest.mark.parametrize("kernel", ["unit_step", "sigmoid", "softplus", "exponential", "hinge"])
def test_no_weights_is_the_positive_and_masked_left_out(kernel):
    """``weights=None`` (the losses' uniform path: every gap, the positive's 0 among them) gives
    the estimate of explicit weights, 0 at the positive and masked candidates and 1 elsewhere."""
    rng = np.random.default_rng(3)
    gaps = rng.normal(scale=3.0, size=(4, 9))
    positive = rng.integers(0, 9, 4)
    gaps[np.arange(4), positive] = 0.0
    weights = np.ones_like(gaps)
    weights[np.arange(4), positive] = 0.0
    gaps[1, [2, 5]] = functional.MASKED_LOGIT - 1.0
    weights[1, [2, 5]] = 0.0
    weights[1, positive[1]] = 0.0
    phi = kernels.get(kernel)
    num_negatives = tf.constant(weights.sum(axis=1))
    with_weights = sampled_log_rank(tf.constant(gaps), tf.constant(weights), phi, N)
    without = sampled_log_rank(tf.constant(gaps), None, phi, N, num_negatives)
    np.testing.assert_allclose(without.numpy(), with_weights.numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match="num_negatives"):
        sampled_log_rank(tf.constant(gaps), None, phi, N)
