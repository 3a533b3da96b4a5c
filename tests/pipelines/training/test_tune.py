"""`tfcroloss tune`: the Optuna search with the softmax baseline, pruning, budgets, resuming after a
kill, successive halving over seeds, and the report's first line.

Most tests replace the training of one run (``tune.run_training``) by a fake that writes what a run
writes (``validation.jsonl``, ``metrics.json``, ``per_user.npz``) from a known function of the
configuration, so that the search's logic is checked in seconds; one test trains for real.
"""

import hashlib
import json
import math

import numpy as np
import optuna
import pytest

from tests.conftest import tiny_config
from tfcroloss.pipelines.training import config as config_lib
from tfcroloss.pipelines.training import tune
from tfcroloss.pipelines.training.evaluate import PER_USER_FILE
from tfcroloss.pipelines.training.intervals import Interval

USERS = 60


@pytest.fixture(autouse=True)
def fixed_code_digest(monkeypatch):
    """The working tree is shared: an edit elsewhere between two runs must not make a test refuse its own runs."""
    from tfcroloss.pipelines import provenance

    monkeypatch.setattr(provenance, "code_digest", lambda: "this-code")


def quality(config: config_lib.RunConfig) -> float:
    """The fake's validation Recall@N at convergence: best near sigmoid, alpha 1.2, lr 0.01."""
    rate = abs(math.log10(config.training.learning_rate / 0.01))
    loss = config.loss
    if loss.name == "softmax":
        return 0.25 - 0.05 * rate
    bonus = {"sigmoid": 0.02, "softplus": 0.01, "exponential": 0.0}[loss.params["kernel"]]
    return 0.28 + bonus - 0.1 * (loss.params["alpha"] - 1.2) ** 2 - 0.05 * rate


class FakeTraining:
    """Writes a run's files as training would, calling ``on_validation`` after each validation;
    ``kill_at`` raises KeyboardInterrupt (as a kill would stop it) in the middle of that call's run."""

    def __init__(self, clock, kill_at=None):
        self.calls, self.clock, self.kill_at = 0, clock, kill_at

    def __call__(self, config, run_dir, *, code, reuse_other_code, on_validation):
        self.calls += 1
        training, metric = config.training, config.evaluation.select_on
        run_dir.mkdir(parents=True, exist_ok=True)
        log = run_dir / "validation.jsonl"
        done = [json.loads(line)["step"] for line in log.read_text().splitlines()] if log.exists() else []
        target = quality(config) + 0.003 * training.seed
        if on_validation is not None:
            on_validation()
        for step in range(training.eval_every, training.max_steps + 1, training.eval_every):
            if step in done:
                continue
            if self.calls == self.kill_at and step > training.max_steps // 2:
                raise KeyboardInterrupt
            self.clock[0] += 60 * training.eval_every / training.max_steps
            with open(log, "a") as file:
                file.write(json.dumps({"step": step, metric: target * (1 - 0.5 ** (step / training.eval_every))}) + "\n")
            if on_validation is not None:
                on_validation()
        users = np.random.default_rng(0).uniform(-0.1, 0.1, USERS)  # the same users' easy/hard part every run
        digest = int(hashlib.sha256(config.to_yaml().encode()).hexdigest()[:8], 16)
        noise = np.random.default_rng([training.seed, digest]).normal(0, 0.02, USERS)
        arrays = {}
        for split in ("valid", "test"):
            arrays[f"{split}/users"] = np.arange(USERS)
            for n in config.evaluation.ns:
                arrays[f"{split}/recall@{n}"] = np.clip(target * n / 10 + users + noise, 0, 1).astype(np.float32)
        np.savez(run_dir / PER_USER_FILE, **arrays)
        best = max(json.loads(line)[metric] for line in log.read_text().splitlines())
        result = {"validation": {metric: best}, "steps": training.max_steps, "best_step": training.max_steps,
                  "test": {k.split("/")[1]: float(v.mean()) for k, v in arrays.items() if k.startswith("test/recall")}}
        (run_dir / "metrics.json").write_text(json.dumps(result))
        return result


@pytest.fixture
def fake(monkeypatch):
    clock = [0.0]
    training = FakeTraining(clock)
    monkeypatch.setattr(tune, "run_training", training)
    monkeypatch.setattr(tune, "_clock", lambda: clock[0])
    return training


@pytest.fixture
def base(tiny_dataset):
    return tiny_config(tiny_dataset, training={"max_steps": 100, "eval_every": 10, "learning_rate": 0.01},
                       evaluation={"ns": [5, 10, 20]})


