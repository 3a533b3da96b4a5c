"""`tfcroloss train`, `tfcroloss evaluate`, `tfcroloss experiment` and `tfcroloss tune`.

Light at import (no TensorFlow, TFRS or ScaNN): choices come from light registries, and each
command imports its phase when it runs.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import yaml

from tfcroloss.pipelines.cli import positive_int
from tfcroloss.pipelines.data import SPLIT_NAMES
from tfcroloss.pipelines.retrieval import INDEX_KINDS
from tfcroloss.pipelines.training import config as config_lib
from tfcroloss.pipelines.training.tune import ALPHA_RANGE, KERNELS, RATE_SPREAD, SEEDS


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


def _range(flag: str, text: str) -> tuple[float, float]:
    """``LOW,HIGH``: two finite numbers, LOW < HIGH."""
    try:
        values = [float(value) for value in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 2 or not all(math.isfinite(v) for v in values) or not values[0] < values[1]:
        raise config_lib.ConfigError(f"{flag} {text!r}: expected LOW,HIGH, two numbers with LOW < HIGH")
    return values[0], values[1]


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


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
    alpha_range = _range("--alpha-range", args.alpha_range)
    rate_range = _range("--lr-range", args.lr_range) if args.lr_range else None
    output = args.output or Path("runs") / f"tune-{Path(args.config).stem}-n{args.target_n}"
    report = tune.tune(
        config, args.target_n, output,
        num_items=int(read_metadata(config.data.path)["num_items"]),
        kernels=[kernel.strip() for kernel in args.kernels.split(",") if kernel.strip()],
        alpha_range=alpha_range, rate_range=rate_range, budget=args.budget, budget_minutes=args.budget_minutes,
        seeds=args.seeds, max_steps=args.max_steps, reuse_other_code=args.reuse_other_code,
    )
    print(tune.tune_markdown(report))
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

    tune = subparsers.add_parser(
        "tune", help="search loss, kernel, alpha and learning rate for a target N (Optuna, resumable); "
        "report the gain over softmax CE with an interval")
    tune.add_argument("--config", required=True, help="YAML run config to start from")
    tune.add_argument("--target-n", type=positive_int, required=True, help="the N of Recall@N to tune for")
    tune.add_argument("--output", type=Path, help="folder for runs, tune.db and the report "
                      "(default runs/tune-<config name>-n<N>); reused to resume")
    tune.add_argument("--kernels", default=",".join(KERNELS), help="comma-separated kernels (default: %(default)s)")
    tune.add_argument("--alpha-range", default=",".join(f"{a:g}" for a in ALPHA_RANGE), metavar="LOW,HIGH",
                      help="alpha is searched in [LOW, HIGH] (default: %(default)s)")
    tune.add_argument("--lr-range", metavar="LOW,HIGH", help="learning rate searched on a log scale in [LOW, HIGH] "
                      f"(default: the config's rate / {RATE_SPREAD:g} to * {RATE_SPREAD:g})")
    tune.add_argument("--budget", type=positive_int, default=12,
                      help="CROLoss search runs (default: %(default)s); softmax CE gets a third of it, at least 2, "
                      "and the seeds phase's runs come on top")
    tune.add_argument("--budget-minutes", type=_positive_float,
                      help="bound on the whole tune's training time, across resumes (default: none)")
    tune.add_argument("--seeds", type=positive_int, default=SEEDS,
                      help="seeds of the recommendation and of softmax CE; close candidates get them too "
                      "(default: %(default)s)")
    tune.add_argument("--max-steps", type=positive_int, help="cap each run's training.max_steps (early stopping still applies)")
    tune.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config value")
    tune.add_argument("--reuse-other-code", action="store_true", help="reuse finished runs made by other training code")
    tune.set_defaults(func=_tune)
