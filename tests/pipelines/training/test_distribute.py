"""Distributed training: loss and gradients across replicas, multi-worker and parameter-server runs.

Each scenario runs in its own Python process (TensorFlow's devices and cluster are fixed at
start-up), bounded in time: this file is also that process's entry point,
``python tests/pipelines/test_distribute.py SCENARIO ARGS...``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import tiny_config
from tfcroloss.models.optimizers import SparseAdam
from tfcroloss.pipelines.data.dataset import PreparedDataset
from tfcroloss.pipelines.data.inputs import training_dataset
from tfcroloss.pipelines.training import config as config_lib
from tfcroloss.pipelines.training import distribute
from tfcroloss.pipelines.training.run_directory import build_model, load_run
from tfcroloss.pipelines.training.train import train

ROOT = Path(__file__).resolve().parents[3]
TIMEOUT = 240  # seconds, for each process of a scenario (on a loaded 2-core machine)
# (loss, negatives) pairs checked for equality across replicas.
EQUALITY_CASES = [("croloss", "sampled"), ("lambda_croloss", "sampled"), ("croloss", "both")]
LOSSES = {
    "croloss": {"name": "croloss", "kernel": "softplus", "alpha": 1.0},
    "lambda_croloss": {
        "name": "lambda_croloss",
        "weight_kernel": "sigmoid",
        "grad_kernel": "softplus",
    },
}


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _start(scenario: str, *args: str, tf_config: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    command = [sys.executable, __file__, scenario, *args]
    return subprocess.Popen(
        command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _finish(process: subprocess.Popen, deadline: float) -> str:
    try:
        output, _ = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        pytest.fail(f"{process.args[2:]} ran past its time limit:\n{output[-4000:]}")
    assert process.returncode == 0, f"{process.args[2:]} failed:\n{output[-4000:]}"
    return output


def _result(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- in-process tests


def _train_on_loopback_cluster(config, tmp_path, workers: int, parameter_servers: int) -> tuple[str, list[dict]]:
    """``tfcroloss train`` as the chief of a parameter-server cluster on loopback (servers for the
    workers and parameter servers in their own processes); the chief's output and its validations."""
    (tmp_path / "config.yaml").write_text(config.to_yaml())
    ports = iter(f"127.0.0.1:{port}" for port in _free_ports(1 + workers + parameter_servers))
    cluster = {"chief": [next(ports)], "worker": [next(ports) for _ in range(workers)],
               "ps": [next(ports) for _ in range(parameter_servers)]}
    deadline = time.monotonic() + TIMEOUT
    tasks = [{"type": kind, "index": i} for kind in ("worker", "ps") for i in range(len(cluster[kind]))]
    servers = [_start("serve", str(tmp_path / "config.yaml"), tf_config={"cluster": cluster, "task": task})
               for task in tasks]
    try:
        coordinator = _start(
            "train", str(tmp_path / "config.yaml"), str(tmp_path / "run"), str(tmp_path / "weights.npz"),
            tf_config={"cluster": cluster, "task": {"type": "chief", "index": 0}},
        )
        output = _finish(coordinator, deadline)
    finally:
        for server in servers:
            server.kill()
            server.communicate()
    validation = (tmp_path / "run" / "validation.jsonl").read_text().splitlines()
    return output, [json.loads(line) for line in validation]


def test_cluster_strategies_explain_a_missing_or_malformed_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(config_lib.ConfigError, match="needs the TF_CONFIG environment variable"):
        distribute.make_strategy("multi_worker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(config_lib.ConfigError, match="not valid JSON"):
        distribute.make_strategy("parameter_server")
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["localhost:1"]}}))
    with pytest.raises(config_lib.ConfigError, match="needs a 'task'"):
        distribute.make_strategy("multi_worker")
    cluster = {"worker": ["localhost:1"]}
    monkeypatch.setenv(
        "TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}})
    )
    with pytest.raises(config_lib.ConfigError, match=r"needs \['chief', 'ps', 'worker'\]"):
        distribute.make_strategy("parameter_server")
    monkeypatch.setenv(
        "TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}})
    )
    with pytest.raises(config_lib.ConfigError, match="not in the cluster"):
        distribute.make_strategy("multi_worker")
    with pytest.raises(config_lib.ConfigError, match="valid strategies"):
        distribute.make_strategy("horovod")


