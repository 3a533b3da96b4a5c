"""Writes docs/results/rule-of-thumb/README tables: the best alpha per kernel and N in every measured
experiment and in the paper's Table 3, two candidate fits, and the error of the rule in ``tune.suggest``.

    .venv/bin/python docs/results/rule-of-thumb/make_tables.py > docs/results/rule-of-thumb/tables.md
"""

import json
import math
from pathlib import Path

import numpy as np

from tfcroloss.pipelines.training import tune
from tfcroloss.pipelines.training.report import read_results

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent
# (label, results.json, catalog size, shared negatives per row)
EXPERIMENTS = [
    ("ml-100k", RESULTS / "ml-100k" / "results.json", 1349, 640),
    ("NowPlaying M=256", RESULTS / "nowplaying-1m" / "m256" / "results.json", 25276, 256),
    ("NowPlaying M=2560", RESULTS / "nowplaying-1m" / "m2560" / "results.json", 25276, 2560),
]


def datasets():
    paper = json.loads((HERE / "paper-table-3.json").read_text())["datasets"]
    for name, data in paper.items():
        curves = {kernel: {float(a): {int(n): r / 100 for n, r in by_n.items()} for a, by_n in by_alpha.items()}
                  for kernel, by_alpha in data["recall"].items()}
        yield name, curves, data["num_items"], data["negatives"]
    for name, path, num_items, negatives in EXPERIMENTS:
        if path.exists():
            results, _ = read_results(path)
            curves = {k: v for k, v in tune.alpha_curves(results).items() if len(v) >= 2}
            # only the alphas measured for every N with complete seeds count
            yield name, curves, num_items, negatives


def main():
    points, lines = [], []
    lines += ["| data | kernel | N | N/|I| | N·M/|I| | best alpha (tested) | rule alpha | Recall@N at rule (interpolated) | Recall@N lost (points, %) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, curves, num_items, negatives in datasets():
        for row in tune.rule_error(curves, num_items, negatives):
            tested = sorted(curves[row["kernel"]])
            fraction = row["n"] / num_items
            lines.append(
                f"| {name} | {row['kernel']} | {row['n']} | {fraction:.1e} | {fraction * negatives:.2g} | "
                f"{row['best_alpha']:g} ({tested[0]:g}-{tested[-1]:g}) | {row['rule_alpha']:g} | "
                f"{100 * row['recall_at_rule']:.2f} | {100 * row['recall_lost']:.2f} ({100 * row['relative_lost']:.1f}%) |")
            edge = row["best_alpha"] in (tested[0], tested[-1])
            if row["kernel"] in ("sigmoid", "softplus"):
                points.append((math.log10(fraction), math.log10(fraction * negatives), row["best_alpha"], edge,
                               row["relative_lost"], name))
    print("\n".join(lines))
    if points:
        x, k, y = (np.array([p[i] for p in points]) for i in range(3))
        print()
        keep = np.array(["ml-100k" not in p[5] for p in points])
        for subset, mask in (("all data", np.ones_like(keep)), ("without ml-100k", keep)):
            for label, v in (("log10(N/|I|)", x), ("log10(N·M/|I|)", k)):
                slope, intercept = np.polyfit(v[mask], y[mask], 1)
                residual = y[mask] - (slope * v[mask] + intercept)
                print(f"- least squares, sigmoid and softplus, {subset}: alpha = {intercept:.2f} {slope:+.2f} * {label}; "
                      f"RMS residual {np.sqrt(np.mean(residual ** 2)):.2f} over {int(mask.sum())} points")
        lost = np.array([p[4] for p in points])
        print(f"- the rule in tune.suggest, sigmoid and softplus: mean relative Recall@N lost {100 * lost.mean():.1f}%, "
              f"max {100 * lost.max():.1f}% over {len(lost)} (data, kernel, N) points")


if __name__ == "__main__":
    main()
