"""The experiment runner: the file checked at load, fair tuning, seeds, tables, plots, claims, and resuming."""

import json

import numpy as np
import pytest
import yaml

from tests.conftest import tiny_config
from tfcroloss.pipelines import provenance
from tfcroloss.pipelines.training import config as config_lib
from tfcroloss.pipelines.training import experiment, experiment_spec, report
from tfcroloss.pipelines.training.evaluate import read_per_user


@pytest.fixture(autouse=True)
def fixed_code_digest(monkeypatch):
    """The working tree is shared: an edit elsewhere between two runs must not make a test refuse its own runs."""
    monkeypatch.setattr(provenance, "code_digest", lambda: "this-code")


@pytest.fixture
def spec_file(tiny_dataset, tmp_path):
    base = tiny_config(tiny_dataset, training={"max_steps": 20, "eval_every": 10})
    (tmp_path / "base.yaml").write_text(base.to_yaml())
    spec = {
        "base": str(tmp_path / "base.yaml"),
        "output": str(tmp_path / "out"),
        "seeds": [1, 2],
        "learning_rates": [0.01, 0.05],
        "variants": {"softmax": {"name": "softmax"}},
        "grid": [{"name": "croloss", "kernel": "sigmoid", "alpha": [0.6, 1.4]}],
    }
    (tmp_path / "experiment.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return tmp_path / "experiment.yaml"


def test_experiment_writes_tables_plots_and_claims(spec_file, capsys):
    spec = experiment_spec.load(spec_file)
    assert list(spec.variants) == ["softmax", "croloss kernel=sigmoid alpha=0.6", "croloss kernel=sigmoid alpha=1.4"]
    results = experiment.run(spec)
    out = spec.output
    for name in ("results.json", "recall.md", "recall.csv", "ndcg.md", "claims.md", "recall_at_n.png",
                 "recall_by_alpha_sigmoid.png"):
        assert (out / name).stat().st_size > 0, name
    for result in results.values():
        # the learning rate is the one with the best validation score, and every seed ran with it
        assert result["learning_rate"] == float(max(result["tuning"], key=result["tuning"].get))
        assert set(result["seeds"]) == {"1", "2"}
    assert "| softmax |" in (out / "recall.md").read_text()
    assert "larger alpha for smaller N" in (out / "claims.md").read_text()

    written = json.loads((out / "results.json").read_text())
    assert written["provenance"]["code_digest"] and written["provenance"]["packages"]["tensorflow"]
    assert "[1/" in capsys.readouterr().out  # progress

    experiment.run(spec)  # every run is finished: nothing trains again
    assert "==" not in capsys.readouterr().out
    assert report.read_results(out / "results.json")[0] == json.loads(json.dumps(results))


def test_runs_of_other_code_are_refused_unless_reused(spec_file, monkeypatch, capsys):
    spec = experiment_spec.load(spec_file)
    spec.variants = {"softmax": spec.variants["softmax"]}
    spec.learning_rates, spec.seeds = [0.01], [1]
    experiment.run(spec)
    monkeypatch.setattr(provenance, "code_digest", lambda: "other")
    with pytest.raises(experiment.ForeignRunError, match="reuse-other-code"):
        experiment.run(spec)
    results = experiment.run(spec, reuse_other_code=True)
    assert results["softmax"]["reused_runs_of_other_code"][0]["code_digest"] != "other"
    assert "warning: reusing" in capsys.readouterr().err


def test_variant_overrides(spec_file):
    spec = yaml.safe_load(spec_file.read_text())
    spec["variants"]["in-batch"] = {"name": "croloss", "overrides": {"negatives.mode": "in_batch",
                                                                     "negatives.correction": "none"}}
    spec["overrides"] = {"model.hidden_dims": []}
    spec_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    loaded = experiment_spec.load(spec_file)
    config = experiment_spec.variant_config(loaded.base, loaded.variants["in-batch"], loaded.overrides)
    assert config.negatives.mode == "in_batch" and config.negatives.correction == "none"
    assert config.model.hidden_dims == []
    assert config.loss.params == {}


def test_bad_variant_fails_before_training(spec_file):
    spec = yaml.safe_load(spec_file.read_text())
    spec["variants"]["broken"] = {"name": "croloss", "kernel": "cosine"}
    spec_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    with pytest.raises(ValueError, match="variant 'broken'.*unknown kernel 'cosine'"):
        experiment_spec.load(spec_file)
    spec["variants"]["broken"] = {"name": "magic"}
    spec_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    with pytest.raises(config_lib.ConfigError, match="variant 'broken'.*valid"):
        experiment_spec.load(spec_file)


def test_family_shares_the_rate_searched_on_alpha_nearest_one(spec_file):
    spec = yaml.safe_load(spec_file.read_text())
    spec["share_learning_rate"] = "family"
    spec["seeds"] = [1]
    spec_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    loaded = experiment_spec.load(spec_file)
    results = experiment.run(loaded)
    searched, shared = results["croloss kernel=sigmoid alpha=0.6"], results["croloss kernel=sigmoid alpha=1.4"]
    assert searched["learning_rate_from"] == "croloss kernel=sigmoid alpha=0.6"  # tie: the first
    assert len(searched["tuning"]) == 2 and len(shared["tuning"]) == 1
    assert shared["learning_rate"] == searched["learning_rate"]
    assert "chosen on validation Recall@10" in (loaded.output / "claims.md").read_text()


def test_rates_from_an_earlier_experiment(spec_file, tmp_path):
    spec = yaml.safe_load(spec_file.read_text())
    spec["seeds"], spec["variants"], spec["grid"] = [1], {"softmax": {"name": "softmax"}}, []
    spec_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    first = experiment.run(experiment_spec.load(spec_file))
    spec["learning_rates_from"] = str(tmp_path / "out" / "results.json")
    spec["output"] = str(tmp_path / "again")
    spec_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    again = experiment.run(experiment_spec.load(spec_file))
    assert again["softmax"]["learning_rate"] == first["softmax"]["learning_rate"]
    assert len(again["softmax"]["tuning"]) == 1


@pytest.mark.parametrize(("text", "problem"), [
    ("base: [a\nseeds: [1]\n", r"not valid YAML at line 2, column \d+: expected ',' or ']'"),
    ("- base\n- seeds\n", "expected a mapping with keys base, output, .*; got list"),
    ("", "expected a mapping .*; got an empty file"),
    ("base: b.yaml\nseed: [1]\n", "unknown key 'seed' \\(did you mean 'seeds'\\?\\); valid keys: base, output, seeds"),
    ("base: b.yaml\noutput: o\nlearning_rates: [0.1]\n", "'seeds' is required"),
    ("base: b.yaml\noutput: o\nseeds: 1\nlearning_rates: [0.1]\n", "seeds must be a list, got 1"),
    ("base: b.yaml\noutput: o\nseeds: [1]\nlearning_rates: [0.1]\nvariants: [softmax]\n",
     "variants must be a mapping"),
    ("base: b.yaml\noutput: o\nseeds: [1]\nlearning_rates: [0.1]\ngrid: [{kernel: sigmoid}]\n",
     "grid: expected a loss section with a name"),
])
def test_a_broken_experiment_file_is_one_line_naming_the_file(tmp_path, capsys, text, problem):
    from tfcroloss.pipelines.cli import main

    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(config_lib.ConfigError, match=f"^{path}: {problem}"):
        experiment_spec.load(path)
    assert main(["experiment", "--config", str(path)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"tfcroloss experiment: error: {path}: ") and error.count("\n") == 1


def test_bad_variants_rates_and_seeds_fail_at_load(spec_file):
    spec = yaml.safe_load(spec_file.read_text())
    for key, value, problem in [
        ("variants", {"softmax": "softmax"}, "variant 'softmax': expected a loss section"),
        ("variants", {1: {"name": "softmax"}}, "a label must be a string, got 1"),
        ("overrides", {"training.max_step": 5}, "unknown key 'max_step'"),
        ("learning_rates", [0.01, -1], "learning_rates: training.learning_rate must be > 0"),
        ("learning_rates", [], "learning_rates must not be empty"),
        ("share_learning_rate", "families", "unknown value 'families' .*valid values: none, family"),
    ]:
        spec_file.write_text(yaml.safe_dump({**spec, key: value}, sort_keys=False))
        with pytest.raises(config_lib.ConfigError, match=problem):
            experiment_spec.load(spec_file)


def test_claims_rest_on_paired_intervals_and_old_results_are_not_claimed():
    def result(name, recall, **loss):
        return {"loss": {"name": name, **loss}, "mean": {"recall@10": recall}, "std": {"recall@10": 0.0},
                "tuning": {"0.01": recall}, "validation": {"recall@10": recall}}

    results = {"softmax": result("softmax", 0.20), "cro": result("croloss", 0.30, kernel="sigmoid", alpha=1.0),
               "bpr": result("bpr", 0.199), "triplet": result("triplet", 0.10)}
    users = np.random.default_rng(0).uniform(0, 0.4, size=(2, 300))
    per_user = {"softmax": {"recall@10": users}, "cro": {"recall@10": users + 0.1},
                "bpr": {"recall@10": users[::-1] - 0.001}, "triplet": {"recall@10": users - 0.1}}
    lines = report.claims_markdown(results, per_user).splitlines()
    beats = next(line for line in lines if "best CROLoss" in line)
    assert ": holds (+" in beats and "over 300 users, 2 vs 2 seeds" in beats
    chain = next(line for line in lines if "cross-entropy (20.00) > BPR" in line)
    assert "tie (the paired interval holds zero" in chain  # softmax vs BPR: the seeds swapped, 0.001 apart
    old = report.claims_markdown(results).splitlines()
    assert "not claimed: no per-user metrics" in next(line for line in old if "best CROLoss" in line)


def test_experiment_keeps_per_user_metrics_for_its_claims(spec_file):
    spec = experiment_spec.load(spec_file)
    spec.variants = {label: spec.variants[label] for label in ("softmax", "croloss kernel=sigmoid alpha=0.6")}
    spec.learning_rates, spec.seeds = [0.05], [1, 2]
    experiment.run(spec)
    per_user = report.read_test_per_user(spec.output / report.PER_USER_FILE)
    assert per_user["softmax"]["recall@10"].shape[0] == 2  # seeds
    run_dirs = sorted((spec.output / "runs" / "softmax").iterdir())
    kept = read_per_user(run_dirs[0])
    seed = int(run_dirs[0].name.split("seed")[1].split("-")[0])
    assert np.allclose(per_user["softmax"]["recall@10"][seed - 1], kept["test/recall@10"])
    means = json.loads((run_dirs[0] / "metrics.json").read_text())
    assert kept["test/recall@10"].mean() == pytest.approx(means["test"]["recall@10"], abs=1e-6)
    assert "over " in (spec.output / "claims.md").read_text()