def searched(output):
    """Every finished trial of both studies, in order: (study, state, params)."""
    storage = f"sqlite:///{output / tune.STORAGE_FILE}"
    rows = []
    for name in tune.STUDIES:
        study = optuna.load_study(study_name=name, storage=storage)
        rows += [(name, t.state.name, t.params) for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    return rows


def test_suggestion_moves_alpha_down_as_n_grows_relative_to_the_catalog():
    alphas = [tune.suggest(n, 25_000, 256)[1] for n in (5, 50, 500, 5000)]
    assert alphas == sorted(alphas, reverse=True)
    assert all(tune.ALPHA_MIN <= a <= tune.ALPHA_MAX for a in alphas)
    with pytest.raises(ValueError, match="n, num_items and negatives"):
        tune.suggest(0, 10, 5)


def test_budgets_of_the_baseline_and_of_the_seeds_phase():
    assert [tune.baseline_budget(b) for b in (1, 2, 6, 12, 13)] == [1, 2, 2, 4, 5]
    assert tune.halving_plan(12, 3) == [6, 3] and tune.halving_plan(1, 3) == [1, 1] and tune.halving_plan(5, 1) == []


def test_search_with_the_baseline_the_rule_first_pruning_and_seeds(fake, base, tmp_path, capsys):
    report = tune.tune(base, 10, tmp_path / "t", num_items=60, budget=9, seeds=3)
    rows = searched(tmp_path / "t")
    cro = [r for r in rows if r[0] == "croloss"]
    ce = [r for r in rows if r[0] == "softmax"]
    assert len(cro) == 9 and len(ce) == tune.baseline_budget(9)  # the run budget, and the baseline always
    _, alpha = tune.suggest(10, 60, negatives=64)
    # the rule of thumb's alpha first, with each kernel it was fitted on
    assert [params for _, _, params in cro[:2]] == [{"kernel": kernel, "alpha": alpha, "learning_rate": 0.01}
                                                     for kernel in tune.RULE_KERNELS]
    assert ce[0][2] == {"learning_rate": 0.01}
    assert any(state == "PRUNED" for _, state, _ in rows)
    assert report["compute"]["pruned"] == sum(state == "PRUNED" for _, state, _ in rows)
    # the recommendation and softmax CE have every seed; the search's finalists were halved
    assert report["recommended"]["seeds"] == 3 and report["softmax"]["seeds"] == 3
    completed = sum(state == "COMPLETE" for name, state, _ in cro)
    assert [len(rung["candidates"]) for rung in report["rungs"]][0] == completed
    assert sum(e["advances"] for e in report["rungs"][0]["candidates"]) <= tune.halving_plan(completed, 2)[0]
    for rung in report["rungs"]:  # the leader, then only candidates whose interval with it holds zero
        leader, *others = rung["candidates"]
        assert leader["advances"] and leader["vs_leader"] is None
        for entry in others:
            verdict = Interval.from_dict(entry["vs_leader"]).verdict()
            assert verdict != "better" and (verdict == "tie" or not entry["advances"])
    stopped_tied = [e["label"] for e in report["rungs"][-1]["candidates"][1:]
                    if not e["advances"] and Interval.from_dict(e["vs_leader"]).verdict() == "tie"]
    assert set(stopped_tied) <= {f["label"] for f in report["finalists"]}  # named, not dropped
    finalists = report["finalists"]
    assert finalists[0]["label"] == report["recommended"]["label"]
    assert all(f["validation"] <= finalists[0]["validation"] for f in finalists)
    # the answer comes first, with its interval; the run config is the recommendation
    first = (tmp_path / "t" / "tune.md").read_text().splitlines()[0]
    assert first == report["answer"] and first.startswith("Test Recall@10: ")
    gain = report["gain_over_softmax"]["recall@10"]
    assert f"[{100 * gain['relative_low']:+.1f}%, {100 * gain['relative_high']:+.1f}%]" in first
    assert "other N: @5 " in first and "@20 " in first
    recommended = config_lib.load(tmp_path / "t" / "recommended.yaml")
    assert recommended.loss.params == {k: report["recommended"]["candidate"][k] for k in ("kernel", "alpha")}
    assert recommended.evaluation.select_on == "recall@10"
    assert "ETA" in capsys.readouterr().out


@pytest.mark.parametrize(("kernels", "starts"), [(("sigmoid", "exponential"), ["sigmoid"]),
                                                 (("exponential",), ["exponential"])])
def test_the_search_starts_from_the_rule_kernels_that_kernels_allows(fake, base, tmp_path, kernels, starts):
    tune.tune(base, 10, tmp_path / "t", num_items=60, budget=2, seeds=1, kernels=kernels)
    _, alpha = tune.suggest(10, 60, negatives=64)
    first = [params for name, _, params in searched(tmp_path / "t") if name == "croloss"][:len(starts)]
    assert first == [{"kernel": kernel, "alpha": alpha, "learning_rate": 0.01} for kernel in starts]
    assert f"with {starts[0]}): {alpha:g}" in (tmp_path / "t" / "tune.md").read_text()


def test_the_pruner_stops_a_hopeless_run_not_one_close_behind_the_leader(tmp_path):
    """Nothing is pruned before five runs have finished (the first, at 0.05 validation Recall@10, is
    kept); then, with finished runs at 0.05 and 0.27-0.30, a run that ends at 0.275 (below their median) is never pruned
    and one that ends at 0.20 is pruned at the first step past the warm-up (half of max_steps)."""
    max_steps, every = 100, 10

    def curve(final, step):
        return final * (1 - 0.5 ** (step / every))

    def train(study, final, number):
        """Feeds the run's validations to the pruner as the tune does; the step it was pruned at, or None."""
        trial = study.ask()
        run_dir = tmp_path / f"run{number}"
        run_dir.mkdir()
        hook = tune._Curve(trial, run_dir, "recall@10")
        for step in range(every, max_steps + 1, every):
            with open(run_dir / "validation.jsonl", "a") as file:
                file.write(json.dumps({"step": step, "recall@10": curve(final, step)}) + "\n")
            try:
                hook()
            except optuna.TrialPruned:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                return step
        study.tell(trial, curve(final, max_steps))
        return None

    study = optuna.create_study(direction="maximize", pruner=tune.make_pruner(max_steps))
    assert train(study, 0.05, 0) is None  # no pruning before five finished runs
    for number, final in enumerate((0.30, 0.29, 0.28, 0.27), start=1):
        assert train(study, final, number) is None
    assert train(study, 0.275, 5) is None  # below the median, close behind the leader: kept
    assert train(study, 0.20, 6) == max_steps // 2  # hopeless: pruned once the warm-up is over


def test_a_killed_search_resumes_with_the_same_trials_none_counted_twice(monkeypatch, fake, base, tmp_path):
    whole = tune.tune(base, 10, tmp_path / "whole", num_items=60, budget=6, seeds=2)
    fake.calls, fake.kill_at = 0, 4  # the 4th run is killed half-way
    with pytest.raises(KeyboardInterrupt):
        tune.tune(base, 10, tmp_path / "killed", num_items=60, budget=6, seeds=2)
    fake.kill_at = None
    resumed = tune.tune(base, 10, tmp_path / "killed", num_items=60, budget=6, seeds=2)
    assert searched(tmp_path / "killed") == searched(tmp_path / "whole")
    assert [t["state"] for t in resumed["trials"]].count("fail") == 1  # told failed, never counted
    assert resumed["recommended"] == whole["recommended"] and resumed["answer"] == whole["answer"]
    calls = fake.calls
    again = tune.tune(base, 10, tmp_path / "killed", num_items=60, budget=6, seeds=2)  # all done: nothing trains
    assert fake.calls == calls and again["answer"] == whole["answer"]


def test_the_time_budget_stops_the_search_and_keeps_the_seeds_phase(fake, base, tmp_path):
    report = tune.tune(base, 10, tmp_path / "t", num_items=60, budget=20, seeds=2, budget_minutes=8)
    assert report["budget"]["stopped_by"] == "time budget"
    assert report["compute"]["seconds"] <= 8 * 60 + 60  # no run starts once it is spent (one run is 60 s)
    assert report["recommended"]["seeds"] == 2 and report["softmax"]["seeds"] == 2
    assert len([r for r in searched(tmp_path / "t") if r[0] == "croloss"]) < 20


def test_a_resumed_tune_must_search_the_same_space(fake, base, tmp_path):
    tune.tune(base, 10, tmp_path / "t", num_items=60, budget=2, seeds=1)
    with pytest.raises(config_lib.ConfigError, match="holds a tune of other settings \\(alpha_range differ\\)"):
        tune.tune(base, 10, tmp_path / "t", num_items=60, budget=2, seeds=1, alpha_range=(0.5, 2.0))


def test_tune_trains_for_real_and_the_command_states_the_gain(tiny_dataset, tmp_path, capsys):
    from tfcroloss.pipelines.cli import main

    config = tiny_config(tiny_dataset, training={"max_steps": 20, "eval_every": 10})
    (tmp_path / "run.yaml").write_text(config.to_yaml())
    args = ["tune", "--config", str(tmp_path / "run.yaml"), "--target-n", "5", "--output", str(tmp_path / "t"),
            "--kernels", "softplus,sigmoid", "--budget", "1", "--seeds", "2"]
    assert main(args) == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "t" / "tune.json").read_text())
    assert f"\n{report['answer']}\n" in out and report["answer"].startswith("Test Recall@5: ")
    assert report["provenance"]["code_digest"] and report["recommended"]["seeds"] == 2
    assert report["compute"]["runs"] == 1 + 1 + 2  # search, softmax's rate, then one more seed each
    for run in (tmp_path / "t" / "runs").glob("*/*"):
        assert (run / PER_USER_FILE).exists() and (run / tune.TUNE_RUN_FILE).exists()
    assert main(args) == 0  # resumed: everything is reused
    assert "] search" not in capsys.readouterr().out


