"""The experiment runner: fair tuning, seeds, tables, plots, claims, and resuming."""

import json

import pytest
import yaml

from tests.conftest import tiny_config
from tfcroloss.pipelines.training import config as config_lib
from tfcroloss.pipelines.training import experiment


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
    spec = experiment.load(spec_file)
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

    capsys.readouterr()
    experiment.run(spec)  # every run is finished: nothing trains again
    assert "==" not in capsys.readouterr().out
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(results))


def test_bad_variant_fails_before_training(spec_file):
    spec = yaml.safe_load(spec_file.read_text())
    spec["variants"]["broken"] = {"name": "croloss", "kernel": "cosine"}
    spec_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    with pytest.raises(ValueError, match="variant 'broken'.*unknown kernel 'cosine'"):
        experiment.load(spec_file)
    spec["variants"]["broken"] = {"name": "magic"}
    spec_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    with pytest.raises(config_lib.ConfigError, match="variant 'broken'.*valid"):
        experiment.load(spec_file)
