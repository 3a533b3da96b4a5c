"""Experiments: every variant of an experiment file tuned fairly, trained over seeds, and reported.

For every variant the learning rate is chosen on the validation split (the base config's
``evaluation.select_on``) with the first seed; then every seed trains at that rate and the test
metrics are averaged (mean, sample std). With ``share_learning_rate: family`` the search runs
once per family (the variants that differ only in alpha), on its member with alpha nearest 1,
and the family reuses that rate: every family gets the same search budget, at a fraction of the
runs. ``learning_rates_from: PATH`` takes each variant's rate from an earlier experiment's
results.json (same labels) instead of searching again.

Finished runs are kept and skipped when the experiment is run again, so an interrupted
experiment resumes. Each run directory records the code that made it (``code.json``, from
``pipelines.provenance``); a finished run made by other code is refused unless
``reuse_other_code`` says to reuse it, and then the report says so. Progress and an ETA are
printed per run. Every run keeps its per-user test and validation Recall@N
(``evaluate.write_per_user``; added to finished runs that lack it), and the experiment's
``per_user_test.npz`` gathers the test ones, so that the claims compare losses with paired
intervals over users and seeds. The file format is in ``experiment_spec``, the tables, plots
and claims in ``report``.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tfcroloss.pipelines.files import atomic_write_text
from tfcroloss.pipelines.provenance import code_identity, provenance
from tfcroloss.pipelines.training import config as config_lib
from tfcroloss.pipelines.training.evaluate import PER_USER_FILE, read_per_user, write_per_user
from tfcroloss.pipelines.training.experiment_spec import Experiment, family, variant_config
from tfcroloss.pipelines.training.report import read_results, write_report
from tfcroloss.pipelines.training.run_directory import METRICS_FILE
from tfcroloss.pipelines.training.train import train

CODE_FILE = "code.json"


class ForeignRunError(RuntimeError):
    """A cached run was made by other training code (or by code that did not record itself)."""


class Progress:
    """Counts runs and prints ``[done/total]`` with an ETA from the runs trained in this process."""

    def __init__(self, total: int):
        self.total, self.done, self.trained, self.seconds = total, 0, 0, 0.0

    def start(self, what: str) -> float:
        eta = ""
        if self.trained:
            left = (self.total - self.done) * self.seconds / self.trained
            eta = f"  ETA {time.strftime('%H:%M', time.gmtime(time.time() + left))} UTC ({left / 60:.0f} min left)"
        print(f"[{self.done + 1}/{self.total}] {what}{eta}", flush=True)
        return time.perf_counter()

    def finish(self, started: float | None) -> None:
        self.done += 1
        if started is not None:
            self.trained += 1
            self.seconds += time.perf_counter() - started


def run_directory(root: Path, label: str, config: config_lib.RunConfig) -> Path:
    # The folder name carries a digest of the whole config: a changed config never reuses old runs.
    digest = hashlib.sha256(config.to_yaml().encode()).hexdigest()[:10]
    training = config.training
    return root / "runs" / re.sub(r"[^\w.-]+", "_", label) / f"lr{training.learning_rate:g}-seed{training.seed}-{digest}"


def train_or_reuse(config: config_lib.RunConfig, run_dir: Path, *, code: dict[str, Any], reuse_other_code: bool,
                   progress: Progress | None = None, what: str = "", callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """The run's metrics: cached when ``run_dir`` holds a finished run of this code, else trained
    (with the extra Keras ``callbacks``); either way the run keeps its per-user metrics.

    A finished run whose ``code.json`` names other training code (or has none) raises
    ``ForeignRunError`` unless ``reuse_other_code``; then it is reused with a warning and its
    metrics carry ``"code"`` so the report can say so.
    """
    if (run_dir / METRICS_FILE).exists():
        result = json.loads((run_dir / METRICS_FILE).read_text())
        made_by = json.loads((run_dir / CODE_FILE).read_text()) if (run_dir / CODE_FILE).exists() else None
        if made_by is None or made_by.get("code_digest") != code["code_digest"]:
            where = "no record of its code" if made_by is None else f"code {made_by.get('commit')} " \
                f"(digest {made_by.get('code_digest')}, this code {code['code_digest']})"
            if not reuse_other_code:
                raise ForeignRunError(
                    f"{run_dir} was made by {where}; delete it to retrain, or reuse it knowingly "
                    "(`tfcroloss experiment --reuse-other-code`)"
                )
            print(f"warning: reusing {run_dir}, made by {where}", file=sys.stderr, flush=True)
            result["code"] = made_by or "unknown"
        if not (run_dir / PER_USER_FILE).exists():
            write_per_user(run_dir)
        if progress is not None:
            progress.finish(None)
        return result
    started = progress.start(what) if progress is not None else None
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / CODE_FILE, json.dumps(code, indent=2) + "\n")
    result = train(config, run_dir, verbose=0, callbacks=callbacks)
    write_per_user(run_dir)
    if progress is not None:
        progress.finish(started)
    return result


def _run_config(experiment: Experiment, label: str, learning_rate: float, seed: int) -> config_lib.RunConfig:
    config = variant_config(experiment.base, experiment.variants[label], experiment.overrides, source=label)
    config.training.learning_rate, config.training.seed = learning_rate, seed
    return config_lib.from_dict(config.to_dict(), source=label)


def _run(experiment: Experiment, label: str, learning_rate: float, seed: int, progress: Progress | None = None,
         reuse_other_code: bool = False, code: dict[str, Any] | None = None) -> dict[str, Any]:
    config = _run_config(experiment, label, learning_rate, seed)
    run_dir = run_directory(experiment.output, label, config)
    return train_or_reuse(config, run_dir, code=code or code_identity(), reuse_other_code=reuse_other_code,
                          progress=progress, what=f"== {label}  lr={learning_rate:g}  seed={seed}")


def per_user_test_recall(experiment: Experiment, rates: dict[str, float], seeds: dict[str, list[int]]
                  ) -> dict[str, dict[str, np.ndarray]]:
    """``{label: {"recall@N": [seeds, users]}}``: the per-user test Recall@N of each variant's
    finished seeds (at its chosen rate), read from the run directories."""
    gathered: dict[str, dict[str, np.ndarray]] = {}
    for label, done in seeds.items():
        runs = [read_per_user(run_directory(experiment.output, label, _run_config(experiment, label, rates[label], s)))
                for s in done]
        metrics = sorted(k.split("/", 1)[1] for k in runs[0] if k.startswith("test/recall@"))
        gathered[label] = {m: np.stack([run[f"test/{m}"] for run in runs]) for m in metrics}
    return gathered


def _reference(experiment: Experiment, label: str) -> str:
    """The variant whose learning-rate search serves ``label``: itself, or with
    ``share_learning_rate: family`` the family's variant with alpha nearest 1 (first on a tie)."""
    if experiment.share_learning_rate != "family":
        return label
    name = family(experiment.variants[label])
    members = [other for other, v in experiment.variants.items() if family(v) == name]
    return min(members, key=lambda other: round(abs(float(experiment.variants[other].get("alpha", 1.0)) - 1.0), 6))


