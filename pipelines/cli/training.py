"""`tfcroloss train`, `tfcroloss evaluate`, `tfcroloss experiment` and `tfcroloss tune`.

Light at import (no TensorFlow, TFRS or ScaNN): choices come from light registries, and each
command imports its phase when it runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from tfcroloss.pipelines.cli import positive_int
from tfcroloss.pipelines.data import SPLIT_NAMES
from tfcroloss.pipelines.retrieval import INDEX_KINDS
from tfcroloss.pipelines.training import config as config_lib
from tfcroloss.pipelines.training.tune import ALPHAS, KERNELS


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


def _floats(flag: str, text: str) -> list[float]:
    try:
        values = [float(value) for value in text.split(",") if value.strip()]
    except ValueError:
        raise config_lib.ConfigError(f"{flag} {text!r}: expected comma-separated numbers") from None
    if not values:
        raise config_lib.ConfigError(f"{flag} {text!r}: expected at least one number")
    return values


def _train(args: argparse.Namespace) -> int:
    overrides = _overrides(args.set)
    if args.strategy:
        overrides["training.strategy"] = args.strategy
    config = config_lib.load(args.config, overrides)
    from tfcroloss.pipelines.training.train import train

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
    from tfcroloss.pipelines.training import experiment_spec, report

    spec = experiment_spec.load(args.config)  # checked before training's heavy imports
    if args.report_only:
        results, _ = report.read_results(spec.output / "results.json")
        report.write_report(spec, results)
    else:
        from tfcroloss.pipelines.training import experiment

        results = experiment.run(spec, reuse_other_code=args.reuse_other_code)
    header, rows = report.table_rows(results)
    print(report.markdown_table(header, rows))
    print(report.claims_markdown(results))
    print(f"tables and plots: {spec.output}")
    return 0


def _tune(args: argparse.Namespace) -> int:
    from tfcroloss.pipelines.data.dataset import read_metadata
    from tfcroloss.pipelines.training import tune

    config = config_lib.load(args.config, _overrides(args.set))
    output = args.output or Path("runs") / f"tune-{Path(args.config).stem}-n{args.target_n}"
    report = tune.tune(
        config, args.target_n, output,
        num_items=int(read_metadata(config.data.path)["num_items"]),
        kernels=[kernel.strip() for kernel in args.kernels.split(",") if kernel.strip()],
        alphas=_floats("--alphas", args.alphas),
        learning_rates=_floats("--learning-rates", args.learning_rates) if args.learning_rates else None,
        budget=args.budget, max_steps=args.max_steps, reuse_other_code=args.reuse_other_code,
    )
    print(tune.tune_table(report))
    print(f"recommended run config: {Path(output) / 'recommended.yaml'}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="train a two-tower model from a YAML config")
    train.add_argument("--config", required=True, help="YAML run config (see configs/)")
    train.add_argument("--run-dir", type=Path, help="run directory (default runs/<config name>); reused to resume")
    train.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                       help="override a config value, e.g. --set loss.alpha=1.4 (repeatable)")
    train.add_argument("--strategy", choices=config_lib.STRATEGIES,
                       help="tf.distribute strategy (default: the config's training.strategy); "
                       "multi_worker and parameter_server read the cluster from TF_CONFIG")
    train.set_defaults(func=_train)

    evaluate = subparsers.add_parser("evaluate", help="evaluate a trained run (Recall/HitRate/NDCG@N)")
    evaluate.add_argument("--run", required=True, type=Path, help="run directory written by `tfcroloss train`")
    evaluate.add_argument("--index", choices=INDEX_KINDS, help="retrieval back-end (default: the run's)")
    evaluate.add_argument("--split", choices=SPLIT_NAMES[1:], default="test")
    evaluate.add_argument("--n", type=positive_int, action="append", help="an N to report (repeatable)")
    evaluate.add_argument("--exclude-history", action="store_true", help="never count history items as retrieved")
    evaluate.set_defaults(func=_evaluate)

    experiment = subparsers.add_parser("experiment", help="train a grid of losses and seeds; write tables and plots")
    experiment.add_argument("--config", required=True, help="experiment YAML (see configs/experiment-*.yaml)")
    experiment.add_argument("--reuse-other-code", action="store_true",
                            help="reuse finished runs made by other training code (the report names them)")
    experiment.add_argument("--report-only", action="store_true",
                            help="rewrite tables, plots and claims from results.json without training")
    experiment.set_defaults(func=_experiment)

    tune = subparsers.add_parser("tune", help="search kernel x alpha x learning rate for a target N on validation")
    tune.add_argument("--config", required=True, help="YAML run config to start from")
    tune.add_argument("--target-n", type=positive_int, required=True, help="the N of Recall@N to tune for")
    tune.add_argument("--output", type=Path, help="folder for runs and the recommendation "
                      "(default runs/tune-<config name>-n<N>); reused to resume")
    tune.add_argument("--kernels", default=",".join(KERNELS), help="comma-separated kernels (default: %(default)s)")
    tune.add_argument("--alphas", default=",".join(f"{a:g}" for a in ALPHAS), help="comma-separated (default: %(default)s)")
    tune.add_argument("--learning-rates", help="comma-separated (default: the config's)")
    tune.add_argument("--budget", type=positive_int, default=12, help="at most this many runs, nearest the rule of thumb first "
                      "(default: %(default)s)")
    tune.add_argument("--max-steps", type=positive_int, help="cap each run's training.max_steps (early stopping still applies)")
    tune.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config value")
    tune.add_argument("--reuse-other-code", action="store_true", help="reuse finished runs made by other training code")
    tune.set_defaults(func=_tune)
