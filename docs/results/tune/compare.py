"""Checks `tfcroloss tune` against the full grid: for each data set and N, the test Recall@N of
tune's pick (``--seeds``, 3 by default) against the full grid's best configuration and against the softmax CE that
tune tuned, with paired bootstrap intervals over test users and seeds, and the compute of each.

The full grids are the committed experiments (``GRIDS``); their best configuration on test at each
N (among the configurations tune can pick: softmax CE and CROLoss with the sigmoid, softplus or
exponential kernel), and the one the grid would pick by its own validation (seed 1), are trained
again here with the same seeds and the current code, so that they are compared user by user with
tune's pick. Runs go under ``runs/tune/grid-best/`` (resumable; a
finished run is reused whatever code made it, and ``results.json`` names the code of every run
the comparison rests on).

    .venv/bin/python docs/results/tune/compare.py [--tunes runs/tune] [--out docs/results/tune] [--data ml-100k] [--n 10] [--seeds 3]

``--tunes``: the folder holding the tunes (``<data>-n<N>``, README.md says how they ran);
``--out``: where their reports and ``results.json`` go; ``--seeds``: test seeds per side (the
grid's seeds first, then the next integers). Seeds beyond the tune's own are trained for the
pick and tuned CE from their tune runs' configs, under ``runs/tune/more-seeds/`` (resumable).
"""

import argparse
import dataclasses
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import yaml

from tfcroloss.pipelines.provenance import code_identity, provenance
from tfcroloss.pipelines.training import config as config_lib
from tfcroloss.pipelines.training import experiment_spec
from tfcroloss.pipelines.training.evaluate import read_per_user
from tfcroloss.pipelines.training.experiment import run_directory, train_or_reuse
from tfcroloss.pipelines.training.intervals import Interval, paired_bootstrap
from tfcroloss.pipelines.training.report import read_results
from tfcroloss.pipelines.training.tune import KERNELS, Candidate

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
# data set -> the full grid's experiment file; tune's output for N is <--tunes>/<data>-n<N>
GRIDS = {
    "ml-100k": "configs/experiment-ml-100k.yaml",
    "nowplaying-m256": "configs/experiment-nowplaying-1m-m256.yaml",
}
NS = (10, 50, 200)


def in_tune_space(loss):
    return not loss.get("overrides") and (loss["name"] == "softmax" or (
        loss["name"] == "croloss" and loss.get("kernel") in KERNELS and set(loss) == {"name", "kernel", "alpha"}))


def grid_compute(results):
    """Runs the committed grid trained: each variant's rate search plus its other seeds."""
    return sum(len(r["tuning"]) + len(r["seeds"]) - 1 for r in results.values())


def made_by(run_dirs):
    """The (commit, code digest) pairs that made these runs (their code.json)."""
    codes = {(c.get("commit"), c.get("code_digest")) for c in (json.loads((d / "code.json").read_text()) for d in run_dirs)}
    return sorted(f"{commit} ({digest})" for commit, digest in codes)


def per_user_of(run_dirs, metric):
    return np.stack([read_per_user(d)[f"test/{metric}"] for d in run_dirs])


def tune_runs(output, candidate):
    """The run directories of a tune candidate, by seed (matched on their config.yaml)."""
    found = {}
    for path in (output / "runs").glob("*/*/config.yaml"):
        config = yaml.safe_load(path.read_text())
        loss, lr = config["loss"], config["training"]["learning_rate"]
        same = loss.get("kernel") == candidate["kernel"] and loss.get("alpha") == candidate["alpha"]
        if loss["name"] == candidate["loss"] and same and abs(lr - candidate["learning_rate"]) < 1e-12:
            if (path.parent / "per_user.npz").exists():
                found[config["training"]["seed"]] = path.parent
    return found