def test_mirrored_replicas_give_the_single_replica_loss_and_gradients(tiny_dataset):
    """A global batch on one replica and split over 2 logical CPUs: same loss and gradients."""
    output = _finish(_start("equality", str(tiny_dataset)), time.monotonic() + TIMEOUT)
    for case in _result(output):
        assert case["replicas"] == 2
        assert case["loss_diff"] <= 1e-5 * max(1.0, abs(case["loss"])), case
        assert case["gradient_diff"] <= 1e-5 * case["gradient_scale"], case
        assert case.get("fit_weight_diff", 0.0) <= 1e-5 and case.get("fit_loss_diff", 0.0) <= 1e-5, case
        # adam (SparseAdam, epsilon 1e-3) over 8 steps of lr 0.05, rows left behind: as on one replica
        # up to float32 rounding (weights of order 0.1-1), and dense Adam's result up to the catch-up's
        # error with epsilon > 0 (SparseAdam's docstring; 3.0e-5 with this seed, 2.6e-5 to 5.8e-5
        # over unseeded initial weights). A row whose skipped steps were not caught up would be off
        # by about lr per step.
        assert case.get("adam_weight_diff", 0.0) <= 1e-5 and case.get("adam_dense_diff", 0.0) <= 1e-4, case
    print(json.dumps(_result(output)))


def test_multi_worker_training_keeps_workers_identical(tiny_dataset, tmp_path):
    config = tiny_config(
        tiny_dataset, training={"max_steps": 6, "eval_every": 3, "strategy": "multi_worker"}
    )
    (tmp_path / "config.yaml").write_text(config.to_yaml())
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    deadline = time.monotonic() + TIMEOUT
    workers = [
        _start(
            "train",
            str(tmp_path / "config.yaml"),
            str(tmp_path / "run"),
            str(tmp_path / f"weights-{i}.npz"),
            tf_config={"cluster": cluster, "task": {"type": "worker", "index": i}},
        )
        for i in range(2)
    ]
    outputs = [_finish(worker, deadline) for worker in workers]
    chief, other = (_result(output) for output in outputs)
    assert chief["steps"] == other["steps"] and chief["replicas"] == other["replicas"] == 2
    assert {k: v for k, v in chief["test"].items() if "@" in k} == {
        k: v for k, v in other["test"].items() if "@" in k
    }
    weights = [np.load(tmp_path / f"weights-{i}.npz") for i in range(2)]
    assert weights[0].files == weights[1].files
    for name in weights[0].files:
        np.testing.assert_array_equal(weights[0][name], weights[1][name])
    # Only the chief wrote the run directory; no worker's scratch directory is left.
    assert (tmp_path / "run" / "metrics.json").exists()
    validations = (tmp_path / "run" / "validation.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in validations] == [3, 6]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "best",
        "checkpoints",
        "config.yaml",
        "logs",
        "metrics.json",
        "validation.jsonl",
    ]


