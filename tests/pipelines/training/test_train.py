"""Training, resuming, evaluation and run configs on the tiny synthetic data set."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import tiny_config
from tfcroloss.pipelines import cli
from tfcroloss.pipelines.data.inputs import evaluation_samples
from tfcroloss.pipelines.retrieval import build_index, search_excluding
from tfcroloss.pipelines.training import config as config_lib
from tfcroloss.pipelines.training.evaluate import evaluate
from tfcroloss.pipelines.training.run_directory import build_model, load_run
from tfcroloss.pipelines.training.train import train


def test_run_directory_holds_config_metrics_and_model(tiny_run):
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert set(metrics["test"]) >= {"recall@5", "hit_rate@10", "ndcg@20", "users"}
    assert metrics["steps"] == 40 and metrics["best_step"] in (20, 40)
    assert len((tiny_run / "validation.jsonl").read_text().splitlines()) == 2
    assert (tiny_run / "config.yaml").exists() and any((tiny_run / "logs").iterdir())
    run = load_run(tiny_run)
    assert run.model.catalog_embeddings().shape == (run.dataset.num_items, 16)


def test_training_improves_on_the_untrained_model(tiny_run):
    run = load_run(tiny_run)
    samples = evaluation_samples(run.dataset.test, maxlen=10)
    untrained = build_model(run.config, run.dataset)
    assert (
        evaluate(run.model, samples, ns=[20])["recall@20"]
        > evaluate(untrained, samples, ns=[20])["recall@20"]
    )


def _weights(run_dir):
    return [w.numpy() for w in load_run(run_dir).model.weights]


def test_resumed_run_equals_uninterrupted_run(tiny_dataset, tmp_path):
    config = tiny_config(tiny_dataset, training={"max_steps": 40, "eval_every": 20, "patience": 10})
    train(config, tmp_path / "straight", verbose=0)
    first_half = tiny_config(
        tiny_dataset, training={"max_steps": 20, "eval_every": 20, "patience": 10}
    )
    train(first_half, tmp_path / "resumed", verbose=0)
    train(config, tmp_path / "resumed", verbose=0)
    for a, b in zip(_weights(tmp_path / "straight"), _weights(tmp_path / "resumed"), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


class _FinalItemTable(tf.keras.callbacks.Callback):
    """The item table when training ends (after the last validation has caught every row up)."""

    def on_train_end(self, logs=None):
        self.table = self.model.item_embedding.embeddings.numpy()


def _final_item_table(config, run_dir) -> np.ndarray:
    final = _FinalItemTable()
    train(config, run_dir, verbose=0, callbacks=[final])
    return final.table


def test_adam_ends_where_dense_adam_ends(tiny_dataset, tmp_path):
    tables = {
        name: _final_item_table(
            tiny_config(tiny_dataset, training={"max_steps": 300, "eval_every": 150, "patience": 10, "optimizer": name}),
            tmp_path / name,
        )
        for name in ("adam", "dense_adam", "lazy_adam")
    }
    scale = np.abs(tables["dense_adam"]).max()
    assert np.abs(tables["adam"] - tables["dense_adam"]).max() < 1e-5 * scale
    assert np.abs(tables["lazy_adam"] - tables["dense_adam"]).max() > 0.05 * scale  # the check can fail


def test_an_old_dense_adam_run_resumes_under_adam(tiny_dataset, tmp_path):
    """A run directory from before adam became SparseAdam: config ``adam``, tf-keras Adam's slots."""
    def config(optimizer, steps):
        return tiny_config(tiny_dataset, training={"max_steps": steps, "eval_every": 20, "patience": 10,
                                                   "optimizer": optimizer})

    straight = _final_item_table(config("dense_adam", 60), tmp_path / "straight")
    train(config("dense_adam", 20), tmp_path / "old", verbose=0)
    (tmp_path / "old" / "config.yaml").write_text(config("adam", 20).to_yaml())
    resumed = _final_item_table(config("adam", 60), tmp_path / "old")
    np.testing.assert_allclose(resumed, straight, rtol=0, atol=1e-5 * np.abs(straight).max())