def grid_runs(spec, space, data, label, seeds, code):
    """The run directories of the grid's variant ``label`` at its rate, one per seed (trained if missing)."""
    dirs = []
    for seed in seeds:
        config = experiment_spec.variant_config(spec.base, spec.variants[label], spec.overrides, source=label)
        config.training.learning_rate, config.training.seed = space[label]["learning_rate"], seed
        dirs.append(run_directory(ROOT / "runs/tune/grid-best" / data, label, config))
        train_or_reuse(config, dirs[-1], code=code, reuse_other_code=True, what=f"{data} {label} seed {seed}")
    return dirs


def candidate_config(tune_dir, candidate):
    """A tune candidate's run configuration rebuilt from the tune's ``recommended.yaml`` (its base
    configuration with the pick's loss and rate), for when the tune's run folders are gone."""
    raw = config_lib.load(tune_dir / "recommended.yaml").to_dict()
    raw["loss"] = Candidate(**candidate).loss_section()
    raw["training"]["learning_rate"] = candidate["learning_rate"]
    return config_lib.from_dict(raw, source=f"{tune_dir}: {candidate}")


def grid_seeds_and_results(spec, count):
    """``count`` test seeds (the grid's own first, then new ones), the grid's committed results by
    label, and those of the variants in tune's space."""
    seeds = [*spec.seeds[:count], *range(max(spec.seeds) + 1, max(spec.seeds) + 1 + count - len(spec.seeds))]
    results, _ = read_results(ROOT / spec.output / "results.json")
    return seeds, results, {label: r for label, r in results.items() if in_tune_space(r["loss"])}


def tune_sides(tune_dir, report, data, seeds, code):
    """The run directories, one per seed, of tune's pick and of its tuned softmax CE: the tune's own
    runs, missing seeds trained under ``runs/tune/more-seeds/`` (from ``recommended.yaml`` when the
    tune's runs are gone)."""
    more = ROOT / "runs/tune/more-seeds" / data
    sides = []
    for role in ("recommended", "softmax"):
        candidate, label = report[role]["candidate"], report[role]["label"]
        found = tune_runs(tune_dir, candidate)
        template = None if found else candidate_config(tune_dir, candidate)
        sides.append(with_seeds(found, seeds, more, label, code, f"{data} {label}", template))
    return sides


