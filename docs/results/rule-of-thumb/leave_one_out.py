"""The rule of thumb's error out of sample: fit alpha = a + b * log10(N * M / |I|) on every data set
but one (least squares on the best tested alphas of sigmoid and softplus, as ``make_tables.py``),
then score that fit, clipped and rounded as ``tune.suggest`` does, on the data set left out: the
test Recall@N lost by taking its alpha instead of the best tested one.

    .venv/bin/python docs/results/rule-of-thumb/leave_one_out.py > docs/results/rule-of-thumb/leave-one-out.md
"""

import math

import numpy as np
from make_tables import datasets

from tfcroloss.pipelines.training import tune

KERNELS = ("sigmoid", "softplus")


def best_alphas(curves, num_items, negatives):
    """(log10(N M / |I|), best alpha) of each kernel and N."""
    return [(math.log10(row["n"] * negatives / num_items), row["best_alpha"])
            for row in tune.rule_error(curves, num_items, negatives) if row["kernel"] in KERNELS]


def fitted_rule(intercept, slope):
    def rule(n, num_items, negatives):
        alpha = intercept + slope * math.log10(min(n, num_items) * negatives / num_items)
        return "softplus", round(min(tune.ALPHA_MAX, max(tune.ALPHA_MIN, alpha)) * 5) / 5
    return rule


def main():
    data = list(datasets())
    points = {name: best_alphas(curves, num_items, negatives) for name, curves, num_items, negatives in data}
    print("| left out | fit on the others | points | mean / max relative Recall@N lost, fit out of sample | "
          "same, tune.suggest (in sample) |")
    print("|---|---|---|---|---|")
    lost_out, lost_in = [], []
    for name, curves, num_items, negatives in data:
        others = [p for other, ps in points.items() if other != name for p in ps]
        slope, intercept = np.polyfit([p[0] for p in others], [p[1] for p in others], 1)
        kept = {k: v for k, v in curves.items() if k in KERNELS}
        out = [r["relative_lost"] for r in tune.rule_error(kept, num_items, negatives, fitted_rule(intercept, slope))]
        inside = [r["relative_lost"] for r in tune.rule_error(kept, num_items, negatives)]
        lost_out += out
        lost_in += inside
        print(f"| {name} | {intercept:.2f} {slope:+.2f} x | {len(out)} | {100 * np.mean(out):.2f}% / "
              f"{100 * np.max(out):.1f}% | {100 * np.mean(inside):.2f}% / {100 * np.max(inside):.1f}% |")
    print(f"| all | | {len(lost_out)} | {100 * np.mean(lost_out):.2f}% / {100 * np.max(lost_out):.1f}% | "
          f"{100 * np.mean(lost_in):.2f}% / {100 * np.max(lost_in):.1f}% |")


if __name__ == "__main__":
    main()
