"""The Keras 3 CROLoss and LambdaCROLoss on the backend in KERAS_BACKEND: the shared NumPy-reference
cases (``tests/loss_cases.py``), plus Keras 3 serialization, ``.keras`` round trips and a fit."""

import doctest
import os
import sys

import keras
import numpy as np
import pytest

import tfcroloss.keras3
from tests.loss_cases import NUM_ITEMS, LossContract, make_batch
from tfcroloss.keras3 import CROLoss, LambdaCROLoss, cro_loss, lambda_cro_loss

BACKEND = keras.backend.backend()


def _value_and_grad(fn, x):
    """fn(x) and d sum(fn(x)) / dx on the current backend."""
    if BACKEND == "jax":
        import jax

        def summed(z):
            value = fn(z)
            return keras.ops.sum(value), value

        (_, value), grad = jax.value_and_grad(summed, has_aux=True)(x)
        return value, grad
    if BACKEND == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(x)
            value = fn(x)
        return value, tape.gradient(value, x)
    if BACKEND == "torch":
        import torch

        x = x.detach().requires_grad_(True)
        value = fn(x)
        torch.sum(value).backward()
        return value.detach(), x.grad
    raise NotImplementedError(BACKEND)


class Keras3:
    """The Keras 3 implementation, as ``tests/loss_cases.py`` drives it."""

    CROLoss = CROLoss
    LambdaCROLoss = LambdaCROLoss

    @staticmethod
    def cross_entropy():
        return keras.losses.CategoricalCrossentropy(from_logits=True, reduction="none")

    @staticmethod
    def loss_kwargs(dtype):
        return {"dtype": dtype}  # Keras 3 casts the inputs to the loss's dtype (float32 by default)

    @staticmethod
    def value_and_grad(loss, y_true, y_pred, sample_weight=None, dtype=None, q=None, with_dtype=False):
        logits = keras.ops.convert_to_tensor(y_pred)
        if dtype is not None:
            logits = keras.ops.cast(logits, dtype)
        labels = keras.ops.convert_to_tensor(y_true)

        def fn(z):
            if q is None:
                return loss(labels, z, sample_weight=sample_weight)
            return loss.call(labels, z, candidate_sampling_probability=q)

        value, grad = _value_and_grad(fn, logits)
        as_numpy = [keras.ops.convert_to_numpy(keras.ops.cast(t, "float32")).astype(np.float64) for t in (value, grad)]
        return (*as_numpy, keras.backend.standardize_dtype(value.dtype)) if with_dtype else tuple(as_numpy)


class TestKeras3(LossContract):
    """The shared NumPy-reference tests, against Keras 3 on this process's backend."""

    IMPL = Keras3


def test_backend_is_the_one_asked_for():
    assert BACKEND == os.environ["KERAS_BACKEND"]


def test_import_leaves_tensorflow_and_tf_keras_alone(import_state):
    """``import tfcroloss.keras3`` imports no TensorFlow (unless Keras's backend did) and does not
    select tf-keras: no TF_USE_LEGACY_KERAS, and tf.keras stays Keras 3."""
    assert import_state == {"tensorflow": BACKEND == "tensorflow", "tf_keras": False, "TF_USE_LEGACY_KERAS": None}
    if BACKEND == "tensorflow":
        import tensorflow as tf

        assert not tf.keras.__name__.startswith("tf_keras")


@pytest.mark.parametrize("statement", ["from tfcroloss import CROLoss", "import tfcroloss.losses"])
def test_tf_keras_side_refuses_in_a_keras3_process(statement):
    with pytest.raises(ImportError, match="already in use with Keras 3 .*use one of the two per process"):
        exec(statement, {})
    assert "tf_keras" not in sys.modules


def test_module_doctests():
    result = doctest.testmod(tfcroloss.keras3)
    assert result.attempted > 0 and result.failed == 0


def test_functions_match_classes():
    y_true, y_pred = make_batch(seed=14)
    q = np.linspace(0.05, 0.2, y_pred.shape[1]).astype(np.float32)
    cro = CROLoss(NUM_ITEMS, alpha=1.4, kernel="hinge", margin=2.0)
    lam = LambdaCROLoss(NUM_ITEMS, alpha=0.6, weight_kernel="unit_step", grad_kernel="exp")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(
            cro_loss(y_true, y_pred, num_items=NUM_ITEMS, alpha=1.4, kernel="hinge", margin=2.0,
                     candidate_sampling_probability=q)
        ),
        keras.ops.convert_to_numpy(cro.call(y_true, y_pred, candidate_sampling_probability=q)),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(
            lambda_cro_loss(y_true, y_pred, num_items=NUM_ITEMS, alpha=0.6, weight_kernel="unit_step",
                            grad_kernel="exp")
        ),
        keras.ops.convert_to_numpy(lam.call(y_true, y_pred)),
        rtol=1e-6,
    )