def with_seeds(found, seeds, root, label, code, what, template=None):
    """``found`` (seed -> run directory of one configuration) for ``seeds``: a missing seed is
    trained from the configuration of a seed it has (or ``template``), under ``root`` (reused
    once finished)."""
    template = template or config_lib.load(next(iter(found.values())) / "config.yaml")
    dirs = []
    for seed in seeds:
        if seed not in found:
            config = dataclasses.replace(template, training=dataclasses.replace(template.training, seed=seed))
            found[seed] = run_directory(root, label, config)
            train_or_reuse(config, found[seed], code=code, reuse_other_code=True, what=f"{what} seed {seed}")
        dirs.append(found[seed])
    return dirs


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tunes", type=Path, default=ROOT / "runs/tune", help="the tunes' folder")
    parser.add_argument("--out", type=Path, default=HERE, help="where the reports and results.json go")
    parser.add_argument("--data", nargs="+", choices=list(GRIDS), default=list(GRIDS), help="the data sets to compare on")
    parser.add_argument("--n", nargs="+", type=int, choices=NS, default=list(NS), help="the target Ns to compare at")
    parser.add_argument("--seeds", type=int, default=3, help="test seeds per side (default: the grid's three)")
    args = parser.parse_args()
    code = code_identity()
    rows = []
    for data in args.data:
        spec = experiment_spec.load(ROOT / GRIDS[data])
        seeds, results, space = grid_seeds_and_results(spec, args.seeds)
        for n in args.n:
            output = args.tunes / f"{data}-n{n}"
            if not (output / "tune.json").exists():
                print(f"{data} N={n}: no tune.json yet in {output}", file=sys.stderr)
                continue
            report = json.loads((output / "tune.json").read_text())
            kept = args.out / f"{data}-n{n}"  # the tune's own report, committed beside this comparison
            kept.mkdir(parents=True, exist_ok=True)
            for name in ("tune.md", "tune.json", "recommended.yaml"):
                shutil.copyfile(output / name, kept / name)
            metric = f"recall@{n}"
            label = max(space, key=lambda lb, m=metric: space[lb]["mean"][m])
            # what the full grid would recommend by its own validation (seed 1, each variant at its rate)
            by_validation = max(space, key=lambda lb, m=metric: space[lb]["validation"][m])
            grid_dirs, validation_dirs = (grid_runs(spec, space, data, lb, seeds, code) for lb in (label, by_validation))
            picked, softmax = tune_sides(output, report, data, seeds, code)
            ours, grid, grid_validated, ce = (per_user_of(d, metric) for d in (picked, grid_dirs, validation_dirs, softmax))
            rows.append({
                "data": data, "n": n, "tune_pick": report["recommended"]["label"], "tune_seeds": len(picked),
                "tune_test": float(ours.mean()),
                "grid_best": label, "grid_best_lr": space[label]["learning_rate"],
                "grid_best_committed_test": space[label]["mean"][metric], "grid_best_rerun_test": float(grid.mean()),
                "grid_validation_pick": by_validation, "grid_validation_pick_lr": space[by_validation]["learning_rate"],
                "grid_validation_pick_test": float(grid_validated.mean()),
                "tuned_ce": report["softmax"]["label"], "tuned_ce_test": float(ce.mean()),
                "tune_vs_grid_best": paired_bootstrap(ours, grid).to_dict(),
                "tune_vs_grid_validation_pick": paired_bootstrap(ours, grid_validated).to_dict(),
                "tune_vs_tuned_ce": paired_bootstrap(ours, ce).to_dict(),
                "tune_compute": report["compute"],
                "tune_full_run_equivalents": report["compute"]["steps"] / spec.base.training.max_steps,
                "grid_runs": grid_compute(results), "grid_runs_in_tune_space": grid_compute(space),
                "tied_with_pick": [t["label"] for t in report["tied_with_recommended"]],
                "runs_made_by": made_by([*picked, *grid_dirs, *validation_dirs, *softmax]),
            })
    made = {**provenance(), **code, "load_average_1_5_15_min": os.getloadavg()}
    (args.out / "results.json").write_text(json.dumps({"provenance": made, "rows": rows}, indent=2) + "\n")
    print("| data | N | tune's pick (seeds) | test R@N | grid's best on test (lr), rerun | test R@N | pick vs grid best | "
          "grid's pick on validation (lr) | test R@N | pick vs it | "
          "tuned CE | test R@N | pick vs tuned CE | tune compute: runs (pruned), full-run equiv. | grid runs |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        versus_grid, versus_validated, versus_ce = (
            paired_bootstrap_text(r[k]) for k in ("tune_vs_grid_best", "tune_vs_grid_validation_pick", "tune_vs_tuned_ce"))
        print(f"| {r['data']} | {r['n']} | {r['tune_pick']} ({r['tune_seeds']}) | {100 * r['tune_test']:.2f} | "
              f"{r['grid_best']} ({r['grid_best_lr']:g}) | {100 * r['grid_best_rerun_test']:.2f} "
              f"(committed {100 * r['grid_best_committed_test']:.2f}) | {versus_grid} | "
              f"{r['grid_validation_pick']} ({r['grid_validation_pick_lr']:g}) | {100 * r['grid_validation_pick_test']:.2f} | {versus_validated} | {r['tuned_ce']} | "
              f"{100 * r['tuned_ce_test']:.2f} | {versus_ce} | {r['tune_compute']['runs']} "
              f"({r['tune_compute']['pruned']}), {r['tune_full_run_equivalents']:.1f} | {r['grid_runs']} |")


def paired_bootstrap_text(raw):
    interval = Interval.from_dict(raw)
    return f"{interval.describe()} ({interval.verdict()})"


if __name__ == "__main__":
    main()
