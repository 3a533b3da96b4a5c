"""SparseAdam (``adam``) equals tf-keras Adam (``dense_adam``); LazyAdam equals it where every row is
touched and is lazy elsewhere."""

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import tiny_config
from tfcroloss.models import TwoTowerModel, build_loss
from tfcroloss.models.optimizers import OPTIMIZERS, LazyAdam, SparseAdam, build_optimizer
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
    assert type(build_optimizer("adam", 0.1)) is SparseAdam
    assert type(build_optimizer("dense_adam", 0.1)) is tf.keras.optimizers.Adam
    with pytest.raises(ValueError, match="valid optimizers: adam, dense_adam, lazy_adam"):
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


# SparseAdam against tf-keras Adam on a float64 table: Zipf ids (duplicates in a batch, rows unseen
# for hundreds of steps, rows never seen), a loss whose gradient depends on the rows read.
TABLE_ROWS, NEVER_SEEN, STEPS = 40, 8, 400
TINY_EPSILON = 1e-300  # eps -> 0 (0 itself makes dense Adam's never-seen rows 0 / 0)


def _zipf_ids() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [np.minimum(rng.zipf(1.4, size=8), TABLE_ROWS - NEVER_SEEN) - 1 for _ in range(STEPS)]


def _gathered_plainly(optimizer, table, ids):
    return tf.gather(table, ids)


def _gathered_through_lookup(optimizer, table, ids):
    return optimizer.lookup(table, ids)


def _train_table(optimizer, read=_gathered_plainly, steps=range(STEPS), table=None) -> tf.Variable:
    """Trains a float64 table (initial values fixed) on a quadratic loss over the rows ``read`` gives."""
    rng = np.random.default_rng(1)
    initial, target = rng.normal(size=(TABLE_ROWS, 3)), tf.constant(rng.normal(size=(TABLE_ROWS, 3)))
    table = tf.Variable(initial) if table is None else table
    optimizer.build([table])

    @tf.function
    def step(ids, weight):
        with tf.GradientTape() as tape:
            rows = read(optimizer, table, ids)
            loss = tf.reduce_sum(tf.square(rows - tf.gather(target, ids))) * weight
        optimizer.apply_gradients([(tape.gradient(loss, table), table)])

    ids = _zipf_ids()
    for number in steps:
        step(tf.constant(ids[number], tf.int32), tf.constant(1.5 + np.sin(number), tf.float64))
    return table