@pytest.mark.parametrize(("option", "value", "problem"), [
    ("--alpha-range", "2,1", "--alpha-range '2,1': expected LOW,HIGH, two numbers with LOW < HIGH"),
    ("--lr-range", "0.1", "--lr-range '0.1': expected LOW,HIGH"),
    ("--lr-range", "0,0.1", "tune --lr-range 0,0.1: expected 0 < LOW < HIGH"),
    ("--kernels", "softplus,cosine", "tune --kernels: unknown kernel 'cosine'"),
    ("--kernels", "unit_step", "tune --kernels: unknown kernel 'unit_step'"),
])
def test_bad_options_are_one_line(tiny_dataset, tmp_path, capsys, option, value, problem):
    from tfcroloss.pipelines.cli import main

    (tmp_path / "run.yaml").write_text(tiny_config(tiny_dataset).to_yaml())
    code = main(["tune", "--config", str(tmp_path / "run.yaml"), "--target-n", "5", "--output", str(tmp_path / "t"),
                 f"{option}={value}"])
    error = capsys.readouterr().err
    assert code == 2 and error.startswith("tfcroloss tune: error: ") and problem in error and error.count("\n") == 1
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize("option", [["--budget", "0"], ["--budget-minutes", "-5"], ["--budget-minutes", "nan"],
                                    ["--seeds", "0"]])
