"""The run directory: the config keys that pick corrections, the recorded data path, and which
folders a new run may take."""

import numpy as np
import pytest

from tests.conftest import tiny_config
from tfcroloss.pipelines.training import config as config_lib


def test_correction_keys(tiny_dataset):
    config = tiny_config(tiny_dataset, negatives={"mode": "in_batch"})
    assert config.negatives.correction == "auto"
    legacy = tiny_config(tiny_dataset, negatives={"mode": "in_batch", "log_q": True})
    assert legacy.negatives.correction == "log_q"
    with pytest.raises(config_lib.ConfigError, match="nothing to correct"):
        tiny_config(tiny_dataset, negatives={"mode": "sampled", "correction": "importance"})
    with pytest.raises(config_lib.ConfigError, match="contradicts"):
        tiny_config(tiny_dataset, negatives={"mode": "in_batch", "log_q": True, "correction": "none"})
    with pytest.raises(config_lib.ConfigError, match="valid item initializers"):
        tiny_config(tiny_dataset, model={"item_initializer": "zeros"})


def test_in_batch_run_trains_with_the_corrected_loss(tiny_dataset, tmp_path):
    from tfcroloss.pipelines.training.run_directory import build_model
    from tfcroloss.pipelines.training.train import train

    config = tiny_config(tiny_dataset, negatives={"mode": "both", "per_positive": 1},
                         model={"item_initializer": "glorot_uniform", "hidden_dims": []},
                         training={"max_steps": 20, "eval_every": 20})
    result = train(config, tmp_path / "run", verbose=0)
    assert np.isfinite(result["test"]["recall@10"])
    from tfcroloss.pipelines.data.dataset import PreparedDataset

    assert build_model(config, PreparedDataset.load(tiny_dataset)).correction == "importance"


def test_run_records_its_data_path_resolved(tiny_dataset, tmp_path, monkeypatch, capsys):
    from tfcroloss.pipelines import cli
    from tfcroloss.pipelines.training.run_directory import load_run
    from tfcroloss.pipelines.training.train import train

    monkeypatch.chdir(tiny_dataset.parent)
    train(tiny_config("prepared", training={"max_steps": 10, "eval_every": 10}), tmp_path / "run", verbose=0)
    recorded = config_lib.load(tmp_path / "run" / "config.yaml").data.path
    assert recorded == str(tiny_dataset.resolve())
    monkeypatch.chdir(tmp_path)  # evaluate (and export, through load_run) from anywhere
    capsys.readouterr()
    assert cli.main(["evaluate", "--run", "run", "--n", "5"]) == 0
    assert '"recall@5"' in capsys.readouterr().out
    assert load_run(tmp_path / "run").dataset.num_items > 0


def test_old_run_with_a_relative_data_path_loads_from_where_it_was_made(tiny_dataset, tiny_run, tmp_path, monkeypatch):
    import shutil

    from tfcroloss.pipelines.training.run_directory import load_run

    old = tmp_path / "old"
    shutil.copytree(tiny_run, old)
    config = (old / "config.yaml").read_text()
    (old / "config.yaml").write_text(config.replace(f"path: {tiny_dataset}", "path: prepared"))
    monkeypatch.chdir(tiny_dataset.parent)
    assert load_run(old).config.data.path == "prepared"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="'prepared' .* relative to the directory the run was trained in"):
        load_run(old)


def test_a_refused_command_writes_nothing(tiny_dataset, tmp_path, capsys):
    from tfcroloss.pipelines import cli

    (tmp_path / "c.yaml").write_text(tiny_config(tiny_dataset).to_yaml())
    status = cli.main(["train", "--config", str(tmp_path / "c.yaml"), "--run-dir", str(tmp_path / "run"),
                       "--set", "loss.alpah=1.2"])
    error = capsys.readouterr().err
    assert status == 2 and error.count("\n") == 1
    assert "'alpah'" in error and "section loss" in error and "valid keys" in error
    assert not (tmp_path / "run").exists()


def test_a_run_that_kept_nothing_trained_gives_way(tiny_dataset, tmp_path):
    from tfcroloss.pipelines.training.train import train

    run_dir = tmp_path / "run"  # as a run killed before its first validation leaves it
    (run_dir / "logs").mkdir(parents=True)
    (run_dir / "config.yaml").write_text(tiny_config(tiny_dataset, loss={"name": "bpr"}).to_yaml())
    config = tiny_config(tiny_dataset, training={"max_steps": 10, "eval_every": 10})
    train(config, run_dir, verbose=0)
    assert config_lib.load(run_dir / "config.yaml").loss.name == "croloss"
    with pytest.raises(config_lib.ConfigError, match="already holds a run with a different config"):
        train(tiny_config(tiny_dataset, loss={"name": "bpr"}), run_dir, verbose=0)
