"""`tfcroloss tune`: which loss, kernel, alpha and learning rate for the N a system retrieves, and
how much that gains over softmax cross-entropy, with an interval.

Three phases, every one resumable from ``output`` (``docs/tune.md`` says why it works this way):

1. **Search** (the config's seed), on Optuna (``tune.db``, SQLite, in ``output``): study
   ``croloss`` over kernel, alpha (continuous, steps of 0.05) and the learning rate (log scale);
   study ``softmax``, the baseline, over the same learning-rate range. TPE samples (reseeded from
   the number of finished trials, so a resumed search asks what an uninterrupted one would have
   asked); the first trials are the starting points: the rule of thumb's alpha (``suggest``) with
   each of ``RULE_KERNELS``, and softmax, all at the config's rate. A run whose best validation Recall@N so
   far is below the 25th percentile of the finished runs' at the same step (five of them at
   least), from half of its steps on, is pruned (``make_pruner``, fed from the run's ``validation.jsonl`` after every validation).
   ``budget`` CROLoss trials and
   ``baseline_budget(budget)`` softmax ones, interleaved.
2. **Seeds**: successive halving over seeds. The best softmax rate gets every seed. The
   finished CROLoss trials are ranked on their mean per-user validation Recall@N; at each rung the
   leader and the candidates whose paired bootstrap interval with the leader holds zero (at most
   half of the rung) get one more seed, the others stop. The recommendation is the best mean
   over ``seeds`` seeds; the candidates still tied with it are named.
3. **Report**: ``tune.md`` (its first line: the recommendation's test Recall@N against softmax
   CE at the target N, with its paired interval, and at the other Ns), ``tune.json``,
   ``recommended.yaml`` (the run config to train).

``budget_minutes`` bounds the training time of the whole tune, across resumes (each run's
seconds are kept in its ``tune_run.json``): the search stops when what it spent plus what the
seeds phase is expected to need would pass it; no run starts once it is spent, except each
study's first trial. A killed tune resumes: a trial that was running is told failed (it never
counts) and asked again with the same parameters, and its run resumes from its checkpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tfcroloss.pipelines.files import atomic_write_text
from tfcroloss.pipelines.training import config as config_lib
from tfcroloss.pipelines.training.intervals import Interval, paired_bootstrap
from tfcroloss.registry import unknown_name

KERNELS = ("sigmoid", "softplus", "exponential")
ALPHA_RANGE = (0.4, 2.2)
ALPHA_STEP = 0.05
RATE_SPREAD = 4.0  # the default learning-rate range: the config's rate / 4 to * 4
SEEDS = 3
STORAGE_FILE = "tune.db"
TUNE_RUN_FILE = "tune_run.json"
STUDIES = ("croloss", "softmax")
_clock = time.perf_counter

# The rule of thumb: alpha = ALPHA_AT_ONE - ALPHA_SLOPE * log10(N * M / |I|), clipped to
# [ALPHA_MIN, ALPHA_MAX] and rounded to 0.2. N * M / |I| is how many of the M sampled negatives a
# positive at rank N has above it on average: where it is below 1 the loss must resolve ranks finer
# than its sample does and a larger alpha pays; where it is large, a smaller one. Least squares on the
# best alphas of the sigmoid and softplus kernels in the paper's Table 3 and on NowPlaying at M = 256
# and 2,560 gives 1.03 - 0.39 x (RMS residual 0.20 alpha); of the rounded rules near it, 1.1 - 0.4 x
# lost the least Recall@N (docs/results/rule-of-thumb/README.md has the data, the Recall lost, and
# its error out of sample). `tune` uses it only as the search's first trial.
ALPHA_AT_ONE = 1.1
ALPHA_SLOPE = 0.4
ALPHA_MIN, ALPHA_MAX = 0.6, 2.0
# The kernels the rule's alpha was fitted on. Which of them wins depends on the data (softplus on
# MovieLens 100K at N = 10 and 50, sigmoid on NowPlaying at every N), so the search starts from each.
RULE_KERNELS = ("softplus", "sigmoid")


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


def baseline_budget(budget: int) -> int:
    """Softmax CE's rate trials for a search of ``budget`` CROLoss trials: a third (one axis
    instead of three), at least 2, at most ``budget``."""
    return min(budget, max(2, math.ceil(budget / 3)))


def halving_plan(candidates: int, seeds: int) -> list[int]:
    """The most candidates each rung of the seeds phase trains (rung r gives seed r + 1):
    at most half of the rung before, at least the leader.

    >>> halving_plan(12, 3)
    [6, 3]
    """
    sizes, size = [], candidates
    for _ in range(seeds - 1):
        size = max(1, math.ceil(size / 2))
        sizes.append(size)
    return sizes


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One configuration the tune trains: softmax CE, or CROLoss with a kernel and alpha; a rate."""

    loss: str
    learning_rate: float
    kernel: str | None = None
    alpha: float | None = None

    @property
    def label(self) -> str:
        if self.loss == "softmax":
            return f"softmax CE, lr {self.learning_rate:.3g}"
        return f"CROLoss {self.kernel}, alpha {self.alpha:g}, lr {self.learning_rate:.3g}"

    def loss_section(self) -> dict[str, Any]:
        if self.loss == "softmax":
            return {"name": "softmax"}
        return {"name": "croloss", "kernel": self.kernel, "alpha": self.alpha}

    @classmethod
    def from_params(cls, loss: str, params: dict[str, Any]) -> Candidate:
        return cls(loss, float(params["learning_rate"]), params.get("kernel"),
                   None if "alpha" not in params else round(float(params["alpha"]), 6))


