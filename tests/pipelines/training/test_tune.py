"""`tfcroloss tune`: a budgeted, resumable kernel x alpha x rate search on validation Recall@N."""

import json

import pytest

from tests.conftest import tiny_config
from tfcroloss.pipelines.training import config as config_lib
from tfcroloss.pipelines.training import tune


@pytest.fixture(autouse=True)
def fixed_code_digest(monkeypatch):
    """The working tree is shared: an edit elsewhere between two runs must not make a test refuse its own runs."""
    from tfcroloss.pipelines import provenance

    monkeypatch.setattr(provenance, "code_digest", lambda: "this-code")


def test_suggestion_moves_alpha_down_as_n_grows_relative_to_the_catalog():
    alphas = [tune.suggest(n, 25_000, 256)[1] for n in (5, 50, 500, 5000)]
    assert alphas == sorted(alphas, reverse=True)
    assert all(tune.ALPHA_MIN <= a <= tune.ALPHA_MAX for a in alphas)
    with pytest.raises(ValueError, match="n, num_items and negatives"):
        tune.suggest(0, 10, 5)


def test_candidates_start_near_the_suggestion_and_respect_the_budget():
    kernel, alpha = tune.suggest(20, 1000, 64)
    chosen = tune.candidates(20, 1000, 64, ["sigmoid", "softplus"], [0.6, 1.0, 1.4, 2.0], [0.01, 0.02], budget=3)
    assert len(chosen) == 3
    assert chosen[0].kernel == kernel and abs(chosen[0].alpha - alpha) == min(
        abs(a - alpha) for a in [0.6, 1.0, 1.4, 2.0])


def test_tune_writes_a_recommendation_and_resumes(tiny_dataset, tmp_path, capsys):
    config = tiny_config(tiny_dataset, training={"max_steps": 20, "eval_every": 10})
    kwargs = dict(num_items=60, kernels=["sigmoid", "softplus"], alphas=[1.0, 1.4], learning_rates=[0.02],
                  budget=3, max_steps=20)
    report = tune.tune(config, 5, tmp_path / "tune", **kwargs)
    assert len(report["runs"]) == 3
    best = max(report["runs"], key=lambda r: r["validation"])
    assert report["recommended"]["validation"] == best["validation"]
    recommended = config_lib.load(tmp_path / "tune" / "recommended.yaml")
    assert recommended.loss.params == {"kernel": best["kernel"], "alpha": best["alpha"]}
    assert recommended.evaluation.select_on == "recall@5" and 5 in recommended.evaluation.ns
    assert "Recommended" in (tmp_path / "tune" / "tune.md").read_text()
    assert "[3/3]" in capsys.readouterr().out  # progress

    again = tune.tune(config, 5, tmp_path / "tune", **kwargs)  # every run is finished: reused
    assert "[1/3]" not in capsys.readouterr().out
    assert again["runs"] == report["runs"]
    assert json.loads((tmp_path / "tune" / "tune.json").read_text())["provenance"]["code_digest"]


def test_tune_command(tiny_dataset, tmp_path, capsys):
    from tfcroloss.pipelines.cli import main

    (tmp_path / "run.yaml").write_text(tiny_config(tiny_dataset, training={"max_steps": 10, "eval_every": 10}).to_yaml())
    code = main(["tune", "--config", str(tmp_path / "run.yaml"), "--target-n", "10", "--output", str(tmp_path / "t"),
                 "--kernels", "softplus", "--alphas", "1.0", "--budget", "1"])
    assert code == 0
    assert "recommended run config" in capsys.readouterr().out
    assert (tmp_path / "t" / "recommended.yaml").exists()


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