def test_bad_inputs():
    loss = CROLoss(4)
    with pytest.raises(ValueError, match="same shape"):
        loss(np.eye(2, 3, dtype=np.float32), np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="exactly one 1"):
        loss(np.array([[1, 1, 0], [1, 0, 0]], np.float32), np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="must be > 0 for every negative"):
        loss.call(np.eye(1, 3, dtype=np.float32), np.zeros((1, 3), np.float32),
                  candidate_sampling_probability=np.array([0.5, 0.5, 0.0], np.float32))


@keras.saving.register_keras_serializable(package="tests")
def soft_step(x):
    return keras.ops.sigmoid(2.0 * x)


SERIALIZED = {
    "hinge": lambda: CROLoss(NUM_ITEMS, alpha=1.4, kernel="hinge", margin=0.5, reduction="sum", name="cro"),
    "callable": lambda: CROLoss(NUM_ITEMS, alpha=0.6, kernel=soft_step),
    "lambda": lambda: LambdaCROLoss(NUM_ITEMS, alpha=1.4, weight_kernel="unit_step", grad_kernel="exp"),
}


@pytest.mark.parametrize("make", SERIALIZED.values(), ids=SERIALIZED.keys())
def test_serialization_round_trips(make):
    loss = make()
    y_true, y_pred = make_batch(seed=9)
    want = keras.ops.convert_to_numpy(loss(y_true, y_pred))
    from_config = type(loss).from_config(loss.get_config())
    deserialized = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(deserialized) is type(loss)
    assert from_config.get_config() == loss.get_config() == deserialized.get_config()
    for clone in (from_config, deserialized):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(clone(y_true, y_pred)), want, rtol=1e-6)


@pytest.mark.parametrize(
    "make", [lambda: CROLoss(num_items=8, alpha=1.0), lambda: LambdaCROLoss(num_items=8, alpha=1.4)],
    ids=["cro", "lambda"],
)
def test_compile_fit_save_and_reload(make, tmp_path):
    loss = make()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 4)).astype(np.float32)
    y = np.eye(8, dtype=np.float32)[np.argmax(x @ rng.normal(size=(4, 8)), axis=1)]  # learnable
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(4,))
    model = keras.Model(inputs, keras.layers.Dense(8)(inputs))
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss=loss, metrics=["categorical_accuracy"])
    model.fit(x, y, epochs=10, batch_size=32, verbose=0)
    _, accuracy = model.evaluate(x, y, verbose=0)
    assert accuracy > 0.8  # chance is 1/8

    path = str(tmp_path / "model.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    assert type(reloaded.loss) is type(loss)
    assert reloaded.loss.get_config() == model.loss.get_config()
    np.testing.assert_allclose(
        reloaded.evaluate(x, y, verbose=0), model.evaluate(x, y, verbose=0), rtol=1e-5
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda: CROLoss(num_items=8, alpha=0.0, kernel="exponential"),
        lambda: LambdaCROLoss(num_items=8, alpha=1.4, weight_kernel="sigmoid", grad_kernel="exponential"),
    ],
    ids=["exp-alpha0", "lambda-sigmoid-exp-alpha1.4"],
)
@pytest.mark.skipif(BACKEND == "torch", reason="float16 on CPU is very slow in PyTorch")
def test_mixed_float16_fit_at_logit_scale_100(make):
    """float16 logits into the float32 loss: rows saturate as for float16 inputs, so it trains
    (without that, every step's float16 gradients overflowed and the loss scale skipped them)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 4)).astype(np.float32)
    y = np.eye(8, dtype=np.float32)[np.argmax(x @ rng.normal(size=(4, 8)), axis=1)]
    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        inputs = keras.Input(shape=(4,))
        logits = keras.layers.Rescaling(100.0)(
            keras.layers.UnitNormalization()(keras.layers.Dense(8)(inputs))
        )
        model = keras.Model(inputs, logits)
        assert keras.backend.standardize_dtype(model.output.dtype) == "float16"
        model.compile(optimizer=keras.optimizers.Adam(0.03), loss=make(), metrics=["categorical_accuracy"])
        history = model.fit(x, y, epochs=6, batch_size=32, verbose=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    losses = history.history["loss"]
    assert np.isfinite(losses).all() and losses[-1] < 0.9 * losses[0]
    assert history.history["categorical_accuracy"][-1] > 0.25  # chance is 1/8