def test_resumes_after_sigkill(tiny_dataset, tmp_path):
    run_dir = tmp_path / "run"
    config = tiny_config(
        tiny_dataset, training={"max_steps": 100000, "eval_every": 10, "patience": 100000}
    )
    (tmp_path / "config.yaml").write_text(config.to_yaml())
    command = [
        sys.executable,
        "-m",
        "tfcroloss.pipelines.cli",
        "train",
        "--config",
        str(tmp_path / "config.yaml"),
        "--run-dir",
        str(run_dir),
    ]
    stderr = open(tmp_path / "stderr.txt", "wb")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.time() + 120
    while time.time() < deadline and not (run_dir / "checkpoints" / "checkpoint").exists():
        time.sleep(0.2)
    time.sleep(0.5)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    stderr.close()
    # The CLI keeps TensorFlow's and XLA's native log lines out of a user's terminal.
    noise = [line for line in (tmp_path / "stderr.txt").read_bytes().splitlines() if cli.NATIVE_LOG_LINE.match(line)]
    assert not noise, noise
    saved_step = int(tf.train.latest_checkpoint(str(run_dir / "checkpoints")).rsplit("-", 1)[1])
    assert saved_step >= 10

    resumed = config_lib.from_dict(
        {
            **config.to_dict(),
            "training": {**config.to_dict()["training"], "max_steps": saved_step + 20},
        }
    )
    result = train(resumed, run_dir, verbose=0)
    assert result["steps"] == saved_step + 20


def test_refuses_a_different_config_in_the_same_run_directory(tiny_dataset, tiny_run):
    other = tiny_config(tiny_dataset, loss={"name": "bpr"})
    with pytest.raises(config_lib.ConfigError, match="different config"):
        train(other, tiny_run, verbose=0)


def test_exclude_history_never_returns_history_items(tiny_run):
    run = load_run(tiny_run)
    samples = evaluation_samples(run.dataset.test, maxlen=10)
    catalog = run.model.catalog_embeddings()
    index = build_index("exact", catalog, np.arange(1, len(catalog) + 1))
    queries = run.model.user_embeddings(samples.history).numpy()
    top = search_excluding(index, queries, 20, exclude=samples.history)[1]
    plain = search_excluding(index, queries, 20 + 10)[1]
    for row, history, ranked in zip(top, samples.history, plain, strict=True):
        assert not np.isin(row, history[history > 0]).any()
        np.testing.assert_array_equal(row, ranked[~np.isin(ranked, history[history > 0])][:20])


def test_scann_evaluation_reports_agreement(tiny_run):
    run = load_run(tiny_run)
    samples = evaluation_samples(run.dataset.test, maxlen=10)
    exact = evaluate(run.model, samples, ns=[5, 10])
    approx = evaluate(run.model, samples, ns=[5, 10], index="scann")
    assert approx["agreement@10"] >= 0.95
    assert abs(approx["recall@10"] - exact["recall@10"]) <= 0.05


@pytest.mark.parametrize(
    "change,match",
    [
        ({"model": {"embeding_dim": 8}},
         r"unknown key 'embeding_dim' \(did you mean 'embedding_dim'\?\); valid keys: embedding_dim"),
        (
            {"negatives": {"mode": "hard"}},
            "negatives.mode: unknown negatives mode 'hard'; valid negatives modes: sampled, in_batch, both",
        ),
        ({"training": {"batch_size": "big"}}, "training.batch_size: expected int"),
        ({"evaluation": {"select_on": "recall@7"}}, "select_on must be"),
        ({"data": {"path": ""}}, "data.path is required"),
    ],
)
def test_config_errors_name_the_key(tiny_dataset, change, match):
    raw = tiny_config(tiny_dataset).to_dict()
    for section, values in change.items():
        raw[section].update(values)
    with pytest.raises(config_lib.ConfigError, match=match):
        config_lib.from_dict(raw)


def test_config_file_round_trip(tiny_dataset, tmp_path):
    config = tiny_config(
        tiny_dataset, loss={"name": "lambda_croloss", "alpha": 1.4, "grad_kernel": "exp"}
    )
    (tmp_path / "c.yaml").write_text(config.to_yaml())
    assert config_lib.load(tmp_path / "c.yaml") == config
    assert config_lib.load(tmp_path / "c.yaml", {"loss.alpha": 2.0}).loss.params["alpha"] == 2.0


def test_more_negatives_than_items_is_a_config_error(tiny_dataset, tmp_path):
    config = tiny_config(tiny_dataset, negatives={"per_positive": 50})
    with pytest.raises(config_lib.ConfigError, match=r"1,600 negatives per row .* exceed the catalog"):
        train(config, tmp_path / "run", verbose=0)
    assert not (tmp_path / "run").exists()
