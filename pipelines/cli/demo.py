"""`tfcroloss demo`: the whole product on an embedded synthetic data set, in a few minutes.

Generates a synthetic interaction log, prepares it under the paper's protocol,
trains the two-tower model with softmax cross-entropy and with CROLoss, evaluates
both with a ScaNN index (checked against exact top-N), prints the comparison,
then exports the CROLoss model, indexes it with ScaNN and answers one lookup
from the export, as the serving stack would.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from tfcroloss.pipelines.data.dataset import PreparedDataset
from tfcroloss.pipelines.data.prepare import prepare_file
from tfcroloss.pipelines.data.synthetic import write_synthetic
from tfcroloss.pipelines.training import config as config_lib

LOSSES = {
    "softmax cross-entropy": {"name": "softmax"},
    "CROLoss (softplus, alpha=1)": {"name": "croloss", "kernel": "softplus", "alpha": 1.0},
    "LambdaCROLoss (sigmoid/softplus, alpha=1)": {
        "name": "lambda_croloss", "weight_kernel": "sigmoid", "grad_kernel": "softplus", "alpha": 1.0,
    },
}
NS = [10, 20, 50, 100, 200]


def demo_config(data_path: Path, loss: dict, steps: int) -> config_lib.RunConfig:
    return config_lib.from_dict(
        {
            "data": {"path": str(data_path), "maxlen": 20},
            "loss": loss,
            "negatives": {"mode": "sampled", "per_positive": 10},
            "training": {"batch_size": 256, "learning_rate": 0.01, "max_steps": steps,
                         "eval_every": max(1, steps // 4), "patience": 4, "seed": 1},
            "evaluation": {"ns": NS, "select_on": "recall@50", "index": "scann"},
        },
        source="demo",
    )


def run_demo(workdir: Path, steps: int) -> dict:
    from tfcroloss.pipelines.training.train import train

    started = time.perf_counter()
    log, prepared = workdir / "synthetic.txt", workdir / "prepared"
    if not prepared.exists():
        count = write_synthetic(log, "demo", seed=0)
        print(f"[demo] wrote {count:,} synthetic interactions to {log}", flush=True)
        dataset = prepare_file("comirec", log, prepared)
        meta = dataset.metadata
        print(f"[demo] prepared {meta['num_users']:,} users, {dataset.num_items:,} items -> {prepared}", flush=True)
    results = {}
    for label, loss in LOSSES.items():
        print(f"[demo] training with {label} ({steps} steps)", flush=True)
        run_dir = workdir / "runs" / loss["name"]
        results[label] = train(demo_config(prepared, loss, steps), run_dir, verbose=0)["test"]
    results["most popular items (no model)"] = popularity_baseline(prepared)
    header = f"{'loss':<44}" + "".join(f"{'R@' + str(n):>8}" for n in NS) + f"{'ScaNN agr.':>12}"
    print("\n[demo] test split, ScaNN retrieval over the whole catalog")
    print(header)
    for label, test in results.items():
        agreement = next((f"{v:.3f}" for k, v in test.items() if k.startswith("agreement@")), "-")
        cells = "".join(f"{100 * test[f'recall@{n}']:>8.2f}" for n in NS)
        print(f"{label:<44}{cells}{agreement:>12}")
    serve_one_lookup(workdir, prepared)
    print(f"\n[demo] done in {time.perf_counter() - started:.0f} s; runs under {workdir / 'runs'}")
    return results


def popularity_baseline(prepared: Path) -> dict:
    """Test metrics of recommending the training set's most popular items to everyone."""
    from tfcroloss.pipelines.data.inputs import evaluation_samples
    from tfcroloss.pipelines.training import evaluate

    dataset = PreparedDataset.load(prepared)
    return evaluate.popularity_baseline(dataset.item_counts, evaluation_samples(dataset.test, maxlen=20), ns=NS)


def serve_one_lookup(workdir: Path, prepared: Path) -> None:
    """Exports the CROLoss run, builds its ScaNN index and answers one lookup from the export."""
    from tfcroloss.pipelines.data.inputs import evaluation_samples
    from tfcroloss.pipelines.publish import export_run
    from tfcroloss.pipelines.serving.index import build_version_index
    from tfcroloss.pipelines.serving.retriever import Retriever

    version = export_run(workdir / "runs" / "croloss", workdir / "saved_models" / "croloss")
    build = build_version_index(version, k=10)
    agreement = next((v for k, v in build.items() if k.startswith("agreement@")), float("nan"))
    print(f"\n[demo] exported {version} (TF Serving SavedModel) with a ScaNN index "
          f"(agreement with exact top-10: {agreement:.3f})")
    dataset = PreparedDataset.load(prepared)
    history_ids = evaluation_samples(dataset.test, maxlen=20).history[0]
    history = [str(token) for token in dataset.item_tokens[history_ids[history_ids > 0]]]
    result = Retriever.load(version.parent).recommend(history, k=10)
    print(f"[demo] lookup for a test user with {len(history)} items, last {history[-3:]}:")
    print("       top-10 " + ", ".join(f"{item} ({score:.2f})" for item, score in zip(result.item_ids, result.scores, strict=True)))


def _demo(args: argparse.Namespace) -> int:
    run_demo(args.workdir, args.steps)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser("demo", help="the main job end to end on a synthetic data set")
    demo.add_argument("--workdir", type=Path, default=Path("runs/demo"), help="where data and runs go")
    demo.add_argument("--steps", type=int, default=2000, help="training steps per loss")
    demo.set_defaults(func=_demo)
