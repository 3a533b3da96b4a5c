"""Experiments: a grid of losses x kernels x alpha x seeds, tuned fairly, written as tables and plots.

An experiment file (YAML)::

    base: configs/ml-100k.yaml        # the run config every variant starts from
    output: docs/results/ml-100k      # tables, plots, results.json; runs under output/runs/
    seeds: [1, 2, 3]
    learning_rates: [0.002, 0.005]    # the same search budget for every variant
    variants:                         # each a loss section, named by its label
      softmax: {name: softmax}
      croloss-softplus-a1.0: {name: croloss, kernel: softplus, alpha: 1.0}
    grid:                             # optional: more variants, a product of values
      - {name: croloss, kernel: [sigmoid, softplus], alpha: [0.6, 1.0, 1.4]}
    overrides: {negatives.per_positive: 10}   # optional: base config values for every variant
    share_learning_rate: family       # optional: search the rate once per loss family (below)
    learning_rates_from: docs/results/x/results.json   # optional: reuse an earlier experiment's rates

A variant may carry ``overrides`` of its own (``{"section.key": value}``), e.g.
``{name: croloss, overrides: {negatives.mode: in_batch, negatives.correction: none}}``.

For every variant the learning rate is chosen on the validation split (the
base config's ``evaluation.select_on``) with the first seed; then every seed
trains at that rate and the test metrics are averaged (mean, sample std). With
``share_learning_rate: family`` the search runs once per family (the variants that
differ only in alpha), on its member with alpha nearest 1, and the family reuses that
rate: every family gets the same search budget, at a fraction of the runs.
``learning_rates_from: PATH`` takes each variant's rate from an earlier experiment's
results.json (same labels) instead of searching again.
Finished runs are kept and skipped when the experiment is run again, so an
interrupted experiment resumes. Each run directory records the code that made it
(``code.json``: commit and a digest of the training code); a finished run made by
other code is refused unless ``reuse_other_code`` says to reuse it, and then the
report says so. ``results.json`` holds the variants' results and the provenance
(commit, package versions, machine). Progress and an ETA are printed per run.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import itertools
import json
import os
import platform
import re
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from tfcroloss.models.loss_presets import build_loss
from tfcroloss.pipelines.files import atomic_file, atomic_write_text
from tfcroloss.pipelines.training import config as config_lib
from tfcroloss.pipelines.training.run_directory import METRICS_FILE
from tfcroloss.pipelines.training.train import train
from tfcroloss.registry import unknown_name


@dataclasses.dataclass
class Experiment:
    base: config_lib.RunConfig
    output: Path
    seeds: list[int]
    learning_rates: list[float]
    variants: dict[str, dict[str, Any]]
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    share_learning_rate: str = "none"
    learning_rates_from: Path | None = None


CODE_FILE = "code.json"
# The code that decides what a run trains: its digest tells whether a cached run is this code's.
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]
TRAINING_CODE = (
    "tfcroloss/*.py", "models/*.py", "pipelines/files.py", "pipelines/data/dataset.py", "pipelines/data/inputs.py",
    "pipelines/retrieval/__init__.py", "pipelines/retrieval/base.py", "pipelines/retrieval/exact.py",
    "pipelines/training/*.py",
)
_NOT_TRAINING = {"keras3.py", "experiment.py", "tune.py"}  # another Keras's losses; reporting
_PACKAGES = ("tensorflow", "tf-keras", "tensorflow-recommenders", "scann", "numpy", "tfcroloss")


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=_PACKAGE_ROOT, capture_output=True, text=True,
                              check=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def code_digest() -> str:
    """A digest of the training code's source files (``TRAINING_CODE``: the loss, model, inputs,
    training, evaluation), as they are on disk; edits to, e.g., readers or serving do not count."""
    digest = hashlib.sha256()
    for path in _training_files():
        digest.update(path.relative_to(_PACKAGE_ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _training_files() -> list[Path]:
    """The files whose content decides what a run trains and reports (``TRAINING_CODE``)."""
    files = set()
    for pattern in TRAINING_CODE:
        files.update(path for path in _PACKAGE_ROOT.glob(pattern) if path.name not in _NOT_TRAINING)
    return sorted(files)


def code_identity() -> dict[str, Any]:
    """The commit, the uncommitted training-code files, and the training code's digest."""
    dirty = _git("status", "--porcelain", "--", *(p.relative_to(_PACKAGE_ROOT).as_posix()
                                                   for p in _training_files()))
    return {
        "commit": _git("rev-parse", "HEAD"),
        "uncommitted": sorted(line[3:] for line in dirty.splitlines()) if dirty else [],
        "code_digest": code_digest(),
    }