@dataclasses.dataclass
class Settings:
    """What a tune searches; checked whole before anything trains, and kept in ``tune.db``: a
    resumed tune must search the same space (the budgets and seeds may change)."""

    target_n: int
    kernels: list[str]
    alpha_range: tuple[float, float]
    rate_range: tuple[float, float]
    base_digest: str

    def check(self) -> None:
        from tfcroloss.kernels import NAMES, WEIGHT_ONLY

        valid = [name for name in NAMES if name not in WEIGHT_ONLY]
        for kernel in self.kernels:
            if kernel not in valid:
                raise config_lib.ConfigError(f"tune --kernels: {unknown_name('kernel', kernel, valid)}")
        if not self.kernels:
            raise config_lib.ConfigError("tune --kernels: give at least one kernel")
        low, high = self.alpha_range
        if not 0 <= low < high:
            raise config_lib.ConfigError(f"tune --alpha-range {low:g},{high:g}: expected 0 <= LOW < HIGH")
        low, high = self.rate_range
        if not 0 < low < high:
            raise config_lib.ConfigError(f"tune --lr-range {low:g},{high:g}: expected 0 < LOW < HIGH")

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "alpha_range": list(self.alpha_range), "rate_range": list(self.rate_range)}


def tune(
    config: config_lib.RunConfig,
    target_n: int,
    output: str | Path,
    *,
    num_items: int,
    kernels: Sequence[str] = KERNELS,
    alpha_range: tuple[float, float] = ALPHA_RANGE,
    rate_range: tuple[float, float] | None = None,
    budget: int = 12,
    budget_minutes: float | None = None,
    seeds: int = SEEDS,
    max_steps: int | None = None,
    reuse_other_code: bool = False,
) -> dict[str, Any]:
    """Runs the tune (or resumes it) and writes the report; returns ``tune.json``'s content."""
    from tfcroloss.models.two_tower import negatives_per_row
    from tfcroloss.pipelines.provenance import code_identity, provenance

    if budget < 1 or seeds < 1 or (budget_minutes is not None and not budget_minutes > 0):
        raise config_lib.ConfigError(f"tune: budget and seeds must be >= 1 and budget_minutes > 0; got {budget}, "
                                     f"{seeds}, {budget_minutes}")
    output = Path(output)
    base = _base_config(config, target_n, max_steps)
    rate = base.training.learning_rate
    settings = Settings(target_n, list(kernels), tuple(float(a) for a in alpha_range),
                        tuple(float(r) for r in rate_range or (rate / RATE_SPREAD, rate * RATE_SPREAD)),
                        hashlib.sha256(base.to_yaml().encode()).hexdigest()[:12])
    settings.check()
    negatives = negatives_per_row(base.negatives.mode, base.training.batch_size, base.negatives.per_positive)
    suggestion = suggest(target_n, num_items, negatives)
    search = _Search(base, settings, output, code=code_identity(), reuse_other_code=reuse_other_code,
                     budget=budget, seconds=None if budget_minutes is None else 60 * budget_minutes, seeds=seeds)
    search.start(suggestion)
    search.run_search()
    report = search.run_seeds()
    report.update(suggested={"kernel": suggestion[0], "alpha": suggestion[1], "negatives": negatives,
                             "num_items": num_items},
                  settings=settings.to_dict(), provenance={**provenance(), **search.code})
    recommended = search.config_of(Candidate(**report["recommended"]["candidate"]), base.training.seed)
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output / "recommended.yaml", f"# tfcroloss tune --target-n {target_n}: {report['answer']}\n"
                      + recommended.to_yaml())
    atomic_write_text(output / "tune.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(output / "tune.md", tune_markdown(report))
    return report


def _base_config(config: config_lib.RunConfig, target_n: int, max_steps: int | None) -> config_lib.RunConfig:
    raw = config.to_dict()
    raw["evaluation"]["ns"] = sorted(set(raw["evaluation"]["ns"]) | {target_n})
    raw["evaluation"]["select_on"] = f"recall@{target_n}"
    if max_steps is not None:
        raw["training"]["max_steps"] = max_steps
        raw["training"]["eval_every"] = min(raw["training"]["eval_every"], max_steps)
    return config_lib.from_dict(raw, source="tune")


PRUNE_KEEP = 75.0  # Optuna's percentile: the top 75% of the finished runs' values at a step are kept
PRUNE_RUNS = 5  # the finished runs needed (in the study, and validated at the step) before any pruning
PRUNE_WARMUP = 0.5  # no pruning before this share of ``max_steps``


def make_pruner(max_steps: int) -> Any:
    """The search's pruner: stops a run whose best validation Recall@N so far is below the 25th
    percentile of the finished runs' at the same step, once five finished runs validated that step
    and from half of ``max_steps`` on; a run close behind the leader is not stopped."""
    import optuna

    return optuna.pruners.PercentilePruner(PRUNE_KEEP, n_startup_trials=PRUNE_RUNS,
                                           n_warmup_steps=math.ceil(PRUNE_WARMUP * max_steps),
                                           n_min_trials=PRUNE_RUNS)


def run_training(config: config_lib.RunConfig, run_dir: Path, *, code: dict[str, Any], reuse_other_code: bool,
                 on_validation: Callable[[], None] | None) -> dict[str, Any]:
    """Trains (or reuses, or resumes) one run; ``on_validation()`` after each of its validations
    (and once before training, for what a resumed run validated before)."""
    import tensorflow as tf

    from tfcroloss.pipelines.training.experiment import train_or_reuse

    class Hook(tf.keras.callbacks.Callback):
        def on_train_begin(self, logs: dict | None = None) -> None:
            on_validation()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            on_validation()

    callbacks = [] if on_validation is None else [Hook()]
    return train_or_reuse(config, run_dir, code=code, reuse_other_code=reuse_other_code, callbacks=callbacks)


class _Curve:
    """Feeds a trial the run's best validation Recall@N so far at each validated step (from its
    ``validation.jsonl``) and prunes it (``optuna.TrialPruned``) when the pruner says so."""

    def __init__(self, trial: Any, run_dir: Path, metric: str):
        self.trial, self.run_dir, self.metric = trial, run_dir, metric
        self.reported: set[int] = set()
        self.last_step = 0

    def report(self) -> None:
        from tfcroloss.pipelines.training.run_directory import VALIDATION_FILE

        path = self.run_dir / VALIDATION_FILE
        records = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        best = -math.inf
        for record in records:
            best = max(best, float(record[self.metric]))
            if record["step"] not in self.reported:
                self.trial.report(best, record["step"])
                self.reported.add(record["step"])
            self.last_step = max(self.last_step, int(record["step"]))

    def __call__(self) -> None:
        import optuna

        self.report()
        if self.reported and self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {self.last_step}")


class _Search:
    """The tune's state: its studies, run directories, budgets and clock."""

    def __init__(self, base: config_lib.RunConfig, settings: Settings, output: Path, *, code: dict[str, Any],
                 reuse_other_code: bool, budget: int, seconds: float | None, seeds: int):
        from tfcroloss.pipelines.training.experiment import Progress

        self.base, self.settings, self.output, self.code = base, settings, output, code
        self.reuse_other_code, self.budget, self.seconds, self.seeds = reuse_other_code, budget, seconds, seeds
        self.metric = f"recall@{settings.target_n}"
        self.seed_list = [base.training.seed + i for i in range(seeds)]
        planned = budget + baseline_budget(budget) + sum(halving_plan(budget, seeds)) + seeds - 1
        self.progress = Progress(planned)
        self.stopped_by: str | None = None
        self.studies: dict[str, Any] = {}

    # ---- runs
    def config_of(self, candidate: Candidate, seed: int) -> config_lib.RunConfig:
        raw = self.base.to_dict()
        raw["loss"] = candidate.loss_section()
        raw["training"]["learning_rate"] = candidate.learning_rate
        raw["training"]["seed"] = seed
        return config_lib.from_dict(raw, source=f"tune candidate {candidate.label}, seed {seed}")

    def run_dir(self, candidate: Candidate, seed: int) -> Path:
        from tfcroloss.pipelines.training.experiment import run_directory

        return run_directory(self.output, candidate.loss, self.config_of(candidate, seed))

    def spent(self) -> float:
        """Training seconds of every run of this tune so far (kept in the runs' ``tune_run.json``)."""
        return sum(json.loads(path.read_text())["seconds"] for path in (self.output / "runs").glob(f"*/*/{TUNE_RUN_FILE}"))

    def _mean_run_seconds(self) -> float:
        records = [json.loads(p.read_text()) for p in (self.output / "runs").glob(f"*/*/{TUNE_RUN_FILE}")]
        finished = [r["seconds"] for r in records if r["state"] == "complete" and r["seconds"] > 0]
        return float(np.mean(finished)) if finished else 0.0

    def _out_of_time(self, reserve_runs: int = 0) -> bool:
        if self.seconds is None:
            return False
        return self.spent() + reserve_runs * self._mean_run_seconds() >= self.seconds

    def train(self, candidate: Candidate, seed: int, what: str, curve: Callable[[Path], _Curve] | None = None
              ) -> tuple[str, dict[str, Any]]:
        """Trains one run (or takes it as it was left): ``("complete", metrics)`` or ``("pruned", record)``."""
        import optuna

        from tfcroloss.pipelines.training.run_directory import METRICS_FILE

        run_dir = self.run_dir(candidate, seed)
        record_path = run_dir / TUNE_RUN_FILE
        hook = curve(run_dir) if curve is not None else None
        if record_path.exists():  # finished (or pruned) before: as it was left
            record = json.loads(record_path.read_text())
            self.progress.finish(None)
            if hook is not None:
                hook.report()
            if record["state"] == "pruned":
                return "pruned", record
            return "complete", json.loads((run_dir / METRICS_FILE).read_text())
        started = self.progress.start(f"{what}: {candidate.label}, seed {seed}")
        clock = _clock()
        try:
            result = run_training(self.config_of(candidate, seed), run_dir, code=self.code,
                                  reuse_other_code=self.reuse_other_code, on_validation=hook)
        except optuna.TrialPruned:
            record = {"state": "pruned", "seconds": _clock() - clock, "steps": hook.last_step}
            atomic_write_text(record_path, json.dumps(record) + "\n")
            self.progress.finish(started)
            print(f"    pruned at step {hook.last_step}: its best validation {self.metric} trailed the earlier runs'",
                  flush=True)
            return "pruned", record
        if hook is not None:
            hook.report()  # the whole curve, for the pruner's later decisions (a finished run is never pruned)
        atomic_write_text(record_path, json.dumps({"state": "complete", "seconds": _clock() - clock,
                                                   "steps": result["steps"]}) + "\n")
        self.progress.finish(started)
        return "complete", result

    # ---- phase 1: the search
    def start(self, suggestion: tuple[str, float]) -> None:
        """Opens (or reopens) the studies; a trial a kill left running is told failed and asked again."""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.output.mkdir(parents=True, exist_ok=True)
        storage = f"sqlite:///{(self.output / STORAGE_FILE).resolve()}"
        pruner = make_pruner(self.base.training.max_steps)
        for name in STUDIES:
            study = optuna.create_study(study_name=name, storage=storage, direction="maximize", pruner=pruner,
                                        load_if_exists=True)
            saved = study.user_attrs.get("settings")
            if saved is not None and saved != self.settings.to_dict():
                changed = sorted(key for key in saved if saved[key] != self.settings.to_dict().get(key))
                raise config_lib.ConfigError(
                    f"{self.output} holds a tune of other settings ({', '.join(changed)} differ); "
                    "give another --output, or the same settings to resume it")
            if not study.trials:
                for params in self._starting_points(name, suggestion):
                    self._enqueue(study, params)
            study.set_user_attr("settings", self.settings.to_dict())
            for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
                study.tell(trial.number, state=optuna.trial.TrialState.FAIL)  # never counts
                if trial.params:
                    self._enqueue(study, trial.params)
            self.studies[name] = study

    @staticmethod
    def _enqueue(study: Any, params: dict[str, Any]) -> None:
        import optuna

        waiting = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
        if all(trial.system_attrs.get("fixed_params") != params for trial in waiting):
            study.enqueue_trial(params)

    def _starting_points(self, name: str, suggestion: tuple[str, float]) -> list[dict[str, Any]]:
        """Softmax at the config's rate (inside the range); CROLoss with the rule's alpha and each of
        ``RULE_KERNELS`` that ``--kernels`` allows (its first kernel if none), at that rate."""
        low, high = self.settings.rate_range
        rate = self.base.training.learning_rate
        params: dict[str, Any] = {"learning_rate": rate if low <= rate <= high else math.sqrt(low * high)}
        if name == "softmax":
            return [params]
        low, high = self.settings.alpha_range
        alpha = round(low + round((min(high, max(low, suggestion[1])) - low) / ALPHA_STEP) * ALPHA_STEP, 6)
        kernels = [kernel for kernel in RULE_KERNELS if kernel in self.settings.kernels] or self.settings.kernels[:1]
        return [{"kernel": kernel, "alpha": alpha, **params} for kernel in kernels]

    def _trials(self, name: str, *states: str) -> list[Any]:
        import optuna

        wanted = tuple(getattr(optuna.trial.TrialState, state.upper()) for state in states)
        return self.studies[name].get_trials(deepcopy=False, states=wanted)

    def _plan(self) -> list[str]:
        """The studies' trials in the order they run: both studies' first trials, then the rest of
        each spread evenly through the search."""
        cro, ce = self.budget, baseline_budget(self.budget)
        rest = sorted([(i / cro, "croloss") for i in range(1, cro)] + [(j / ce, "softmax") for j in range(1, ce)])
        return ["croloss", "softmax"] + [name for _, name in rest]

    def run_search(self) -> None:
        finished = {name: len(self._trials(name, "complete", "pruned")) for name in STUDIES}
        seen = dict.fromkeys(STUDIES, 0)
        for name in self._plan():
            if seen[name] < finished[name]:
                seen[name] += 1
                continue
            reserve = sum(halving_plan(len(self._trials("croloss", "complete")) + 1, self.seeds)) + self.seeds - 1
            if seen[name] > 0 and self._out_of_time(reserve):
                self.stopped_by = "time budget"
                print(f"tune: the time budget stops the search ({self.spent() / 60:.1f} min spent, the seeds "
                      "phase's runs reserved)", flush=True)
                return
            self._trial(name, seen[name])
            seen[name] += 1

    def _trial(self, name: str, done: int) -> None:
        import optuna

        study = self.studies[name]
        count = self.budget if name == "croloss" else baseline_budget(self.budget)
        # reseeded from the finished trials: a resumed search asks what an uninterrupted one would have
        study.sampler = optuna.samplers.TPESampler(seed=done + STUDIES.index(name) * 100_003,
                                                   n_startup_trials=max(2, count // 3), multivariate=True)
        trial = study.ask()
        if name == "croloss":
            trial.suggest_categorical("kernel", self.settings.kernels)
            trial.suggest_float("alpha", *self.settings.alpha_range, step=ALPHA_STEP)
        trial.suggest_float("learning_rate", *self.settings.rate_range, log=True)
        candidate = Candidate.from_params(name, trial.params)
        state, result = self.train(candidate, self.seed_list[0], f"search {name} {done + 1}/{count}",
                                   curve=lambda run_dir: _Curve(trial, run_dir, self.metric))
        if state == "pruned":
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, float(result["validation"][self.metric]))

    # ---- phase 2: seeds
    def per_user(self, candidate: Candidate, split: str, metric: str, seeds: int | None = None) -> np.ndarray:
        """``[seeds, users]``: the candidate's per-user ``metric`` on ``split``, one row per finished
        seed among its first ``seeds`` (all by default): a rung compares what it gave each candidate,
        also when a resumed tune finds later seeds already trained."""
        from tfcroloss.pipelines.training.evaluate import read_per_user

        rows = []
        for seed in self.seed_list[:seeds]:
            kept = read_per_user(self.run_dir(candidate, seed))
            if kept is not None:
                rows.append(kept[f"{split}/{metric}"])
        return np.stack(rows)

    def _more_seeds(self, candidate: Candidate, have: int) -> bool:
        """Trains the candidate's seed number ``have + 1``; False when the time budget is spent."""
        if self._out_of_time():
            self.stopped_by = "time budget"
            return False
        self.train(candidate, self.seed_list[have], f"seeds (rung {have})")
        return True

    def run_seeds(self) -> dict[str, Any]:
        best_ce = max(self._trials("softmax", "complete"), key=lambda t: t.value)
        softmax = Candidate.from_params("softmax", best_ce.params)
        for have in range(1, self.seeds):
            if not self._more_seeds(softmax, have):
                break
        ranked = sorted(self._trials("croloss", "complete"), key=lambda t: -t.value)
        survivors = list(dict.fromkeys(Candidate.from_params("croloss", t.params) for t in ranked))
        rungs, cut = [], []
        for have in range(1, self.seeds):
            survivors, rung, cut = self._rung(survivors, have)
            rungs.append(rung)
            if not all(self._more_seeds(candidate, have) for candidate in survivors):
                break
        # the finalists: the survivors, and those the last rung stopped while tied with its leader
        contenders = self._ranked(survivors)
        recommended = contenders[0]
        finalists = [self._entry(c, self._paired(c, recommended, "valid", self.metric)) for c in contenders + cut]
        return self._report(recommended, softmax, finalists, rungs)
    def _ranked(self, candidates: list[Candidate], seeds: int | None = None) -> list[Candidate]:
        return sorted(candidates, key=lambda c: -float(self.per_user(c, "valid", self.metric, seeds).mean()))

    def _paired(self, ours: Candidate, theirs: Candidate, split: str, metric: str, seeds: int | None = None
                ) -> Interval:
        return paired_bootstrap(self.per_user(ours, split, metric, seeds), self.per_user(theirs, split, metric, seeds))

    def _entry(self, candidate: Candidate, interval: Interval | None, seeds: int | None = None) -> dict[str, Any]:
        runs = self.per_user(candidate, "valid", self.metric, seeds)
        return {"label": candidate.label, "candidate": dataclasses.asdict(candidate), "seeds": len(runs),
                "validation": float(runs.mean()), "vs_leader": None if interval is None else interval.to_dict()}

    def _rung(self, candidates: list[Candidate], have: int
              ) -> tuple[list[Candidate], dict[str, Any], list[Candidate]]:
        """The candidates that get seed ``have + 1``: the leader, then those whose paired validation
        interval with it holds zero, best first, at most half of the rung (successive halving);
        also the rung's record, and the tied candidates that the cap stopped."""
        ranked = self._ranked(candidates, have)
        leader, cap = ranked[0], halving_plan(len(ranked), 2)[0]
        advance, entries, cut = [leader], [self._entry(leader, None, have) | {"advances": True}], []
        for candidate in ranked[1:]:
            interval = self._paired(candidate, leader, "valid", self.metric, have)
            goes = interval.verdict() != "worse" and len(advance) < cap
            if goes:
                advance.append(candidate)
            elif interval.verdict() == "tie":
                cut.append(candidate)
            entries.append(self._entry(candidate, interval, have) | {"advances": goes})
        return advance, {"seeds": have, "candidates": entries}, cut

    # ---- phase 3: the report
    def _report(self, recommended: Candidate, softmax: Candidate, finalists: list[dict[str, Any]],
                rungs: list[dict[str, Any]]) -> dict[str, Any]:
        ns = self.base.evaluation.ns
        gains = {f"recall@{n}": self._paired(recommended, softmax, "test", f"recall@{n}").to_dict() for n in ns}
        tests = {label: {f"recall@{n}": float(self.per_user(c, "test", f"recall@{n}").mean()) for n in ns}
                 for label, c in (("recommended", recommended), ("softmax", softmax))}
        records = [json.loads(p.read_text()) for p in (self.output / "runs").glob(f"*/*/{TUNE_RUN_FILE}")]
        trials = [{"study": name, "number": t.number, "state": t.state.name.lower(), "params": t.params,
                   "validation": t.value} for name in STUDIES for t in self._trials(name, "complete", "pruned", "fail")]
        report = {
            "target_n": self.settings.target_n,
            "ns": ns,
            "recommended": self._entry(recommended, None) | {"test": tests["recommended"]},
            "softmax": self._entry(softmax, None) | {"test": tests["softmax"]},
            "gain_over_softmax": gains,
            "validation_gain_over_softmax": self._paired(recommended, softmax, "valid", self.metric).to_dict(),
            "tied_with_recommended": [f for f in finalists[1:] if Interval.from_dict(f["vs_leader"]).overlaps_zero],
            "finalists": finalists,
            "rungs": rungs,
            "trials": trials,
            "compute": {"runs": len(records), "pruned": sum(r["state"] == "pruned" for r in records),
                        "steps": int(sum(r["steps"] for r in records)),
                        "seconds": round(sum(r["seconds"] for r in records), 1)},
            "budget": {"runs": self.budget, "baseline_runs": baseline_budget(self.budget), "seeds": self.seeds,
                       "minutes": None if self.seconds is None else self.seconds / 60, "stopped_by": self.stopped_by},
        }
        report["answer"] = answer_line(report)
        return report


def answer_line(report: dict[str, Any]) -> str:
    """The line a user came for: the recommendation's test Recall@N against softmax CE at the
    target N with its interval, then at the other Ns."""
    n, ns = report["target_n"], report["ns"]
    ours, theirs = report["recommended"], report["softmax"]
    gain = Interval.from_dict(report["gain_over_softmax"][f"recall@{n}"])
    verdict = {"better": "a gain", "worse": "a loss", "tie": "a tie: cannot be told apart from softmax CE"}
    others = ", ".join(f"@{m} {Interval.from_dict(report['gain_over_softmax'][f'recall@{m}']).describe()}"
                       for m in ns if m != n)
    return (f"Test Recall@{n}: {100 * ours['test'][f'recall@{n}']:.2f}% with {ours['label']} vs "
            f"{100 * theirs['test'][f'recall@{n}']:.2f}% with {theirs['label']}: {gain.describe()} "
            f"({verdict[gain.verdict()]}; 95% paired bootstrap over {gain.users} test users, "
            f"{gain.seeds[0]} vs {gain.seeds[1]} seeds)" + (f"; other N: {others}" if others else "") + ".")


def tune_markdown(report: dict[str, Any]) -> str:
    """``tune.md``: the answer first, then what it rests on (ties, intervals, rungs, trials, compute)."""
    from tfcroloss.pipelines.training.report import markdown_table

    n, metric = report["target_n"], f"recall@{report['target_n']}"
    tied = report["tied_with_recommended"]
    lines = [report["answer"], ""]
    if tied:
        lines.append(f"The recommendation cannot be told apart on validation Recall@{n} from "
                     + "; ".join(f"{t['label']} ({Interval.from_dict(t['vs_leader']).describe()}, {t['seeds']} seeds)"
                                 for t in tied)
                     + ": any of them is as good a choice on this data.")
    else:
        lines.append(f"No finalist is tied with the recommendation on validation Recall@{n} (paired intervals below).")
    suggested = report["suggested"]
    starts = [k for k in RULE_KERNELS if k in report["settings"]["kernels"]] or report["settings"]["kernels"][:1]
    lines += ["", f"Recommended run config: `recommended.yaml`. Rule of thumb's alpha (the search's first trials, "
              f"with {' and '.join(starts)}): {suggested['alpha']:g}.", "",
              f"## Test Recall@N, recommended vs softmax CE ({report['recommended']['seeds']} and "
              f"{report['softmax']['seeds']} seeds)", ""]
    rows = [[f"{m}", f"{100 * report['recommended']['test'][f'recall@{m}']:.2f}",
             f"{100 * report['softmax']['test'][f'recall@{m}']:.2f}",
             Interval.from_dict(report["gain_over_softmax"][f"recall@{m}"]).describe()] for m in report["ns"]]
    lines.append(markdown_table(["N", "recommended", "softmax CE", "gain [95% paired interval]"], rows))
    lines += [f"## Seeds phase (validation Recall@{n}, mean over seeds; interval against the rung's leader; "
              "final: the survivors and the tied candidates the last rung stopped, against the recommendation)", ""]
    rows = []
    for rung in report["rungs"]:
        for entry in rung["candidates"]:
            versus = "leader" if entry["vs_leader"] is None else Interval.from_dict(entry["vs_leader"]).describe()
            rows.append([str(rung["seeds"]), entry["label"], f"{100 * entry['validation']:.2f}", versus,
                         "yes" if entry["advances"] else "no"])
    for entry in report["finalists"]:
        versus = "recommended" if entry is report["finalists"][0] else Interval.from_dict(entry["vs_leader"]).describe()
        rows.append([f"final ({entry['seeds']})", entry["label"], f"{100 * entry['validation']:.2f}", versus, ""])
    lines.append(markdown_table(["seeds", "candidate", f"validation {metric}", "vs leader", "more seeds"], rows))
    lines += ["## Search trials (first seed)", ""]
    rows = [[t["study"], str(t["number"]), t["state"], ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                                                for k, v in t["params"].items()),
             "" if t["validation"] is None else f"{100 * t['validation']:.2f}"] for t in report["trials"]]
    lines.append(markdown_table(["study", "trial", "state", "parameters",
                                 f"validation {metric} (pruned: best before it was stopped)"], rows))
    compute, budget = report["compute"], report["budget"]
    lines.append(f"Compute: {compute['runs']} runs ({compute['pruned']} pruned), {compute['steps']:,} training steps, "
                 f"{compute['seconds'] / 60:.1f} min of training. Budget: {budget['runs']} CROLoss and "
                 f"{budget['baseline_runs']} softmax search runs, {budget['seeds']} seeds"
                 + (f", {budget['minutes']:g} min" if budget["minutes"] else "")
                 + (f"; stopped by the {budget['stopped_by']}" if budget["stopped_by"] else "") + ".")
    return "\n".join(lines) + "\n"


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


def rule_error(curves: dict[str, dict[float, dict[int, float]]], num_items: int, negatives: int,
               rule: Callable[[int, int, int], tuple[str, float]] = suggest) -> list[dict[str, Any]]:
    """For each kernel and N: the best measured alpha, the rule's alpha, the Recall@N at the rule's
    alpha (linear between the two measured alphas around it, the nearest end outside them) and the
    Recall@N lost by taking it instead of the best (absolute and relative to the best)."""
    rows = []
    for kernel, by_alpha in sorted(curves.items()):
        alphas = sorted(by_alpha)
        for n in sorted(set.intersection(*(set(v) for v in by_alpha.values()))):
            best = max(alphas, key=lambda a, n=n: by_alpha[a][n])
            suggested = rule(n, num_items, negatives)[1]
            at_rule = float(np.interp(suggested, alphas, [by_alpha[a][n] for a in alphas]))
            lost = by_alpha[best][n] - at_rule
            rows.append({"kernel": kernel, "n": n, "best_alpha": best, "rule_alpha": suggested,
                         "recall_best": by_alpha[best][n], "recall_at_rule": at_rule,
                         "recall_lost": lost, "relative_lost": lost / by_alpha[best][n] if by_alpha[best][n] else 0.0})
    return rows
