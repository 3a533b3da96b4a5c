"""Training steps fed from Parquet shards against steps fed from the in-memory split (issue 23:
at most 1.10x per step).

    python -m benchmarks.bench_training_input [--quick]

Prepares a synthetic Amazon-Books-shaped log (the ``amazon`` preset with a quarter of its users,
``--quick``: a twentieth; the protocol's filter keeps some 65K items) with the default shards
(65,536 users each), then times, in
interleaved rounds in this process, one Keras train step of the same model (Amazon Books scale:
batch 256, history 20, the default config, ``--optimizer``) fed by ``training_dataset`` from the shards and from
the in-memory split (the same split with its shards forgotten), and the input alone (the next
batch). Prints one JSON object per result and writes them, with the code's and machine's
provenance, to benchmarks/results/training_input[-quick].json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

from benchmarks.train_steps import (
    AMAZON_BOOKS,
    build_model,
    interleaved_medians,
    machine,
    train_step,
)
from tfcroloss.pipelines.data.dataset import PreparedDataset
from tfcroloss.pipelines.data.inputs import training_dataset
from tfcroloss.pipelines.data.prepare import prepare_file
from tfcroloss.pipelines.data.synthetic import write_synthetic
from tfcroloss.pipelines.data.synthetic_presets import PRESETS
from tfcroloss.pipelines.provenance import provenance

RESULTS = Path(__file__).parent / "results"
MAX_SHARDS_OVER_MEMORY = 1.10


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps-per-round", type=int, default=20)
    parser.add_argument("--optimizer", default="lazy_adam", help="the model's optimizer (models.optimizers)")
    args = parser.parse_args(argv)
    preset = PRESETS["amazon"]
    preset = dataclasses.replace(preset, num_users=preset.num_users // (20 if args.quick else 4))
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        log, prepared = Path(workdir) / "log.txt", Path(workdir) / "prepared"
        write_synthetic(log, preset, seed=0)
        prepare_file("comirec", log, prepared)
        dataset = PreparedDataset.load(prepared)
        scale = dataclasses.replace(AMAZON_BOOKS, num_items=dataset.num_items)
        splits = {"shards": dataset.train, "memory": dataclasses.replace(dataset.train, shards=())}
        feeds = {name: training_dataset(split, batch_size=scale.batch_size, maxlen=scale.maxlen, seed=0)
                 for name, split in splits.items()}
        model = build_model(scale, "croloss", args.optimizer)
        steps = {f"step_{name}": train_step(model, feed) for name, feed in feeds.items()}
        iterators = {name: iter(feed) for name, feed in feeds.items()}
        steps.update({f"input_{name}": (lambda it=it: float(next(it)["item_id"][0])) for name, it in iterators.items()})
        timed = interleaved_medians(steps, args.rounds, args.steps_per_round)
        data = {"users": dataset.num_users, "items": dataset.num_items,
                "train_interactions": dataset.train.num_interactions, "train_shards": len(dataset.train.shards)}
    for name, summary in timed.items():
        results.append({"benchmark": name, **summary})
        print(json.dumps(results[-1]), flush=True)
    ratio = timed["step_shards"]["median_s"] / timed["step_memory"]["median_s"]
    results.append({"benchmark": "shards_over_memory_per_step", "ratio": round(ratio, 3),
                    "target": MAX_SHARDS_OVER_MEMORY, "met": ratio <= MAX_SHARDS_OVER_MEMORY})
    print(json.dumps(results[-1]), flush=True)
    name = "training_input-quick.json" if args.quick else "training_input.json"
    output = {"provenance": provenance(), "machine": machine(), "data": data, "scale": dataclasses.asdict(scale),
              "optimizer": args.optimizer, "rounds": args.rounds, "steps_per_round": args.steps_per_round,
              "results": results}
    (RESULTS / name).write_text(json.dumps(output, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
