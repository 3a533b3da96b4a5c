"""Tune's pick against the full grid's best chosen without its winner's bonus (cross-fitting).

``compare.py`` takes the grid's best configuration on the same test users that then score it, so
its lead over tune's pick holds a bonus no search that chooses on validation can reach. Here the
grid's best is chosen on part of the test users and scored on the others: repeated K-fold over
test users (``--folds``, ``--repeats``), each fold's users scored by the configuration that won on
the other folds' users (mean over seeds). A user's cross-fitted value is the average over repeats
of what the winner chosen without them scored on them (per seed), so tune's pick and the
cross-fitted grid's best are compared user by user with the paired bootstrap of
``pipelines/training/intervals.py``. The interval holds the users' and seeds' noise, not that of
the choice (each fold's winner is fixed), and a winner chosen on (K-1)/K of the users is chosen
on fewer users than the full test set: both make it a slightly conservative estimate of the
grid's best.

The grid's configurations are those tune can pick (softmax CE; CROLoss with the sigmoid, softplus
or exponential kernel), each at the rate the grid chose for it, trained with ``--seeds`` seeds
under ``runs/tune/grid-best/`` (resumable, shared with compare.py); tune's pick and its tuned
softmax CE are found as compare.py finds them.

    .venv/bin/python docs/results/tune/crossfit.py --tunes docs/results/tune/two-kernel-start --data ml-100k --seeds 10 \
        --out docs/results/tune/crossfit/ten-seeds
"""

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from compare import GRIDS, NS, ROOT, grid_runs, grid_seeds_and_results, made_by, paired_bootstrap_text, per_user_of, tune_sides
from tfcroloss.pipelines.provenance import code_identity, provenance
from tfcroloss.pipelines.training import experiment_spec
from tfcroloss.pipelines.training.intervals import paired_bootstrap

HERE = Path(__file__).resolve().parent


def cross_fitted(values, folds, repeats, seed=0):
    """``values``: label -> ``[seeds, users]``. Returns the cross-fitted ``[seeds, users]`` and
    how often each label won a fold.

    >>> values = {"a": np.array([[1.0, 0.0, 1.0, 0.0]]), "b": np.array([[0.0, 1.0, 0.0, 1.0]])}
    >>> fitted, wins = cross_fitted(values, folds=2, repeats=1)
    >>> fitted.shape, sum(wins.values())
    ((1, 4), 2)
    """
    labels = list(values)
    stacked = np.stack([values[label] for label in labels])  # [configs, seeds, users]
    users = stacked.shape[2]
    rng = np.random.default_rng(seed)
    total, wins = np.zeros(stacked.shape[1:]), Counter()
    for _ in range(repeats):
        fold_of = rng.permutation(users) % folds
        for fold in range(folds):
            held = fold_of == fold
            winner = int(np.argmax(stacked[:, :, ~held].mean(axis=(1, 2))))
            wins[labels[winner]] += 1
            total[:, held] += stacked[winner][:, held]
    return total / repeats, wins


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tunes", type=Path, default=ROOT / "runs/tune", help="the tunes' folder")
    parser.add_argument("--out", type=Path, default=HERE / "crossfit", help="where results.json goes")
    parser.add_argument("--data", nargs="+", choices=list(GRIDS), default=["ml-100k"])
    parser.add_argument("--n", nargs="+", type=int, choices=NS, default=list(NS))
    parser.add_argument("--seeds", type=int, default=3, help="seeds per configuration (the grid's first)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    code = code_identity()
    rows = []
    for data in args.data:
        spec = experiment_spec.load(ROOT / GRIDS[data])
        seeds, _, space = grid_seeds_and_results(spec, args.seeds)
        grid = {label: grid_runs(spec, space, data, label, seeds, code) for label in space}
        for n in args.n:
            tune_dir = args.tunes / f"{data}-n{n}"
            report = json.loads((tune_dir / "tune.json").read_text())
            picked, softmax = tune_sides(tune_dir, report, data, seeds, code)
            metric = f"recall@{n}"
            values = {label: per_user_of(dirs, metric) for label, dirs in grid.items()}
            fitted, wins = cross_fitted(values, args.folds, args.repeats)
            on_test = max(values, key=lambda label: values[label].mean())
            ours, ce = per_user_of(picked, metric), per_user_of(softmax, metric)
            rows.append({
                "data": data, "n": n, "seeds": len(seeds), "users": int(ours.shape[1]),
                "tune_pick": report["recommended"]["label"], "tune_test": float(ours.mean()),
                "grid_best_on_test": on_test, "grid_best_on_test_test": float(values[on_test].mean()),
                "grid_cross_fitted_test": float(fitted.mean()),
                "fold_winners": dict(wins.most_common()),
                "tune_vs_grid_best_on_test": paired_bootstrap(ours, values[on_test]).to_dict(),
                "tune_vs_grid_cross_fitted": paired_bootstrap(ours, fitted).to_dict(),
                "tuned_ce_test": float(ce.mean()),
                "tune_vs_tuned_ce": paired_bootstrap(ours, ce).to_dict(),
                "runs_made_by": made_by([*picked, *softmax, *(d for dirs in grid.values() for d in dirs)]),
            })
            print(f"{data} N={n}: done", file=sys.stderr, flush=True)
    made = {**provenance(), **code, "load_average_1_5_15_min": os.getloadavg(),
            "folds": args.folds, "repeats": args.repeats}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"provenance": made, "rows": rows}, indent=2) + "\n")
    print("| data | N | seeds | tune's pick | test R@N | grid's best on test | test R@N | pick vs it | "
          "grid's best cross-fitted (fold winners) | test R@N | pick vs it | tuned CE R@N | pick vs it |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        winners = ", ".join(f"{label} {count}" for label, count in r["fold_winners"].items())
        print(f"| {r['data']} | {r['n']} | {r['seeds']} | {r['tune_pick']} | {100 * r['tune_test']:.2f} | "
              f"{r['grid_best_on_test']} | {100 * r['grid_best_on_test_test']:.2f} | "
              f"{paired_bootstrap_text(r['tune_vs_grid_best_on_test'])} | {winners} | "
              f"{100 * r['grid_cross_fitted_test']:.2f} | {paired_bootstrap_text(r['tune_vs_grid_cross_fitted'])} | "
              f"{100 * r['tuned_ce_test']:.2f} | {paired_bootstrap_text(r['tune_vs_tuned_ce'])} |")


if __name__ == "__main__":
    main()
