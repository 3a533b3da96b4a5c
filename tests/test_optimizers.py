"""LazyAdam against tf-keras Adam: equal where every row is touched, lazy elsewhere."""

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import tiny_config
from tfcroloss.models import TwoTowerModel, build_loss
from tfcroloss.models.optimizers import OPTIMIZERS, LazyAdam, build_optimizer
from tfcroloss.pipelines.training import config as config_lib
from tfcroloss.pipelines.training.run_directory import load_run
from tfcroloss.pipelines.training.train import train

ROWS, DIM = 6, 3


def _table() -> tf.Variable:
    return tf.Variable(np.arange(ROWS * DIM, dtype=np.float32).reshape(ROWS, DIM) / 10.0)


def _sparse_gradient(rows, step: int) -> tf.IndexedSlices:
    rows = np.asarray(rows, np.int32)
    values = np.sin(np.arange(rows.size * DIM, dtype=np.float32) + step).reshape(rows.size, DIM)
    return tf.IndexedSlices(tf.constant(values), tf.constant(rows), tf.constant([ROWS, DIM]))


def _apply(optimizer, table: tf.Variable, rows_per_step) -> np.ndarray:
    for step, rows in enumerate(rows_per_step):
        optimizer.apply_gradients([(_sparse_gradient(rows, step), table)])
    return table.numpy()


@pytest.mark.parametrize("amsgrad", [False, True])
def test_equals_adam_when_every_row_is_touched(amsgrad):
    steps = [[5, 0, 3, 1, 4, 2]] * 4
    lazy = _apply(LazyAdam(0.1, amsgrad=amsgrad), _table(), steps)
    adam = _apply(tf.keras.optimizers.Adam(0.1, amsgrad=amsgrad), _table(), steps)
    np.testing.assert_allclose(lazy, adam, rtol=1e-6, atol=1e-7)


def test_touched_rows_follow_adam_and_untouched_rows_stay():
    initial = _table().numpy()
    lazy = _apply(LazyAdam(0.1), _table(), [[1, 3]] * 3)
    adam = _apply(tf.keras.optimizers.Adam(0.1), _table(), [[1, 3]] * 3)
    np.testing.assert_allclose(lazy[[1, 3]], adam[[1, 3]], rtol=1e-6)
    np.testing.assert_array_equal(lazy[[0, 2, 4, 5]], initial[[0, 2, 4, 5]])


def test_rows_missing_from_a_step_do_not_move_on_momentum():
    table, optimizer = _table(), LazyAdam(0.1)
    after_first = _apply(optimizer, table, [[0, 1]])
    optimizer.apply_gradients([(_sparse_gradient([2], 1), table)])
    np.testing.assert_array_equal(table.numpy()[[0, 1]], after_first[[0, 1]])
    adam_table, adam = _table(), tf.keras.optimizers.Adam(0.1)
    _apply(adam, adam_table, [[0, 1]])
    adam.apply_gradients([(_sparse_gradient([2], 1), adam_table)])
    assert not np.allclose(adam_table.numpy()[[0, 1]], after_first[[0, 1]])  # Adam's do


def test_dense_gradients_get_plain_adam():
    lazy_table, adam_table = _table(), _table()
    gradient = tf.reshape(tf.range(ROWS * DIM, dtype=tf.float32), [ROWS, DIM]) - 7.0
    LazyAdam(0.1).apply_gradients([(gradient, lazy_table)])
    tf.keras.optimizers.Adam(0.1).apply_gradients([(gradient, adam_table)])
    np.testing.assert_array_equal(lazy_table.numpy(), adam_table.numpy())


def test_updates_mirrored_variables():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        table, optimizer = _table(), LazyAdam(0.1)
    initial = table.numpy()

    @tf.function
    def step() -> None:
        strategy.run(lambda: optimizer.apply_gradients([(_sparse_gradient([1, 4], 0), table)]))

    step()
    moved = np.flatnonzero(np.any(table.numpy() != initial, axis=1))
    np.testing.assert_array_equal(moved, [1, 4])


def test_config_round_trip():
    optimizer = LazyAdam(0.05, beta_1=0.8, amsgrad=True)
    for restored in (
        LazyAdam.from_config(optimizer.get_config()),
        tf.keras.optimizers.deserialize(tf.keras.optimizers.serialize(optimizer)),
    ):
        assert type(restored) is LazyAdam
        assert restored.get_config() == optimizer.get_config()


def test_checkpoint_restores_slots_and_training_continues_identically(tmp_path):
    table, optimizer = _table(), LazyAdam(0.1)
    _apply(optimizer, table, [[0, 2], [2, 5]])
    path = tf.train.Checkpoint(table=table, optimizer=optimizer).save(str(tmp_path / "ckpt"))
    restored_table, restored = tf.Variable(tf.zeros([ROWS, DIM])), LazyAdam(0.1)
    status = tf.train.Checkpoint(table=restored_table, optimizer=restored).restore(path)
    for opt, var in ((optimizer, table), (restored, restored_table)):
        opt.apply_gradients([(_sparse_gradient([2, 4], 7), var)])
    status.assert_consumed()  # the slots, created by the first update, were restored then
    np.testing.assert_array_equal(restored_table.numpy(), table.numpy())
    assert int(restored.iterations.numpy()) == 3


def test_build_optimizer_names_match_the_config_choices():
    assert OPTIMIZERS == config_lib.TrainingConfig.CHOICES["optimizer"].names()
    assert type(build_optimizer("lazy_adam", 0.1)) is LazyAdam
    assert type(build_optimizer("adam", 0.1)) is tf.keras.optimizers.Adam
    with pytest.raises(ValueError, match="valid optimizers: adam, lazy_adam"):
        build_optimizer("sgd", 0.1)


def test_fits_the_two_tower_model_and_leaves_unseen_items_alone():
    num_items, batch = 500, 8
    model = TwoTowerModel(num_items, loss=build_loss("croloss", num_items), embedding_dim=8,
                          hidden_dims=(8,), negatives_per_positive=2)
    model.user_embeddings(tf.zeros([1, 5], tf.int32))
    model.compile(optimizer=LazyAdam(0.05))
    history = np.random.default_rng(0).integers(1, 11, size=(4 * batch, 5), dtype=np.int32)
    batches = tf.data.Dataset.from_tensor_slices(
        {"history": history, "item_id": history[:, 0]}
    ).batch(batch)
    before = model.item_embedding.embeddings.numpy()
    losses = model.fit(batches.repeat(), epochs=3, steps_per_epoch=4, verbose=0).history["loss"]
    assert np.isfinite(losses).all()
    after = model.item_embedding.embeddings.numpy()
    moved = np.flatnonzero(np.any(after != before, axis=1))
    assert np.isin(np.arange(1, 11), moved).all()  # every history item moved
    assert moved.size < num_items // 2  # rows no batch touched (most of the catalog) stayed


def test_training_config_selects_lazy_adam_and_resumes(tiny_dataset, tmp_path):
    config = tiny_config(tiny_dataset, training={"max_steps": 20, "eval_every": 20, "optimizer": "lazy_adam"})
    train(config, tmp_path / "run", verbose=0)
    longer = tiny_config(tiny_dataset, training={"max_steps": 40, "eval_every": 20, "optimizer": "lazy_adam"})
    metrics = train(longer, tmp_path / "run", verbose=0)
    assert metrics["steps"] == 40
    assert load_run(tmp_path / "run").config.training.optimizer == "lazy_adam"
    with pytest.raises(config_lib.ConfigError, match="training.optimizer"):
        tiny_config(tiny_dataset, training={"optimizer": "sgd"})
