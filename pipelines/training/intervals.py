"""Paired bootstrap intervals: how sure is "configuration A beats configuration B"?

Two configurations evaluated on the same users are compared user by user: every bootstrap
replicate draws the users with replacement once and uses the same draw for both (paired), so
what the users have in common (easy and hard users) cancels. Each configuration may carry
several seeds (``[seeds, users]`` per-user metrics); a replicate also draws each side's seeds
with replacement, so seed-to-seed noise widens the interval too. With one seed per side the
interval holds the users' noise only, which understates the noise of training: say so where it
matters (``tune`` gives close candidates more seeds).

The statistic is the difference of the two means over users (and seeds), and the relative gain
``mean(A) / mean(B) - 1`` from the same replicates; the interval is the percentile interval (the
relative one is NaN or infinite where B's mean can be 0, e.g. a metric no user scores on; the
verdict rests on the difference). Deterministic for a given ``seed``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

RESAMPLES = 2000
CONFIDENCE = 0.95
_CHUNK = 250  # replicates drawn at a time: bounds memory at [chunk, users]


@dataclasses.dataclass(frozen=True)
class Interval:
    """A paired comparison of A against B: the observed difference of means (A - B) and its
    interval, the relative gain (A / B - 1) and its interval, and what they rest on."""

    difference: float
    low: float
    high: float
    relative: float
    relative_low: float
    relative_high: float
    users: int
    seeds: tuple[int, int]
    confidence: float = CONFIDENCE
    resamples: int = RESAMPLES

    @property
    def overlaps_zero(self) -> bool:
        """Whether the interval cannot tell A from B (a tie)."""
        return self.low <= 0.0 <= self.high

    def verdict(self) -> str:
        """``better``, ``worse`` or ``tie`` (the interval holds zero)."""
        return "tie" if self.overlaps_zero else ("better" if self.low > 0 else "worse")

    def describe(self) -> str:
        """E.g. ``+5.1% [+2.0%, +8.3%]`` (relative gain, percent, with its interval)."""
        return f"{100 * self.relative:+.1f}% [{100 * self.relative_low:+.1f}%, {100 * self.relative_high:+.1f}%]"

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "seeds": list(self.seeds)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Interval:
        return cls(**{**raw, "seeds": tuple(raw["seeds"])})


def _as_runs(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} must be per-user values, [users] or [seeds, users], non-empty; got {array.shape}")
    return array


def paired_bootstrap(a: Any, b: Any, *, resamples: int = RESAMPLES, confidence: float = CONFIDENCE,
                     seed: int = 0) -> Interval:
    """The paired bootstrap interval of ``mean(a) - mean(b)`` over users (and seeds).

    ``a`` and ``b`` are per-user metrics, ``[users]`` or ``[seeds, users]``, with the same users
    in the same order (the seed counts may differ).

    >>> interval = paired_bootstrap([0.3, 0.5, 0.4], [0.2, 0.4, 0.3])
    >>> round(interval.difference, 6), round(interval.low, 6), round(interval.high, 6)
    (0.1, 0.1, 0.1)
    """
    a, b = _as_runs(a, "a"), _as_runs(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b must hold the same users; got {a.shape[1]} and {b.shape[1]}")
    if resamples < 1 or not 0 < confidence < 1:
        raise ValueError(f"resamples must be >= 1 and confidence in (0, 1); got {resamples}, {confidence}")
    users = a.shape[1]
    rng = np.random.default_rng(seed)
    means_a, means_b = np.empty(resamples), np.empty(resamples)
    for start in range(0, resamples, _CHUNK):
        count = min(_CHUNK, resamples - start)
        drawn = rng.integers(0, users, size=(count, users))
        seeds_a = rng.integers(0, a.shape[0], size=(count, a.shape[0]))
        seeds_b = rng.integers(0, b.shape[0], size=(count, b.shape[0]))
        for means, runs, seeds in ((means_a, a, seeds_a), (means_b, b, seeds_b)):
            # a replicate's mean: its drawn seeds' rows, averaged, at its drawn users
            per_run = runs[:, drawn].mean(axis=2)  # [seeds, count]
            means[start : start + count] = np.take_along_axis(per_run.T, seeds, axis=1).mean(axis=1)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(means_a - means_b, [tail, 100 - tail])
    mean_a, mean_b = float(a.mean()), float(b.mean())
    with np.errstate(divide="ignore", invalid="ignore"):  # a replicate where B's mean is 0 has no ratio
        ratio = means_a / means_b - 1
        relative = mean_a / mean_b - 1 if mean_b else float("nan")
        relative_low, relative_high = np.percentile(ratio, [tail, 100 - tail]) if mean_b else (np.nan, np.nan)
    return Interval(
        difference=mean_a - mean_b, low=float(low), high=float(high), relative=float(relative),
        relative_low=float(relative_low), relative_high=float(relative_high), users=users,
        seeds=(a.shape[0], b.shape[0]), confidence=confidence, resamples=resamples,
    )
