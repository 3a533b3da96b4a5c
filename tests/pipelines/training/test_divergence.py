"""Training stops on a non-finite loss: one line naming the step, exit status 2, the last good
checkpoint kept, no test metrics written; the run can still be finished from that checkpoint.

No valid config was found to diverge on the tiny data set (the scores are cosines times a bounded
temperature, and the config refuses infinite rates and scales), so divergence is made here: an
infinite learning rate slipped past the config, or weights set to NaN at a chosen step.
"""

import json

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import tiny_config
from tfcroloss.pipelines import cli
from tfcroloss.pipelines.training import train as train_module
from tfcroloss.pipelines.training.run_directory import holds_training
from tfcroloss.pipelines.training.train import TrainingDiverged, train


class _PoisonAt(tf.keras.callbacks.Callback):
    """Sets the item embeddings to NaN after training step ``step``."""

    def __init__(self, step: int):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == self.step:
            table = self.model.item_embedding.embeddings
            table.assign(np.full(table.shape, np.nan, np.float32))


def test_cli_train_stops_with_one_line_and_exit_2(tiny_dataset, tmp_path, monkeypatch, capsys):
    config = tiny_config(tiny_dataset, training={"max_steps": 10, "eval_every": 5})
    (tmp_path / "c.yaml").write_text(config.to_yaml())
    build_optimizer = train_module.build_optimizer
    monkeypatch.setattr(train_module, "build_optimizer", lambda name, rate: build_optimizer(name, float("inf")))

    status = cli.main(["train", "--config", str(tmp_path / "c.yaml"), "--run-dir", str(tmp_path / "run")])

    error = capsys.readouterr().err.strip()
    assert status == 2 and "\n" not in error, error
    assert "training diverged: the training loss was nan at step 2;" in error  # step 1 made the weights NaN
    assert "lower training.learning_rate" in error and "nothing was kept" in error
    assert not (tmp_path / "run" / "metrics.json").exists() and not holds_training(tmp_path / "run")


def test_divergence_keeps_the_last_good_checkpoint_and_the_run_can_finish_there(tiny_dataset, tmp_path):
    config = tiny_config(tiny_dataset, training={"max_steps": 60, "eval_every": 20, "patience": 5})
    run_dir = tmp_path / "run"

    with pytest.raises(TrainingDiverged, match=r"the training loss was nan at step 26; .*checkpoint of step 20: "
                                               r"--set training.max_steps=20 finishes it there") as caught:
        train(config, run_dir, verbose=0, callbacks=[_PoisonAt(25)])

    assert "\n" not in str(caught.value)
    assert not (run_dir / "metrics.json").exists()
    assert [json.loads(line)["step"] for line in (run_dir / "validation.jsonl").read_text().splitlines()] == [20]
    assert tf.train.latest_checkpoint(str(run_dir / "checkpoints")).endswith("ckpt-20")

    finished = train(tiny_config(tiny_dataset, training={"max_steps": 20, "eval_every": 20, "patience": 5}),
                     run_dir, verbose=0)
    assert finished["steps"] == 20 and finished["best_step"] == 20
    assert all(np.isfinite(value) for key, value in finished["test"].items() if "@" in key)
    assert finished["test"]["recall@10"] > 0
    assert json.loads((run_dir / "metrics.json").read_text())["steps"] == 20
