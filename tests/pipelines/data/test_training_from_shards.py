"""Training from streamed shards: the in-memory split's validation Recall within seed noise, and
a parameter-server cluster on loopback whose workers read their own shards."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from tests.conftest import tiny_config
from tests.pipelines.training.test_distribute import _result, _train_on_loopback_cluster
from tfcroloss.pipelines.data.dataset import PreparedDataset
from tfcroloss.pipelines.data.prepare import PrepareConfig, prepare_file
from tfcroloss.pipelines.data.synthetic import write_synthetic
from tfcroloss.pipelines.training import train as train_module


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    root = tmp_path_factory.mktemp("sharded")
    write_synthetic(root / "log.txt", "tiny", seed=0)
    prepare_file("comirec", root / "log.txt", root / "prepared", config=PrepareConfig(users_per_shard=32))
    assert len(PreparedDataset.load(root / "prepared").train.shards) >= 2
    return root / "prepared"


class InMemory(PreparedDataset):
    """The data set with its splits' shards forgotten: training takes the in-memory path."""

    @classmethod
    def load(cls, path):
        dataset = PreparedDataset.load(path)
        for name, split in dataset.splits.items():
            setattr(dataset, name, dataclasses.replace(split, shards=()))
        return dataset


def best_recall(run_dir):
    lines = (run_dir / "validation.jsonl").read_text().splitlines()
    return max(json.loads(line)["recall@10"] for line in lines)


def test_shards_train_like_the_in_memory_split(sharded, tmp_path, monkeypatch):
    recalls = {"shards": [], "memory": []}
    for seed in (0, 1):
        config = tiny_config(sharded, training={"seed": seed, "max_steps": 60, "eval_every": 20})
        train_module.train(config, tmp_path / f"shards-{seed}", verbose=0)
        recalls["shards"].append(best_recall(tmp_path / f"shards-{seed}"))
        with monkeypatch.context() as patch:
            patch.setattr(train_module, "PreparedDataset", InMemory)
            train_module.train(config, tmp_path / f"memory-{seed}", verbose=0)
        recalls["memory"].append(best_recall(tmp_path / f"memory-{seed}"))
    noise = max(np.ptp(values) for values in recalls.values())
    gap = abs(np.mean(recalls["shards"]) - np.mean(recalls["memory"]))
    print(json.dumps({**recalls, "seed_noise": noise, "gap": gap}))
    assert gap <= noise + 0.02, recalls


def test_parameter_server_workers_train_from_their_shards(sharded, tmp_path):
    config = tiny_config(sharded, training={"max_steps": 6, "eval_every": 3, "strategy": "parameter_server"})
    output, validations = _train_on_loopback_cluster(config, tmp_path, workers=2, parameter_servers=1)
    assert [v["step"] for v in validations] == [3, 6], output[-3000:]
    assert _result(output)["steps"] == 6
