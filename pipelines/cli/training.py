"""`tfcroloss train`, `tfcroloss evaluate` and `tfcroloss experiment`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from tfcroloss.pipelines.data.dataset import SPLIT_NAMES
from tfcroloss.pipelines.retrieval import INDEX_KINDS
from tfcroloss.pipelines.training import config as config_lib
from tfcroloss.pipelines.training.distribute import STRATEGIES


def _overrides(pairs: list[str]) -> dict:
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise config_lib.ConfigError(f"--set {pair!r}: expected section.key=value")
        try:
            overrides[key] = yaml.safe_load(value)
        except yaml.YAMLError as error:
            raise config_lib.ConfigError(
                f"--set {pair!r}: the value must be plain YAML (a number, string, list, ...): "
                f"{str(error).splitlines()[0]}"
            ) from None
    return overrides


def _train(args: argparse.Namespace) -> int:
    from tfcroloss.pipelines.training.train import train

    overrides = _overrides(args.set)
    if args.strategy:
        overrides["training.strategy"] = args.strategy
    config = config_lib.load(args.config, overrides)
    run_dir = args.run_dir or Path("runs") / Path(args.config).stem
    result = train(config, run_dir)
    print(json.dumps(result["test"], indent=2))
    print(f"run directory: {run_dir}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from tfcroloss.pipelines.data.inputs import evaluation_samples
    from tfcroloss.pipelines.training.evaluate import evaluate
    from tfcroloss.pipelines.training.run_directory import load_run

    run = load_run(args.run)
    evaluation = run.config.evaluation
    split = getattr(run.dataset, args.split)
    samples = evaluation_samples(split, maxlen=run.config.data.maxlen)
    result = evaluate(
        run.model,
        samples,
        ns=args.n or evaluation.ns,
        index=args.index or evaluation.index,
        exclude_history=args.exclude_history or evaluation.exclude_history,
    )
    print(json.dumps(result, indent=2))
    return 0


def _experiment(args: argparse.Namespace) -> int:
    from tfcroloss.pipelines.training import experiment

    spec = experiment.load(args.config)
    results = experiment.run(spec)
    header, rows = experiment.table_rows(results)
    print(experiment.markdown_table(header, rows))
    print(experiment.claims_markdown(results))
    print(f"tables and plots: {spec.output}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="train a two-tower model from a YAML config")
    train.add_argument("--config", required=True, help="YAML run config (see configs/)")
    train.add_argument("--run-dir", type=Path, help="run directory (default runs/<config name>); reused to resume")
    train.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                       help="override a config value, e.g. --set loss.alpha=1.4 (repeatable)")
    train.add_argument("--strategy", choices=STRATEGIES,
                       help="tf.distribute strategy (default: the config's training.strategy); "
                       "multi_worker and parameter_server read the cluster from TF_CONFIG")
    train.set_defaults(func=_train)

    evaluate = subparsers.add_parser("evaluate", help="evaluate a trained run (Recall/HitRate/NDCG@N)")
    evaluate.add_argument("--run", required=True, type=Path, help="run directory written by `tfcroloss train`")
    evaluate.add_argument("--index", choices=INDEX_KINDS, help="retrieval back-end (default: the run's)")
    evaluate.add_argument("--split", choices=SPLIT_NAMES[1:], default="test")
    evaluate.add_argument("--n", type=int, action="append", help="an N to report (repeatable)")
    evaluate.add_argument("--exclude-history", action="store_true", help="never count history items as retrieved")
    evaluate.set_defaults(func=_evaluate)

    experiment = subparsers.add_parser("experiment", help="train a grid of losses and seeds; write tables and plots")
    experiment.add_argument("--config", required=True, help="experiment YAML (see configs/experiment-*.yaml)")
    experiment.set_defaults(func=_experiment)