def _state(optimizer, table: tf.Variable) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The table and both moment tables, every row brought up to date."""
    if isinstance(optimizer, SparseAdam):
        optimizer.catch_up()
    return table.numpy(), optimizer._momentums[0].numpy(), optimizer._velocities[0].numpy()


def _trained(optimizer, read=_gathered_plainly) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return _state(optimizer, _train_table(optimizer, read))


def _decaying_rate():
    return tf.keras.optimizers.schedules.ExponentialDecay(0.05, decay_steps=40, decay_rate=0.7)


def _worst_error(candidate, reference) -> float:
    return max(float(np.max(np.abs(c - r))) for c, r in zip(candidate, reference, strict=True))


def test_the_ids_cover_duplicates_long_gaps_and_never_seen_rows():
    ids = _zipf_ids()
    assert any(len(set(batch)) < len(batch) for batch in ids)
    last_seen = {}
    gaps = []
    for step, batch in enumerate(ids):
        for row in set(batch):
            gaps.append(step - last_seen.get(row, step))
            last_seen[row] = step
    assert max(gaps) > 200
    assert max(last_seen) < TABLE_ROWS - NEVER_SEEN  # the last rows are never seen


@pytest.mark.parametrize("rate", [0.05, _decaying_rate], ids=["constant", "decaying"])
@pytest.mark.parametrize("catch_up_every", [1000, 30])
def test_equals_dense_adam_with_epsilon_zero(rate, catch_up_every):
    rate = rate() if callable(rate) else rate
    dense = _trained(tf.keras.optimizers.Adam(rate, epsilon=TINY_EPSILON))
    sparse = _trained(SparseAdam(rate, epsilon=TINY_EPSILON, catch_up_every=catch_up_every), _gathered_through_lookup)
    assert _worst_error(sparse, dense) < 1e-10
    initial = _train_table(tf.keras.optimizers.Adam(rate), steps=range(0)).numpy()
    assert np.abs(dense[0] - initial).max() > 0.5  # it trained


@pytest.mark.parametrize("rate", [0.05, _decaying_rate], ids=["constant", "decaying"])
def test_equals_dense_adam_within_tolerance_with_the_default_epsilon(rate):
    rate = rate() if callable(rate) else rate
    dense = _trained(tf.keras.optimizers.Adam(rate))
    sparse = _trained(SparseAdam(rate), _gathered_through_lookup)
    assert _worst_error(sparse, dense) < 1e-5  # the tolerance docs/performance-training.md states


@pytest.mark.parametrize(
    "optimizer, read",
    [(LazyAdam, _gathered_plainly), (SparseAdam, _gathered_plainly)],
    ids=["lazy_adam", "sparse_adam_caught_up_after_the_read"],
)
def test_lazy_adam_and_a_catch_up_after_the_read_are_not_dense_adam(optimizer, read):
    dense = _trained(tf.keras.optimizers.Adam(0.05, epsilon=TINY_EPSILON))
    assert _worst_error(_trained(optimizer(0.05, epsilon=TINY_EPSILON), read), dense) > 1e-2


@pytest.mark.parametrize("first", [SparseAdam, tf.keras.optimizers.Adam], ids=["sparse", "dense_adam"])
def test_resumes_from_its_checkpoint_and_from_a_dense_adam_checkpoint(first, tmp_path):
    uninterrupted = _trained(tf.keras.optimizers.Adam(0.05, epsilon=TINY_EPSILON))
    optimizer = first(0.05, epsilon=TINY_EPSILON)
    read = _gathered_through_lookup if first is SparseAdam else _gathered_plainly
    table = _train_table(optimizer, read, steps=range(STEPS // 2))  # SparseAdam's: rows left behind
    path = tf.train.Checkpoint(table=table, optimizer=optimizer).save(str(tmp_path / "ckpt"))
    table, resumed = tf.Variable(tf.zeros_like(table)), SparseAdam(0.05, epsilon=TINY_EPSILON)
    tf.train.Checkpoint(table=table, optimizer=resumed).restore(path)
    # Built after the restore (as train does): a dense_adam checkpoint's rows count as up to date.
    _train_table(resumed, _gathered_through_lookup, steps=range(STEPS // 2, STEPS), table=table)
    assert _worst_error(_state(resumed, table), uninterrupted) < 1e-10


def test_sparse_adam_config_round_trip_and_unsupported_options():
    optimizer = SparseAdam(0.05, beta_1=0.8, epsilon=1e-6, catch_up_every=50)
    for restored in (
        SparseAdam.from_config(optimizer.get_config()),
        tf.keras.optimizers.deserialize(tf.keras.optimizers.serialize(optimizer)),
    ):
        assert type(restored) is SparseAdam
        assert restored.get_config() == optimizer.get_config()
    with pytest.raises(ValueError, match="does not support amsgrad"):
        SparseAdam(0.1, amsgrad=True)
    with pytest.raises(ValueError, match="catch_up_every"):
        SparseAdam(0.1, catch_up_every=0)


def test_sparse_adam_updates_mirrored_variables_as_on_one_device():
    def trained(strategy):
        with strategy.scope():
            table, optimizer = tf.Variable(np.random.default_rng(1).normal(size=(TABLE_ROWS, 3))), SparseAdam(0.05)
            optimizer.build([table])

        @tf.function
        def step(ids):
            def replica_step():
                with tf.GradientTape() as tape:
                    loss = tf.reduce_sum(tf.square(optimizer.lookup(table, ids) - 1.0))
                optimizer.apply_gradients([(tape.gradient(loss, table), table)])
            strategy.run(replica_step)

        for ids in _zipf_ids()[:60]:
            step(tf.constant(ids, tf.int32))
        optimizer.catch_up()
        return table.numpy()

    np.testing.assert_allclose(trained(tf.distribute.MirroredStrategy(["/cpu:0"])),
                               trained(tf.distribute.get_strategy()), rtol=0, atol=1e-12)
