"""`tfcroloss tune`: a short kernel x alpha x learning-rate search for the N a system retrieves.

Every candidate trains the run config with one seed and is scored on validation Recall@N (the
target N); the best becomes the recommended run config. The search is budgeted (at most
``budget`` runs, each of at most ``max_steps``): candidates are ordered by their distance from
the rule of thumb (``suggest``), so a small budget spends itself near the suggestion first.
Runs live under ``output/runs`` and are reused when the search is run again (resumable), with the
same code check as ``experiment``. Written to ``output``: ``recommended.yaml`` (the run config to
train), ``tune.md`` (the table) and ``tune.json``.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tfcroloss.pipelines.files import atomic_write_text
from tfcroloss.pipelines.training import config as config_lib

KERNELS = ("sigmoid", "softplus", "exponential")
ALPHAS = (0.6, 1.0, 1.4, 2.0)

# The rule of thumb: alpha = ALPHA_AT_ONE - ALPHA_SLOPE * log10(N * M / |I|), clipped to
# [ALPHA_MIN, ALPHA_MAX] and rounded to 0.2. N * M / |I| is how many of the M sampled negatives a
# positive at rank N has above it on average: where it is below 1 the loss must resolve ranks finer
# than its sample does and a larger alpha pays; where it is large, a smaller one. Least squares on the
# best alphas of the sigmoid and softplus kernels in the paper's Table 3 and on NowPlaying at M = 256
# and 2,560 gives 1.03 - 0.39 x (RMS residual 0.20 alpha); of the rounded rules near it, 1.1 - 0.4 x
# lost the least Recall@N (docs/results/rule-of-thumb/README.md has the data and the Recall lost).
ALPHA_AT_ONE = 1.1
ALPHA_SLOPE = 0.4
ALPHA_MIN, ALPHA_MAX = 0.6, 2.0


def suggest(n: int, num_items: int, negatives: int) -> tuple[str, float]:
    """The rule of thumb's (kernel, alpha) for retrieving N of ``num_items`` with ``negatives``
    sampled negatives per row (M), without training.

    >>> suggest(50, 25_276, negatives=256)
    ('softplus', 1.2)
    """
    if n < 1 or num_items < 1 or negatives < 1:
        raise ValueError(f"n, num_items and negatives must be >= 1, got {n}, {num_items}, {negatives}")
    above = min(n, num_items) * negatives / num_items
    alpha = ALPHA_AT_ONE - ALPHA_SLOPE * math.log10(above)
    alpha = min(ALPHA_MAX, max(ALPHA_MIN, alpha))
    return "softplus", round(alpha * 5) / 5  # on the 0.2 grid the experiments use


@dataclasses.dataclass
class Candidate:
    kernel: str
    alpha: float
    learning_rate: float

    @property
    def label(self) -> str:
        return f"croloss kernel={self.kernel} alpha={self.alpha:g}"


def candidates(
    n: int, num_items: int, negatives: int, kernels: list[str], alphas: list[float], learning_rates: list[float],
    budget: int,
) -> list[Candidate]:
    """The grid, nearest the suggestion first (alpha distance, then kernel, then rate), cut to ``budget``."""
    kernel, alpha = suggest(n, num_items, negatives)
    grid = [Candidate(k, a, lr) for k, a, lr in itertools.product(kernels, alphas, learning_rates)]
    grid.sort(key=lambda c: (abs(c.alpha - alpha), c.kernel != kernel, kernels.index(c.kernel), c.learning_rate))
    return grid[:budget]


def tune(
    config: config_lib.RunConfig,
    target_n: int,
    output: str | Path,
    *,
    num_items: int,
    kernels: Sequence[str] = KERNELS,
    alphas: Sequence[float] = ALPHAS,
    learning_rates: Sequence[float] | None = None,
    budget: int = 12,
    max_steps: int | None = None,
    reuse_other_code: bool = False,
) -> dict[str, Any]:
    """Runs the search (or resumes it) and writes the recommendation; returns ``tune.json``'s content."""
    from tfcroloss.models.two_tower import negatives_per_row
    from tfcroloss.pipelines.provenance import code_identity, provenance
    from tfcroloss.pipelines.training.experiment import Progress, run_directory, train_or_reuse

    output = Path(output)
    metric = f"recall@{target_n}"
    raw = config.to_dict()
    raw["evaluation"]["ns"] = sorted(set(raw["evaluation"]["ns"]) | {target_n})
    raw["evaluation"]["select_on"] = metric
    if max_steps is not None:
        raw["training"]["max_steps"] = max_steps
        raw["training"]["eval_every"] = min(raw["training"]["eval_every"], max_steps)
    base = config_lib.from_dict(raw, source="tune")
    rates = list(learning_rates or [base.training.learning_rate])
    negatives = negatives_per_row(base.negatives.mode, base.training.batch_size, base.negatives.per_positive)
    chosen = candidates(target_n, num_items, negatives, list(kernels), list(alphas), rates, budget)
    if not chosen:
        raise config_lib.ConfigError("tune: nothing to search; give at least one kernel, alpha and learning rate")
    run_configs = [_candidate_config(base, candidate) for candidate in chosen]  # all checked before training
    code = code_identity()
    progress = Progress(len(chosen))
    rows = []
    for candidate, run_config in zip(chosen, run_configs, strict=True):
        result = train_or_reuse(
            run_config, run_directory(output, candidate.label, run_config), code=code,
            reuse_other_code=reuse_other_code, progress=progress,
            what=f"{candidate.label}  lr={candidate.learning_rate:g}",
        )
        rows.append({**dataclasses.asdict(candidate), "validation": result["validation"][metric],
                     "best_step": result["best_step"], "config": run_config.to_dict()})
    best = max(rows, key=lambda row: row["validation"])
    recommended = config_lib.from_dict(best["config"], source="tune")
    suggestion = suggest(target_n, num_items, negatives)
    report = {
        "target_n": target_n,
        "metric": f"validation {metric}",
        "suggested": {"kernel": suggestion[0], "alpha": suggestion[1]},
        "recommended": {k: best[k] for k in ("kernel", "alpha", "learning_rate", "validation")},
        "runs": [{k: v for k, v in row.items() if k != "config"} for row in rows],
        "provenance": {**provenance(), **code},
    }
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output / "recommended.yaml",
                      f"# tfcroloss tune --target-n {target_n}: best validation {metric} "
                      f"{best['validation']:.4f}\n" + recommended.to_yaml())
    atomic_write_text(output / "tune.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(output / "tune.md", tune_table(report))
    return report


def _candidate_config(base: config_lib.RunConfig, candidate: Candidate) -> config_lib.RunConfig:
    raw = base.to_dict()
    raw["loss"] = {"name": "croloss", "kernel": candidate.kernel, "alpha": candidate.alpha}
    raw["training"]["learning_rate"] = candidate.learning_rate
    return config_lib.from_dict(raw, source=f"tune candidate {candidate.label}, lr={candidate.learning_rate:g}")


def tune_table(report: dict[str, Any]) -> str:
    """The search as a markdown table, best first, with the suggestion and the recommendation."""
    from tfcroloss.pipelines.training.report import markdown_table

    header = ["kernel", "alpha", "lr", report["metric"], "best step"]
    runs = sorted(report["runs"], key=lambda row: -row["validation"])
    rows = [[r["kernel"], f"{r['alpha']:g}", f"{r['learning_rate']:g}", f"{100 * r['validation']:.2f}",
             str(r["best_step"])] for r in runs]
    best, suggested = report["recommended"], report["suggested"]
    return (
        f"Target N = {report['target_n']}. Rule of thumb: {suggested['kernel']}, alpha {suggested['alpha']:g}. "
        f"Recommended (best on validation): {best['kernel']}, alpha {best['alpha']:g}, "
        f"learning rate {best['learning_rate']:g}.\n\n" + markdown_table(header, rows)
    )


def alpha_curves(results: dict[str, Any]) -> dict[str, dict[float, dict[int, float]]]:
    """``{kernel: {alpha: {N: mean test recall}}}`` of the plain CROLoss variants (no overrides) of an
    experiment's results; softmax CE counts as the exponential kernel at alpha 1 (section 3.5)."""
    curves: dict[str, dict[float, dict[int, float]]] = {}
    for result in results.values():
        loss = result["loss"]
        if loss.get("overrides"):
            continue
        if loss["name"] == "softmax":
            kernel, alpha = "exponential", 1.0
        elif loss["name"] == "croloss" and "alpha" in loss and loss.get("kernel") in KERNELS:
            kernel, alpha = loss["kernel"], float(loss["alpha"])
        else:
            continue
        recall = {int(key.split("@")[1]): value for key, value in result["mean"].items() if key.startswith("recall@")}
        curves.setdefault(kernel, {})[alpha] = recall
    return curves


def rule_error(curves: dict[str, dict[float, dict[int, float]]], num_items: int, negatives: int
               ) -> list[dict[str, Any]]:
    """For each kernel and N: the best measured alpha, the rule's alpha, the Recall@N at the rule's
    alpha (linear between the two measured alphas around it, the nearest end outside them) and the
    Recall@N lost by taking it instead of the best (absolute and relative to the best)."""
    rows = []
    for kernel, by_alpha in sorted(curves.items()):
        alphas = sorted(by_alpha)
        for n in sorted(set.intersection(*(set(v) for v in by_alpha.values()))):
            best = max(alphas, key=lambda a, n=n: by_alpha[a][n])
            suggested = suggest(n, num_items, negatives)[1]
            at_rule = float(np.interp(suggested, alphas, [by_alpha[a][n] for a in alphas]))
            lost = by_alpha[best][n] - at_rule
            rows.append({"kernel": kernel, "n": n, "best_alpha": best, "rule_alpha": suggested,
                         "recall_best": by_alpha[best][n], "recall_at_rule": at_rule,
                         "recall_lost": lost, "relative_lost": lost / by_alpha[best][n] if by_alpha[best][n] else 0.0})
    return rows
