"""Shared fixtures: a tiny synthetic data set, prepared, and a briefly trained run on it."""

from pathlib import Path

import pytest

from tfcroloss.pipelines.data.prepare import prepare_file
from tfcroloss.pipelines.data.synthetic import write_synthetic
from tfcroloss.pipelines.training import config as config_lib


def tiny_config(data_path: Path, **sections) -> config_lib.RunConfig:
    """A run config small enough to train in seconds on the tiny synthetic preset."""
    raw = {
        "data": {"path": str(data_path), "maxlen": 10},
        "model": {"embedding_dim": 16, "hidden_dims": [16]},
        "loss": {"name": "croloss", "kernel": "softplus", "alpha": 1.0},
        "negatives": {"mode": "sampled", "per_positive": 2},
        "training": {
            "batch_size": 32,
            "learning_rate": 0.02,
            "max_steps": 40,
            "eval_every": 20,
            "patience": 3,
        },
        "evaluation": {"ns": [5, 10, 20], "select_on": "recall@10"},
    }
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values} if name != "loss" else values
    return config_lib.from_dict(raw, source="tiny")


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny_data")
    write_synthetic(root / "log.txt", "tiny", seed=0)
    prepare_file("comirec", root / "log.txt", root / "prepared")
    return root / "prepared"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_dataset) -> Path:
    from tfcroloss.pipelines.training.train import train

    run_dir = tmp_path_factory.mktemp("tiny_run") / "run"
    train(tiny_config(tiny_dataset), run_dir, verbose=0)
    return run_dir