def run(experiment: Experiment, *, reuse_other_code: bool = False) -> dict[str, Any]:
    """Trains every variant (tuning then seeds) and writes results, tables and plots, the report
    after every variant (so a long experiment's finished part can be read and committed)."""
    select_on = experiment.base.evaluation.select_on
    code = code_identity()
    references = {label: _reference(experiment, label) for label in experiment.variants}
    given: dict[str, float] = {}
    if experiment.learning_rates_from is not None:  # rates chosen by an earlier experiment, reused
        earlier, _ = read_results(experiment.learning_rates_from)
        given = {label: float(earlier[label]["learning_rate"]) for label in experiment.variants if label in earlier}
        references = {label: "" if label in given else ref for label, ref in references.items()}
    searched = set(references.values()) - {""}
    progress = Progress(
        len(searched) * len(experiment.learning_rates) + len(set(references) - searched)
        + len(experiment.variants) * (len(experiment.seeds) - 1)
    )
    first = experiment.seeds[0]
    tuning: dict[str, dict[float, dict[str, Any]]] = {}
    runs: dict[str, dict[int, dict[str, Any]]] = {}
    rates: dict[str, float] = {}

    def one(label: str, lr: float, seed: int) -> dict[str, Any]:
        return _run(experiment, label, lr, seed, progress, reuse_other_code, code)

    def report() -> None:
        results = {label: _summary(experiment, label, rates[label], references[label], tuning[label], runs[label])
                   for label in experiment.variants if label in rates}
        per_user = per_user_test_recall(experiment, rates, {label: [s for s in experiment.seeds if s in runs[label]]
                                                     for label in results})
        write_report(experiment, results, provenance={**provenance(), **code}, per_user=per_user)

    # 1. the learning-rate searches (seed 1); 2. every other variant's seed 1; 3. the other seeds,
    # seed by seed: an interrupted experiment has the widest picture it could have.
    for label in (lb for lb in experiment.variants if references[lb] == lb):
        tuning[label] = {lr: one(label, lr, first) for lr in experiment.learning_rates}
        rates[label] = max(tuning[label], key=lambda lr, lb=label: tuning[lb][lr]["validation"][select_on])
        runs[label] = {first: tuning[label][rates[label]]}
        report()
    for label in (lb for lb in experiment.variants if references[lb] != lb):
        rates[label] = given[label] if label in given else rates[references[label]]
        tuning[label] = {rates[label]: one(label, rates[label], first)}
        runs[label] = {first: tuning[label][rates[label]]}
        report()
    for seed in experiment.seeds[1:]:
        for label in experiment.variants:
            runs[label][seed] = one(label, rates[label], seed)
            report()
    return {label: _summary(experiment, label, rates[label], references[label], tuning[label], runs[label])
            for label in experiment.variants}


def _summary(experiment: Experiment, label: str, rate: float, reference: str,
             tuning: dict[float, dict[str, Any]], runs: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """One variant's entry in results.json: its rate, search, and test mean/std over the seeds run so far."""
    select_on = experiment.base.evaluation.select_on
    done = [seed for seed in experiment.seeds if seed in runs]
    chosen = [runs[seed] for seed in done]
    metrics = sorted(k for k in chosen[0]["test"] if "@" in k)
    foreign = sorted({json.dumps(r["code"], sort_keys=True) for r in [*tuning.values(), *chosen] if "code" in r})
    summary = {
        "loss": experiment.variants[label],
        "learning_rate": rate,
        "learning_rate_from": reference or str(experiment.learning_rates_from),
        "tuning": {f"{lr:g}": t["validation"][select_on] for lr, t in tuning.items()},
        "validation": runs[experiment.seeds[0]]["validation"],
        "mean": {m: float(np.mean([r["test"][m] for r in chosen])) for m in metrics},
        "std": {m: float(np.std([r["test"][m] for r in chosen], ddof=1)) if len(chosen) > 1 else 0.0
                for m in metrics},
        "seeds": {str(s): r["test"] for s, r in zip(done, chosen, strict=True)},
        "best_steps": {str(s): r.get("best_step") for s, r in zip(done, chosen, strict=True)},
    }
    if len(done) < len(experiment.seeds):
        summary["incomplete"] = f"{len(done)} of {len(experiment.seeds)} seeds"
    if foreign:
        summary["reused_runs_of_other_code"] = [json.loads(f) for f in foreign]
    return summary
