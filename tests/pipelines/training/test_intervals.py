"""Paired bootstrap intervals: a NumPy reference, known answers, the normal approximation, determinism."""

import numpy as np
import pytest

from tfcroloss.pipelines.training import intervals
from tfcroloss.pipelines.training.intervals import Interval, paired_bootstrap


def reference(a, b, resamples, confidence, seed):
    """One replicate at a time: the same draws (users shared by both sides, then each side's
    seeds), the mean of the drawn seeds' rows at the drawn users, a minus b."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, a.shape[1], size=(resamples, a.shape[1]))
    seeds_a = rng.integers(0, a.shape[0], size=(resamples, a.shape[0]))
    seeds_b = rng.integers(0, b.shape[0], size=(resamples, b.shape[0]))
    differences = [a[seeds_a[r]][:, users[r]].mean() - b[seeds_b[r]][:, users[r]].mean() for r in range(resamples)]
    ratios = [a[seeds_a[r]][:, users[r]].mean() / b[seeds_b[r]][:, users[r]].mean() - 1 for r in range(resamples)]
    tail = 100 * (1 - confidence) / 2
    return np.percentile(differences, [tail, 100 - tail]), np.percentile(ratios, [tail, 100 - tail])


def test_matches_a_numpy_reference_with_seeds_on_both_sides():
    rng = np.random.default_rng(3)
    a = rng.uniform(0.2, 0.6, size=(3, 40))
    b = rng.uniform(0.1, 0.6, size=(2, 40))
    resamples = intervals._CHUNK  # one chunk: the implementation draws exactly as the reference
    got = paired_bootstrap(a, b, resamples=resamples, confidence=0.9, seed=7)
    (low, high), (rel_low, rel_high) = reference(a, b, resamples, 0.9, seed=7)
    assert (got.low, got.high) == pytest.approx((low, high), abs=1e-12)
    assert (got.relative_low, got.relative_high) == pytest.approx((rel_low, rel_high), abs=1e-12)
    assert got.difference == pytest.approx(a.mean() - b.mean())
    assert got.relative == pytest.approx(a.mean() / b.mean() - 1)
    assert got.users == 40 and got.seeds == (3, 2)


def test_known_answers():
    a = np.array([0.1, 0.4, 0.2, 0.9])
    same = paired_bootstrap(a, a)
    assert (same.low, same.high, same.relative) == (0.0, 0.0, 0.0) and same.verdict() == "tie"
    shifted = paired_bootstrap(a + 0.05, a)  # every user gains exactly 0.05: no doubt at all
    assert shifted.low == pytest.approx(0.05) and shifted.high == pytest.approx(0.05)
    assert shifted.verdict() == "better" and paired_bootstrap(a, a + 0.05).verdict() == "worse"
    doubled = paired_bootstrap(2 * a, a)  # the ratio is 2 in every replicate
    assert doubled.relative_low == pytest.approx(1.0) and doubled.relative_high == pytest.approx(1.0)


def test_one_seed_agrees_with_the_normal_approximation():
    rng = np.random.default_rng(0)
    b = rng.uniform(0, 1, 3000)
    a = b + rng.normal(0.01, 0.2, 3000)  # paired: the users' common part cancels
    got = paired_bootstrap(a, b, resamples=4000)
    d = a - b
    half_width = 1.959964 * d.std(ddof=1) / np.sqrt(len(d))
    assert got.low == pytest.approx(d.mean() - half_width, abs=0.1 * half_width)
    assert got.high == pytest.approx(d.mean() + half_width, abs=0.1 * half_width)


def test_seeds_widen_the_interval():
    rng = np.random.default_rng(1)
    users = rng.uniform(0, 1, 500)
    b = users[None, :] + rng.normal(0, 0.01, (3, 500))
    noisy = users[None, :] + rng.normal(0, 0.01, (3, 500)) + np.array([[-0.05], [0.0], [0.05]])  # seed effects
    one = paired_bootstrap(noisy[1:2], b[1:2])
    three = paired_bootstrap(noisy, b)
    assert three.high - three.low > 3 * (one.high - one.low)


def test_deterministic_serializable_and_checked():
    rng = np.random.default_rng(2)
    a, b = rng.uniform(size=(2, 600)), rng.uniform(size=600)  # more than one chunk of replicates
    first = paired_bootstrap(a, b, resamples=600, seed=5)
    assert paired_bootstrap(a, b, resamples=600, seed=5) == first
    assert paired_bootstrap(a, b, resamples=600, seed=6) != first
    assert Interval.from_dict(first.to_dict()) == first
    assert first.describe().startswith(f"{100 * first.relative:+.1f}% [")
    with pytest.raises(ValueError, match="same users"):
        paired_bootstrap(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="a must be per-user values"):
        paired_bootstrap(np.ones((2, 2, 2)), np.ones(2))
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap(np.ones(3), np.ones(3), confidence=1.5)