def test_parameter_server_training_shards_the_item_table(tiny_dataset, tmp_path):
    # A 1024-wide table (over 512 KiB) splits in two shards at MinSizePartitioner's 256 KiB;
    # the user tower's weights stay whole.
    config = tiny_config(
        tiny_dataset,
        model={"embedding_dim": 1024},
        training={"max_steps": 6, "eval_every": 3, "strategy": "parameter_server"},
    )
    output, validations = _train_on_loopback_cluster(config, tmp_path, workers=1, parameter_servers=2)
    result = _result(output)
    assert [v["step"] for v in validations] == [3, 6], output[-3000:]
    assert "training.optimizer adam: the parameter_server strategy shards the item table" in output  # one line
    rows = PreparedDataset.load(tiny_dataset).num_items + 1
    assert result["item_table_shards"] == [[(rows + 1) // 2, 1024], [rows // 2, 1024]]
    assert set(result["item_table_devices"]) == {
        "/job:ps/replica:0/task:0/device:CPU:0",
        "/job:ps/replica:0/task:1/device:CPU:0",
    }
    # The sharded checkpoints restore into an unsharded model; the latest holds the final weights.
    model = load_run(tmp_path / "run").model
    tf.train.Checkpoint(model=model).restore(
        tf.train.latest_checkpoint(str(tmp_path / "run" / "checkpoints"))
    ).expect_partial()
    restored = model.item_embedding.embeddings.numpy()
    np.testing.assert_array_equal(restored, np.load(tmp_path / "weights.npz")["item_embedding"])


# ----------------------------------------------------------------------------- scenarios (subprocesses)


def _equality(data_path: str) -> list[dict]:
    (cpu,) = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    tf.keras.utils.set_random_seed(0)  # the same initial weights, hence the same rounding, every run

    def loss_and_gradients(model, features):
        with tf.GradientTape() as tape:
            value = model.compute_loss(features, training=True)
        return value, [tf.convert_to_tensor(g) for g in tape.gradient(value, model.trainable_variables)]

    def max_diff(a, b):
        return max(float(np.abs(np.asarray(x) - np.asarray(y)).max()) for x, y in zip(a, b, strict=True))

    dataset = PreparedDataset.load(data_path)
    batches = training_dataset(dataset.train, batch_size=32, maxlen=10, seed=3).take(8).cache()
    batch = next(iter(batches))
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    halves = strategy.experimental_distribute_values_from_function(
        lambda context: {k: v[16 * context.replica_id_in_sync_group :][:16] for k, v in batch.items()}
    )
    results = []
    for loss, negatives in EQUALITY_CASES:
        config = tiny_config(Path(data_path), loss=LOSSES[loss], negatives={"mode": negatives})
        single = build_model(config, dataset)
        with strategy.scope():
            mirrored = build_model(config, dataset)
        single_weights = single.get_weights()
        mirrored.set_weights(single_weights)
        loss_1, grads_1 = loss_and_gradients(single, batch)
        per_replica = strategy.run(tf.function(lambda f, m=mirrored: loss_and_gradients(m, f)), args=(halves,))
        loss_2, grads_2 = tf.nest.map_structure(lambda v: strategy.reduce("SUM", v, axis=None), per_replica)
        case = {
            "loss_name": loss, "negatives": negatives, "replicas": strategy.num_replicas_in_sync,
            "loss": float(loss_1), "loss_diff": abs(float(loss_1) - float(loss_2)),
            "gradient_scale": max(float(np.abs(g).max()) for g in grads_1),
            "gradient_diff": max_diff(grads_1, grads_2),
        }
        if negatives == "both":  # and through Keras fit: one SGD step from the same weights
            fitted = []
            for model, scope in ((single, tf.distribute.get_strategy()), (mirrored, strategy)):
                with scope.scope():
                    model.compile(optimizer=tf.keras.optimizers.SGD(0.5))
                history = model.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0)
                fitted.append((history.history["loss"][0], model.get_weights()))
            case["fit_loss_diff"] = abs(fitted[0][0] - fitted[1][0])
            case["fit_weight_diff"] = max_diff(fitted[0][1], fitted[1][1])
            # Adam's epsilon at 1e-3, not 1e-7: a gradient near zero (its sign down to float32
            # rounding, which differs with the summation order) then moves its weight by about
            # lr * g / epsilon, not by up to lr (with 1e-7 and unseeded weights, runs were up to
            # 1.3e-4 apart).
            adam = {}
            for name, optimizer, scope in (("single", SparseAdam, tf.distribute.get_strategy()),
                                           ("mirrored", SparseAdam, strategy),
                                           ("dense", tf.keras.optimizers.Adam, tf.distribute.get_strategy())):
                with scope.scope():
                    model = build_model(config, dataset)
                    model.set_weights(single_weights)
                    model.compile(optimizer=optimizer(learning_rate=0.05, epsilon=1e-3))
                model.fit(batches.repeat(), epochs=1, steps_per_epoch=8, verbose=0)
                if optimizer is SparseAdam:
                    model.optimizer.catch_up()
                adam[name] = [tf.convert_to_tensor(w).numpy() for w in model.trainable_weights]
            case["adam_weight_diff"] = max_diff(adam["single"], adam["mirrored"])
            case["adam_dense_diff"] = max_diff(adam["single"], adam["dense"])
        results.append(case)
    return results


def _train(config_path: str, run_dir: str, weights_path: str) -> dict:
    class SaveWeights(tf.keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            table = self.model.item_embedding.embeddings
            shards = getattr(table, "variables", [table])
            self.shards = (
                [s.shape.as_list() for s in shards],
                [s.device for s in shards],
            )
            np.savez(
                weights_path,
                **{
                    f"{i}": tf.convert_to_tensor(w).numpy()
                    for i, w in enumerate(self.model.weights)
                },
                item_embedding=tf.convert_to_tensor(table).numpy(),
            )

    saver = SaveWeights()
    result = train(config_lib.load(config_path), run_dir, verbose=0, callbacks=[saver])
    shapes, devices = saver.shards
    return {
        "test": result["test"],
        "steps": result["steps"],
        "item_table_shards": shapes,
        "item_table_devices": devices,
        "replicas": saver.model.distribute_strategy.num_replicas_in_sync,
    }


def _serve(config_path: str) -> None:
    distribute.serve_if_server_task(config_lib.load(config_path).training.strategy)


if __name__ == "__main__":
    scenario, *arguments = sys.argv[1:]
    outcome = {"equality": _equality, "train": _train, "serve": _serve}[scenario](*arguments)
    print(json.dumps(outcome), flush=True)
