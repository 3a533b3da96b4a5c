"""Shared by the training benchmarks: paper-scale two-tower models on synthetic batches, and
interleaved timing of their compiled train steps.

Models are built as ``pipelines.train`` builds them (``TwoTowerModel`` + ``build_loss`` +
``build_optimizer``, sampled shared negatives), without a prepared data set: histories and
targets are uniform random item ids, so a batch touches about as many distinct embedding rows
as it holds ids (real, popularity-skewed batches touch fewer).
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from tfcroloss.models import TwoTowerModel, build_loss
from tfcroloss.models.optimizers import build_optimizer

LEARNING_RATE = 0.02  # the training default
MEASUREMENT_NOTE = (
    "step times are medians of interleaved rounds in one process: ratios within a run are "
    "comparable; load_average_1m says how busy the machine was"
)


@dataclasses.dataclass(frozen=True)
class Scale:
    """A paper data set's training shape: catalog, batch, history length, negatives."""

    name: str
    num_items: int
    batch_size: int
    maxlen: int
    negatives_per_positive: int = 10
    embedding_dim: int = 32

    @property
    def shared_negatives(self) -> int:
        return self.batch_size * self.negatives_per_positive


AMAZON_BOOKS = Scale("amazon_books", num_items=313_966, batch_size=256, maxlen=20)
TAOBAO = Scale("taobao", num_items=1_708_530, batch_size=512, maxlen=50)


def synthetic_batches(scale: Scale, num_batches: int = 8, seed: int = 0) -> tf.data.Dataset:
    """``num_batches`` distinct random batches, repeated forever."""
    rng = np.random.default_rng(seed)
    size = num_batches * scale.batch_size
    features = {
        "history": rng.integers(1, scale.num_items + 1, (size, scale.maxlen), dtype=np.int32),
        "item_id": rng.integers(1, scale.num_items + 1, size, dtype=np.int32),
    }
    return tf.data.Dataset.from_tensor_slices(features).batch(scale.batch_size).repeat().prefetch(2)


def build_model(scale: Scale, loss: str, optimizer: str) -> TwoTowerModel:
    """The default two-tower model (mean tower, sampled negatives) for ``scale``, compiled."""
    model = TwoTowerModel(
        scale.num_items,
        loss=build_loss(loss, scale.num_items),
        embedding_dim=scale.embedding_dim,
        negatives_per_positive=scale.negatives_per_positive,
    )
    model.user_embeddings(tf.zeros([1, scale.maxlen], tf.int32))
    model.compile(optimizer=build_optimizer(optimizer, LEARNING_RATE))
    return model


def train_step(model: TwoTowerModel, batches: tf.data.Dataset) -> Callable[[], None]:
    """One compiled ``train_step`` per call (Keras' own train function), waited for."""
    function, iterator = model.make_train_function(), iter(batches)

    def step() -> None:
        float(function(iterator)["loss"])

    return step


def interleaved_medians(
    steps: dict[str, Callable[[], None]], rounds: int, steps_per_round: int, warmup: int = 3
) -> dict[str, dict[str, float]]:
    """Median and quartiles of seconds per call of each function, timed in interleaved rounds.

    Every function first runs ``warmup`` untimed calls (tracing, first allocations); then each
    round times ``steps_per_round`` calls of every function in turn, so load from other jobs
    falls on all of them alike.
    """
    for step in steps.values():
        for _ in range(warmup):
            step()
    samples: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(steps_per_round):
                step()
            samples[name].append((time.perf_counter() - start) / steps_per_round)
    return {name: _summary(values) for name, values in samples.items()}


def _summary(values: list[float]) -> dict[str, float]:
    q1, median, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else values * 3
    return {"median_s": median, "q1_s": q1, "q3_s": q3, "rounds": len(values)}


def machine() -> dict[str, object]:
    """What the numbers were measured on."""
    return {
        "cpu_cores": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "tensorflow": tf.__version__,
        "note": MEASUREMENT_NOTE,
    }
