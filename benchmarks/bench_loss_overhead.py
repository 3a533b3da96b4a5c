"""Train-step time of CROLoss and LambdaCROLoss against TFRS's softmax cross-entropy.

    python -m benchmarks.bench_loss_overhead [--quick] [--repeats N]

Amazon Books scale (313,966 items, d=32, batch 256, 2,560 shared negatives): one model per
loss and optimizer, all in this process, their compiled train steps timed in interleaved rounds.
The ratio is each loss's median step time over the "tfrs_softmax" model's under the same
optimizer (targets, with "adam": CROLoss at most 1.10, LambdaCROLoss at most 1.15). "adam"
(exact sparse Adam) and "lazy_adam" update only the rows a step reads, which leaves the loss its
share of the step; "dense_adam" (tf-keras Adam) rewrites the whole item table every step, which
hides the loss. The loss alone (forward and gradient on the step's [256, 2816] logits) is timed
too. Each measurement is repeated ``--repeats`` times (default 3) to show its spread.

Wall-clock ratios move with other jobs' load. Each step's process CPU time is recorded too:
with ``--threads 1`` (TensorFlow on one thread, no thread pool spinning) it is the step's work,
which other jobs hardly change. --quick: "adam" and "lazy_adam", fewer rounds. Prints one JSON
object per result and writes them all, with the code's and machine's provenance, to
benchmarks/results/ (``loss_overhead[-quick][-threads1].json``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
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
from tfcroloss.pipelines.provenance import provenance

LOSSES = ("tfrs_softmax", "croloss", "lambda_croloss")
BASELINE = "tfrs_softmax"
TARGET_RATIOS = {"croloss": 1.10, "lambda_croloss": 1.15}  # with "adam" (issue 21)
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


def cpu_timed(step: Callable[[], None], samples: list[float]) -> Callable[[], None]:
    """``step`` that appends each call's process CPU time to ``samples``."""

    def run() -> None:
        start = time.process_time()
        step()
        samples.append(time.process_time() - start)

    return run


def timed(steps: dict[str, Callable[[], None]], repeats: int, rounds: int, steps_per_round: int) -> list[dict]:
    """``repeats`` interleaved measurements of ``steps``: per function, the median wall time
    (``median_s``, quartiles) and the median process CPU time per call (``cpu_s``)."""
    measurements = []
    for _ in range(repeats):
        cpu = {name: [] for name in steps}
        timings = interleaved_medians({name: cpu_timed(step, cpu[name]) for name, step in steps.items()},
                                      rounds=rounds, steps_per_round=steps_per_round)
        measurements.append({name: {**timings[name], "cpu_s": statistics.median(cpu[name])} for name in steps})
    return measurements


def ratios(measurements: list[dict], name: str, key: str) -> list[float]:
    return [timings[name][key] / timings[BASELINE][key] for timings in measurements]


def summary(measurements: list[dict], name: str) -> dict:
    """Per repeat: wall ms (median, quartiles), CPU ms, and both ratios to the baseline."""
    return {
        "ms": [round(1e3 * timings[name]["median_s"], 2) for timings in measurements],
        "ms_iqr": [[round(1e3 * timings[name][q], 2) for q in ("q1_s", "q3_s")] for timings in measurements],
        "cpu_ms": [round(1e3 * timings[name]["cpu_s"], 2) for timings in measurements],
        "ratio_per_repeat": [round(r, 3) for r in ratios(measurements, name, "median_s")],
        "cpu_ratio_per_repeat": [round(r, 3) for r in ratios(measurements, name, "cpu_s")],
        "cpu_ratio_to_tfrs_softmax": round(statistics.median(ratios(measurements, name, "cpu_s")), 3),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help='"adam" and "lazy_adam" only, fewer rounds')
    parser.add_argument("--repeats", type=int, default=3, help="times each measurement is repeated (default 3)")
    parser.add_argument("--threads", type=int, default=0,
                        help="TensorFlow's intra- and inter-op threads (default 0: TensorFlow's choice)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.threads < 0:
        parser.error(f"--threads must be >= 0, got {args.threads}")
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    optimizers = ("adam", "lazy_adam") if args.quick else ("adam", "lazy_adam", "dense_adam")
    rounds = {"adam": 8, "lazy_adam": 8} if args.quick else {"adam": 20, "lazy_adam": 20, "dense_adam": 3}
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
            "repeats": args.repeats,
            "threads": args.threads or "tensorflow default",
            "target_ratios": {"optimizer": "adam", **TARGET_RATIOS},
            **machine(),
            "provenance": provenance(),
        }
    ]
    print(json.dumps(results[0]), flush=True)

    def emit(record: dict) -> None:
        print(json.dumps(record), flush=True)
        results.append(record)

    batches = synthetic_batches(scale)
    for optimizer in optimizers:
        steps = {name: train_step(build_model(scale, name, optimizer), batches) for name in LOSSES}
        measurements = timed(steps, args.repeats, rounds[optimizer], steps_per_round=5)
        for name in LOSSES:
            ratio = statistics.median(ratios(measurements, name, "median_s"))
            target = TARGET_RATIOS.get(name) if optimizer == "adam" else None
            emit(
                {
                    "measure": "train_step",
                    "optimizer": optimizer,
                    "loss": name,
                    **summary(measurements, name),
                    "ratio_to_tfrs_softmax": round(ratio, 3),
                    **({"target": target, "target_met": ratio <= target} if target else {}),
                    "load_average_1m": round(os.getloadavg()[0], 2),
                }
            )
    measurements = timed({name: loss_only_step(name) for name in LOSSES}, args.repeats,
                         rounds=10 if args.quick else 20, steps_per_round=10)
    for name in LOSSES:
        emit(
            {
                "measure": "loss_forward_and_gradient",
                "loss": name,
                **summary(measurements, name),
                "ratio_to_tfrs_softmax": round(statistics.median(ratios(measurements, name, "median_s")), 3),
                "load_average_1m": round(os.getloadavg()[0], 2),
            }
        )
    RESULTS.mkdir(exist_ok=True)
    name = "loss_overhead" + ("-quick" if args.quick else "") + (f"-threads{args.threads}" if args.threads else "")
    name += ".json"
    (RESULTS / name).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