def provenance() -> dict[str, Any]:
    """What made a set of results: code, package versions, machine."""
    packages = {}
    for name in _PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    return {
        **code_identity(),
        "python": sys.version.split()[0],
        "packages": packages,
        "machine": {"platform": platform.platform(), "processor": platform.machine(), "cpus": os.cpu_count()},
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _label(loss: dict[str, Any]) -> str:
    parts = [loss["name"]] + [f"{key}={value}" for key, value in loss.items() if key not in ("name", "overrides")]
    overrides = loss.get("overrides") or {}
    parts += [f"{key.split('.')[-1]}={value}" for key, value in overrides.items()]
    return " ".join(parts)


def variant_config(base: config_lib.RunConfig, variant: dict[str, Any], overrides: dict[str, Any] | None = None,
                   source: str = "variant") -> config_lib.RunConfig:
    """The run config of a variant: ``base`` with the experiment's and the variant's overrides and its loss."""
    raw = base.to_dict()
    loss = {k: v for k, v in variant.items() if k != "overrides"}
    for dotted, value in {**(overrides or {}), **(variant.get("overrides") or {})}.items():
        section, _, key = dotted.partition(".")
        if section not in raw or not key or section == "loss":
            raise config_lib.ConfigError(f"{source}: override {dotted!r}: expected section.key outside 'loss'")
        raw[section][key] = value
    raw["loss"] = loss
    return config_lib.from_dict(raw, source=source)


def load(path: str | Path) -> Experiment:
    """Reads and checks an experiment file; every variant must make a valid run config."""
    path = Path(path)
    raw = yaml.safe_load(path.read_text()) if path.exists() else None
    if raw is None:
        raise FileNotFoundError(f"experiment file not found or empty: {path}")
    known = {"base", "output", "seeds", "learning_rates", "variants", "grid", "overrides", "share_learning_rate",
             "learning_rates_from"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise config_lib.ConfigError(f"{path}: {unknown_name('key', unknown[0], sorted(known))}")
    for key in ("base", "output", "seeds", "learning_rates"):
        if key not in raw:
            raise config_lib.ConfigError(f"{path}: {key!r} is required")
    variants = dict(raw.get("variants") or {})
    for entry in raw.get("grid") or []:
        keys = list(entry)
        values = [value if isinstance(value, list) else [value] for value in entry.values()]
        for combo in itertools.product(*values):
            loss = dict(zip(keys, combo, strict=True))
            variants.setdefault(_label(loss), loss)
    if not variants:
        raise config_lib.ConfigError(f"{path}: no variants (give 'variants' or 'grid')")
    base = config_lib.load(raw["base"])
    overrides = dict(raw.get("overrides") or {})
    for label, loss in variants.items():  # fail now, not after hours of training
        where = f"{path}: variant {label!r}"
        config = variant_config(base, loss, overrides, source=where)
        try:
            build_loss(config.loss.name, num_items=1_000_000, **config.loss.params)
        except (TypeError, ValueError) as error:
            raise config_lib.ConfigError(f"{where}: {error}") from None
    share = raw.get("share_learning_rate", "none")
    if share not in ("none", "family"):
        raise config_lib.ConfigError(f"{path}: share_learning_rate must be none or family, got {share!r}")
    rates_from = Path(raw["learning_rates_from"]) if raw.get("learning_rates_from") else None
    return Experiment(base, Path(raw["output"]), [int(s) for s in raw["seeds"]],
                      [float(r) for r in raw["learning_rates"]], variants, overrides, share, rates_from)


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
                   progress: Progress | None = None, what: str = "") -> dict[str, Any]:
    """The run's metrics: cached when ``run_dir`` holds a finished run of this code, else trained.

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
        if progress is not None:
            progress.finish(None)
        return result
    started = progress.start(what) if progress is not None else None
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / CODE_FILE, json.dumps(code, indent=2) + "\n")
    result = train(config, run_dir, verbose=0)
    if progress is not None:
        progress.finish(started)
    return result


def _run(experiment: Experiment, label: str, learning_rate: float, seed: int, progress: Progress | None = None,
         reuse_other_code: bool = False, code: dict[str, Any] | None = None) -> dict[str, Any]:
    config = variant_config(experiment.base, experiment.variants[label], experiment.overrides, source=label)
    config.training.learning_rate, config.training.seed = learning_rate, seed
    config = config_lib.from_dict(config.to_dict(), source=label)
    run_dir = run_directory(experiment.output, label, config)
    return train_or_reuse(config, run_dir, code=code or code_identity(), reuse_other_code=reuse_other_code,
                          progress=progress, what=f"== {label}  lr={learning_rate:g}  seed={seed}")


def family(variant: dict[str, Any]) -> str:
    """A variant's label without its alpha: the variants that share a learning rate under
    ``share_learning_rate: family``."""
    return _label({k: v for k, v in variant.items() if k != "alpha"})


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
        write_report(experiment, results, provenance={**provenance(), **code})

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


def read_results(path: str | Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(variants' results, provenance) from a results.json; older files hold the variants only."""
    raw = json.loads(Path(path).read_text())
    if "variants" in raw and "provenance" in raw:
        return raw["variants"], raw["provenance"]
    return raw, None


def _ns(results: dict[str, Any]) -> list[int]:
    any_result = next(iter(results.values()))
    return sorted({int(k.split("@")[1]) for k in any_result["mean"]})


def table_rows(results: dict[str, Any], metric: str = "recall") -> tuple[list[str], list[list[str]]]:
    """Header and rows of "mean ± std" (percent) per variant and N, as the paper's tables."""
    ns = _ns(results)
    header = ["loss", "lr"] + [f"{metric[0].upper()}@{n}" for n in ns]
    rows = []
    for label, result in results.items():
        cells = [f"{100 * result['mean'][f'{metric}@{n}']:.2f} ± {100 * result['std'][f'{metric}@{n}']:.2f}" for n in ns]
        shown = f"{label} ({result['incomplete']})" if result.get("incomplete") else label
        rows.append([shown, f"{result['learning_rate']:g}"] + cells)
    return header, rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"


def write_report(experiment: Experiment, results: dict[str, Any], provenance: dict[str, Any] | None = None) -> None:
    """results.json (results and provenance), recall/ndcg tables (markdown and CSV) and Recall@N
    plots under ``output``; without ``provenance`` the one in results.json is kept."""
    out = experiment.output
    if provenance is None and (out / "results.json").exists():
        provenance = read_results(out / "results.json")[1]
    atomic_write_text(out / "results.json", json.dumps({"provenance": provenance, "variants": results}, indent=2) + "\n")
    for metric in ("recall", "hit_rate", "ndcg"):
        header, rows = table_rows(results, metric)
        atomic_write_text(out / f"{metric}.md", markdown_table(header, rows))
        buffer = io.StringIO()
        csv.writer(buffer).writerows([header] + rows)
        atomic_write_text(out / f"{metric}.csv", buffer.getvalue())
    atomic_write_text(out / "claims.md", claims_markdown(results))
    seeds = f"mean of {len(experiment.seeds)} seeds"
    plot_recall(results, out / "recall_at_n.png", title=f"Recall@N by loss, {seeds}")
    for kernel in sorted({r["loss"].get("kernel") for r in results.values()} - {None}):
        labels = [label for label, r in results.items()
                  if r["loss"]["name"] == "croloss" and r["loss"].get("kernel") == kernel
                  and not r["loss"].get("overrides")]
        if len(labels) > 1:
            plot_recall(results, out / f"recall_by_alpha_{kernel}.png", f"CROLoss {kernel}: Recall@N by alpha, {seeds}", labels)


def plot_recall(results: dict[str, Any], path: Path, title: str, labels: list[str] | None = None) -> None:
    """Recall@N against N (log scale), one curve per variant, as the paper's Figures 3-4."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = _ns(results)
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for label in labels or list(results):
        mean = [100 * results[label]["mean"][f"recall@{n}"] for n in ns]
        axis.plot(ns, mean, marker="o", label=label)
    axis.set_xscale("log")
    axis.set_xticks(ns, [str(n) for n in ns])
    axis.set_xlabel("N")
    axis.set_ylabel("Recall@N (%)")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    figure.tight_layout()
    with atomic_file(path) as tmp:
        figure.savefig(tmp, dpi=110, format="png")
    plt.close(figure)


def _best(results: dict[str, Any], name: str, n: int) -> tuple[str, float] | None:
    """The variant of loss ``name`` with the highest mean test Recall@n."""
    chosen = [(label, r["mean"][f"recall@{n}"]) for label, r in results.items() if r["loss"]["name"] == name]
    return max(chosen, key=lambda item: item[1]) if chosen else None


def _selected_on_validation(results: dict[str, Any], name: str) -> str | None:
    """The variant of loss ``name`` with the best validation score (its tuned learning rate, first seed)."""
    chosen = [(max(r["tuning"].values()), label) for label, r in results.items() if r["loss"]["name"] == name]
    return max(chosen)[1] if chosen else None


def _selected_for_n(results: dict[str, Any], n: int) -> str | None:
    """The CROLoss-family variant (plain or Lambda) with the best validation Recall@n (first seed,
    at its step selected on the experiment's metric); None without per-N validation figures."""
    chosen = [(r["validation"][f"recall@{n}"], label) for label, r in results.items()
              if r["loss"]["name"] in ("croloss", "lambda_croloss") and r.get("validation")
              and f"recall@{n}" in r["validation"]]
    return max(chosen)[1] if chosen else None


def _holds(flag: bool) -> str:
    return "holds" if flag else "does NOT hold"


def claims_markdown(results: dict[str, Any]) -> str:
    """Checks the paper's claims on mean test Recall@N, one line per claim and N."""
    ns = _ns(results)
    lines = ["## The paper's claims on this data (mean test Recall@N over seeds)", ""]
    softmax = {n: _best(results, "softmax", n) for n in ns}
    for n in ns:
        best, ce = _best(results, "croloss", n), softmax[n]
        if best and ce:
            lines.append(f"- Recall@{n}: best CROLoss ({best[0]}: {100 * best[1]:.2f}) >= softmax cross-entropy "
                         f"({100 * ce[1]:.2f}): {_holds(best[1] >= ce[1])}")
    for n in ns:
        lam, plain = _best(results, "lambda_croloss", n), _best(results, "croloss", n)
        if lam and plain:
            lines.append(f"- Recall@{n}: best Lambda ({lam[0]}: {100 * lam[1]:.2f}) >= best plain CROLoss "
                         f"({100 * plain[1]:.2f}): {_holds(lam[1] >= plain[1])}")
    chosen = _selected_on_validation(results, "croloss")
    if chosen and softmax[ns[0]]:
        base = next(label for label, r in results.items() if r["loss"]["name"] == "softmax")
        for n in ns:
            ours, theirs = results[chosen], results[base]
            gap = ours["mean"][f"recall@{n}"] - theirs["mean"][f"recall@{n}"]
            noise = max(ours["std"][f"recall@{n}"], theirs["std"][f"recall@{n}"])
            lines.append(f"- Recall@{n}: CROLoss chosen on validation ({chosen}) minus softmax cross-entropy: "
                         f"{100 * gap:+.2f} points (larger seed std {100 * noise:.2f})")
    if softmax[ns[0]]:
        base = next(label for label, r in results.items() if r["loss"]["name"] == "softmax")
        for n in ns:
            picked = _selected_for_n(results, n)
            if picked is None:
                continue
            ours, theirs = results[picked], results[base]
            gap = ours["mean"][f"recall@{n}"] - theirs["mean"][f"recall@{n}"]
            noise = max(ours["std"][f"recall@{n}"], theirs["std"][f"recall@{n}"])
            lines.append(f"- Recall@{n}: CROLoss (plain or Lambda) chosen on validation Recall@{n} ({picked}) minus "
                         f"softmax cross-entropy: {100 * gap:+.2f} points (larger seed std {100 * noise:.2f}): "
                         f"{_holds(gap >= 0)}")
    kernels = sorted({r["loss"].get("kernel") for r in results.values() if r["loss"]["name"] == "croloss"} - {None})
    for kernel in kernels:
        same = {r["loss"]["alpha"]: r for r in results.values()
                if r["loss"]["name"] == "croloss" and r["loss"].get("kernel") == kernel and "alpha" in r["loss"]}
        if len(same) < 2:
            continue
        best_alpha = [max(same, key=lambda a, n=n: same[a]["mean"][f"recall@{n}"]) for n in ns]
        monotone = all(a >= b for a, b in zip(best_alpha, best_alpha[1:], strict=False))
        pairs = ", ".join(f"N={n}: {a:g}" for n, a in zip(ns, best_alpha, strict=True))
        lines.append(f"- {kernel}: best alpha per N ({pairs}); larger alpha for smaller N: {_holds(monotone)}")
    for n in ns:
        ce, bpr, triplet = softmax[n], _best(results, "bpr", n), _best(results, "triplet", n)
        if ce and bpr and triplet:
            lines.append(f"- Recall@{n}: cross-entropy ({100 * ce[1]:.2f}) > BPR ({100 * bpr[1]:.2f}) > triplet "
                         f"({100 * triplet[1]:.2f}): {_holds(ce[1] > bpr[1] > triplet[1])}")
    return "\n".join(lines) + "\n"