def test_bad_numbers_are_refused_by_the_parser(option, capsys):
    from tfcroloss.pipelines.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["tune", "--config", "x.yaml", "--target-n", "5", *option])
    assert exit_.value.code == 2 and f"argument {option[0]}: expected" in capsys.readouterr().err


def test_rule_error_measures_the_recall_lost_by_the_suggestion():
    def result(name, recall, **loss):
        return {"loss": {"name": name, **loss}, "mean": {"recall@10": recall, "recall@500": 1 - recall}}

    results = {"a": result("softmax", 0.30), "b": result("croloss", 0.20, kernel="softplus", alpha=0.6),
               "c": result("croloss", 0.25, kernel="softplus", alpha=2.0),
               "d": result("croloss", 0.9, kernel="softplus", alpha=1.0, overrides={"negatives.mode": "in_batch"})}
    curves = tune.alpha_curves(results)
    assert curves == {"exponential": {1.0: {10: 0.30, 500: 0.70}},
                      "softplus": {0.6: {10: 0.20, 500: 0.80}, 2.0: {10: 0.25, 500: 0.75}}}
    rows = {(r["kernel"], r["n"]): r for r in tune.rule_error(curves, num_items=100_000, negatives=100)}
    small = rows[("softplus", 10)]  # N M / |I| = 0.01: the rule says a large alpha, here the best one
    assert small["best_alpha"] == 2.0 and small["rule_alpha"] == 2.0 and small["recall_lost"] == 0
    large = rows[("softplus", 500)]  # N M / |I| = 0.5: the rule says 1.2, between the measured 0.6 and 2.0
    assert large["best_alpha"] == 0.6 and large["rule_alpha"] == 1.2
    assert large["recall_at_rule"] == pytest.approx(0.80 + (1.2 - 0.6) / (2.0 - 0.6) * (0.75 - 0.80))
    assert large["recall_lost"] == pytest.approx(0.80 - large["recall_at_rule"])
