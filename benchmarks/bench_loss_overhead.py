"""Train-step time of CROLoss and LambdaCROLoss against TFRS's softmax cross-entropy.

    python -m benchmarks.bench_loss_overhead [--quick]

Amazon Books scale (313,966 items, d=32, batch 256, 2,560 shared negatives): one model per
loss, all in this process, their compiled train steps timed in interleaved rounds. The ratio is
each loss's median step time over the "tfrs_softmax" model's (target: at most 1.10). It is
measured under both optimizers: with "adam" the dense update of the item table dominates the
step and hides the loss; "lazy_adam" leaves the loss a larger share, so its ratio is the one that
tells. The loss alone (forward and gradient on the step's [256, 2816] logits) is timed too.
--quick: lazy_adam only, fewer rounds. Prints one JSON object per result and writes them all
to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf

from benchmarks.train_steps import (
    AMAZON_BOOKS,
    build_model,
    interleaved_medians,
    machine,
    synthetic_batches,
    train_step,
)
from tfcroloss.models import build_loss

LOSSES = ("tfrs_softmax", "croloss", "lambda_croloss")
BASELINE = "tfrs_softmax"
TARGET_RATIO = 1.10
RESULTS = Path(__file__).parent / "results"


def loss_only_step(name: str, seed: int = 0) -> Callable[[], None]:
    """Forward and gradient of loss ``name`` on logits shaped like one step's, as TFRS hands them."""
    scale = AMAZON_BOOKS
    batch, candidates = scale.batch_size, scale.batch_size + scale.shared_negatives
    rng = np.random.default_rng(seed)
    logits = rng.uniform(-10.0, 10.0, (batch, candidates)).astype(np.float32)
    logits[:, :batch][~np.eye(batch, dtype=bool)] = np.finfo(np.float32).min / 100  # score_mask
    labels = np.eye(batch, candidates, dtype=np.float32)
    logits, labels = tf.constant(logits), tf.constant(labels)
    loss = build_loss(name, scale.num_items)

    @tf.function
    def step() -> tf.Tensor:
        with tf.GradientTape() as tape:
            tape.watch(logits)
            value = tf.reduce_mean(loss(labels, logits))
        return tape.gradient(value, logits)

    def run() -> None:
        step().numpy()

    return run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="lazy_adam only, fewer rounds")
    args = parser.parse_args(argv)
    optimizers = ("lazy_adam",) if args.quick else ("lazy_adam", "adam")
    rounds = {"lazy_adam": 8 if args.quick else 30, "adam": 12}
    scale = AMAZON_BOOKS
    results = [
        {
            "benchmark": "loss_overhead",
            "mode": "quick" if args.quick else "full",
            "scale": scale.name,
            "num_items": scale.num_items,
            "embedding_dim": scale.embedding_dim,
            "batch_size": scale.batch_size,
            "shared_negatives": scale.shared_negatives,
            "losses": list(LOSSES),
            **machine(),
        }
    ]
    print(json.dumps(results[0]), flush=True)

    def emit(record: dict) -> None:
        print(json.dumps(record), flush=True)
        results.append(record)

    batches = synthetic_batches(scale)
    for optimizer in optimizers:
        steps = {name: train_step(build_model(scale, name, optimizer), batches) for name in LOSSES}
        timings = interleaved_medians(steps, rounds=rounds[optimizer], steps_per_round=5)
        base = timings[BASELINE]["median_s"]
        for name in LOSSES:
            ratio = timings[name]["median_s"] / base
            emit(
                {
                    "measure": "train_step",
                    "optimizer": optimizer,
                    "loss": name,
                    "step_ms": round(1e3 * timings[name]["median_s"], 2),
                    "step_ms_iqr": [round(1e3 * timings[name][q], 2) for q in ("q1_s", "q3_s")],
                    "ratio_to_tfrs_softmax": round(ratio, 3),
                    "target_met": ratio <= TARGET_RATIO,
                }
            )
    loss_timings = interleaved_medians(
        {name: loss_only_step(name) for name in LOSSES}, rounds=10 if args.quick else 30,
        steps_per_round=10,
    )
    for name in LOSSES:
        emit(
            {
                "measure": "loss_forward_and_gradient",
                "loss": name,
                "ms": round(1e3 * loss_timings[name]["median_s"], 3),
                "ratio_to_tfrs_softmax": round(
                    loss_timings[name]["median_s"] / loss_timings[BASELINE]["median_s"], 3
                ),
            }
        )
    RESULTS.mkdir(exist_ok=True)
    name = "loss_overhead-quick.json" if args.quick else "loss_overhead.json"
    (RESULTS / name).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
