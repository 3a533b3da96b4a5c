"""CROLoss and LambdaCROLoss (tf-keras) against a NumPy reference written from the paper's equations.

The reference and the tests every implementation shares are in ``tests/loss_cases.py``; the Keras 3
classes run the same tests per backend (``tests/keras3/``). Here: the tf-keras implementation and what only
tf-keras has (graph assertions, tf.keras serialization, fit, mixed precision).
"""

import numpy as np
import pytest
import tensorflow as tf

from tests.loss_cases import NUM_ITEMS, LossContract, make_batch, np_croloss
from tfcroloss import CROLoss, LambdaCROLoss, cro_loss, lambda_cro_loss


class TFKeras:
    """The tf-keras implementation, as ``tests/loss_cases.py`` drives it."""

    CROLoss = CROLoss
    LambdaCROLoss = LambdaCROLoss

    @staticmethod
    def cross_entropy():
        return tf.keras.losses.CategoricalCrossentropy(from_logits=True, reduction="none")

    @staticmethod
    def loss_kwargs(dtype):
        return {}

    @staticmethod
    def value_and_grad(loss, y_true, y_pred, sample_weight=None, dtype=None, q=None, with_dtype=False):
        logits = tf.constant(y_pred)
        if dtype is not None:
            logits = tf.cast(logits, dtype)
        with tf.GradientTape() as tape:
            tape.watch(logits)
            if q is None:
                value = loss(tf.constant(y_true), logits, sample_weight=sample_weight)
            else:
                value = loss.call(tf.constant(y_true), logits, candidate_sampling_probability=q)
        grad = tape.gradient(value, logits)
        result = (
            tf.cast(value, tf.float64).numpy(),
            tf.cast(grad, tf.float64).numpy(),
        )
        return (*result, value.dtype.name) if with_dtype else result


class TestTFKeras(LossContract):
    """The shared NumPy-reference tests, against tf-keras."""

    IMPL = TFKeras


def value_and_grad(loss, y_true, y_pred, sample_weight=None):
    return TFKeras.value_and_grad(loss, y_true, y_pred, sample_weight)


@pytest.mark.parametrize("q", [None, "popularity"])
def test_functions_match_classes(q):
    y_true, y_pred = make_batch(seed=14)
    q = None if q is None else np.linspace(0.05, 0.2, y_pred.shape[1]).astype(np.float32)
    cro = CROLoss(NUM_ITEMS, alpha=1.4, kernel="hinge", margin=2.0, reduction="none")
    lam = LambdaCROLoss(NUM_ITEMS, alpha=0.6, weight_kernel="unit_step", grad_kernel="exp")
    np.testing.assert_array_equal(
        cro_loss(y_true, y_pred, num_items=NUM_ITEMS, alpha=1.4, kernel="hinge", margin=2.0,
                 candidate_sampling_probability=q).numpy(),
        cro.call(y_true, y_pred, candidate_sampling_probability=q).numpy(),
    )
    np.testing.assert_array_equal(
        lambda_cro_loss(y_true, y_pred, num_items=NUM_ITEMS, alpha=0.6, weight_kernel="unit_step",
                        grad_kernel="exp", candidate_sampling_probability=q).numpy(),
        lam.call(y_true, y_pred, candidate_sampling_probability=q).numpy(),
    )


def test_uniform_case_is_todays_loss_bit_for_bit():
    """Without sampling probabilities the loss is eq. 24 exactly as before importance weights."""
    y_true, y_pred = make_batch(seed=15)
    for kernel in ("softplus", "exponential"):
        got = CROLoss(NUM_ITEMS, 1.4, kernel, reduction="none")(y_true, y_pred).numpy()
        want, _ = np_croloss(y_true, y_pred.astype(np.float64), kernel, 1.4, NUM_ITEMS)
        np.testing.assert_allclose(got, want, rtol=2e-6)


def test_bad_sampling_probability():
    y_true, y_pred = make_batch(seed=16, candidates=4)
    loss = CROLoss(NUM_ITEMS)
    with pytest.raises(ValueError, match="must be > 0 for every negative"):
        loss.call(y_true, y_pred, candidate_sampling_probability=np.array([0.5, 0.0, 0.25, 0.25], np.float32))
    with pytest.raises(ValueError, match=r"\[candidates\] or \[batch, candidates\]"):
        loss.call(y_true, y_pred, candidate_sampling_probability=np.ones((1, 4, 1), np.float32))


# ---- argument and input errors -------------------------------------------------------------


def test_bad_inputs():
    """Eager calls name the problem (this used to be a graph assertion, InvalidArgumentError)."""
    loss = CROLoss(4)
    with pytest.raises(ValueError, match="same shape"):
        loss(np.eye(2, 3, dtype=np.float32), np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="exactly one 1"):
        loss(np.array([[1, 1, 0], [1, 0, 0]], np.float32), np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="exactly one 1"):
        loss(np.array([[0, 0, 0], [1, 0, 0]], np.float32), np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="exactly one 1"):
        loss(np.array([[0.5, 0.5, 0], [1, 0, 0]], np.float32), np.zeros((2, 3), np.float32))


@pytest.mark.parametrize("bad", ["two_ones", "no_one", "soft_label", "zero_q", "nan_q"])
def test_bad_rows_inside_a_traced_step_are_nan(bad):
    """Inside tf.function (fit) no assertion stops the step: the bad row's loss is NaN, so the
    reduced loss is NaN (TerminateOnNaN stops the run), and the other rows are untouched."""
    y_true, y_pred = make_batch(seed=17, candidates=5)
    q = np.full(5, 0.2, np.float32)
    labels, probability = y_true.copy(), q.copy()
    negative = (int(np.argmax(y_true[1])) + 1) % 5
    if bad == "two_ones":
        labels[1, negative] = 1.0
    elif bad == "no_one":
        labels[1] = 0.0
    elif bad == "soft_label":
        labels[1] = 0.2
    else:
        probability = np.broadcast_to(q, y_pred.shape).copy()
        probability[1, negative] = 0.0 if bad == "zero_q" else np.nan
    loss = LambdaCROLoss(NUM_ITEMS, alpha=1.4, reduction="none")
    step = tf.function(lambda y, s, q: loss.call(y, s, candidate_sampling_probability=q))
    want = step(y_true, y_pred, q).numpy()
    got = step(labels, y_pred, probability).numpy()
    assert np.isnan(got[1])
    np.testing.assert_allclose(np.delete(got, 1), np.delete(want, 1), rtol=1e-6)


# ---- serialization --------------------------------------------------------------------------


@tf.keras.utils.register_keras_serializable(package="tests")
def soft_step(x):
    return tf.math.sigmoid(2.0 * x)


@pytest.mark.parametrize(
    "loss",
    [
        CROLoss(NUM_ITEMS, alpha=1.4, kernel="hinge", margin=0.5, reduction="sum", name="cro"),
        CROLoss(NUM_ITEMS, alpha=0.6, kernel=soft_step),
        LambdaCROLoss(NUM_ITEMS, alpha=1.4, weight_kernel="unit_step", grad_kernel="exp"),
    ],
)
def test_serialization_round_trips(loss):
    y_true, y_pred = make_batch(seed=9)
    want = loss(y_true, y_pred).numpy()
    from_config = type(loss).from_config(loss.get_config())
    deserialized = tf.keras.losses.deserialize(tf.keras.losses.serialize(loss))
    assert type(deserialized) is type(loss)
    assert from_config.get_config() == loss.get_config() == deserialized.get_config()
    for clone in (from_config, deserialized):
        np.testing.assert_allclose(clone(y_true, y_pred).numpy(), want, rtol=1e-6)


@pytest.mark.parametrize(
    "saved",
    [  # as tf.keras.losses.serialize wrote them before the classes became function wrappers
        {"class_name": "tfcroloss>CROLoss", "config": {
            "reduction": "sum", "name": "cro", "num_items": NUM_ITEMS, "alpha": 1.4, "margin": 5.0,
            "weighting": "power", "kernel": "hinge"}},
        {"class_name": "tfcroloss>LambdaCROLoss", "config": {
            "reduction": "auto", "name": "lambda_cro_loss", "num_items": NUM_ITEMS, "alpha": 1.4,
            "margin": 5.0, "weighting": "power", "weight_kernel": "unit_step", "grad_kernel": "softplus"}},
    ],
)
def test_configs_saved_by_earlier_versions_still_load(saved):
    loss = tf.keras.losses.deserialize(saved)
    assert loss.get_config() == saved["config"]
    y_true, y_pred = make_batch(seed=10)
    kernel = saved["config"].get("kernel") or saved["config"]["grad_kernel"]
    want, _ = np_croloss(y_true, y_pred.astype(np.float64), kernel, 1.4, NUM_ITEMS,
                         weight_kernel=saved["config"].get("weight_kernel"))
    reduce = np.sum if saved["config"]["reduction"] == "sum" else np.mean
    np.testing.assert_allclose(loss(y_true, y_pred).numpy(), reduce(want), rtol=1e-5)


def _tiny_model():
    inputs = tf.keras.Input(shape=(4,))
    return tf.keras.Model(inputs, tf.keras.layers.Dense(8)(inputs))


@pytest.mark.parametrize(
    "loss", [CROLoss(num_items=8, alpha=1.0), LambdaCROLoss(num_items=8, alpha=1.4)]
)
def test_compile_fit_save_and_reload(loss, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 4)).astype(np.float32)
    y = np.eye(8, dtype=np.float32)[np.argmax(x @ rng.normal(size=(4, 8)), axis=1)]  # learnable
    model = _tiny_model()
    model.compile(
        optimizer=tf.keras.optimizers.Adam(0.05), loss=loss, metrics=["categorical_accuracy"]
    )
    model.fit(x, y, epochs=10, batch_size=32, verbose=0)
    _, accuracy = model.evaluate(x, y, verbose=0)
    assert accuracy > 0.8  # chance is 1/8

    path = str(tmp_path / "model.keras")
    model.save(path)
    reloaded = tf.keras.models.load_model(path)
    assert type(reloaded.loss) is type(loss)
    assert reloaded.loss.get_config() == model.loss.get_config()
    np.testing.assert_allclose(
        reloaded.evaluate(x, y, verbose=0), model.evaluate(x, y, verbose=0), rtol=1e-5
    )


@pytest.mark.parametrize(
    "loss",
    [
        CROLoss(num_items=8, alpha=0.0, kernel="exponential"),
        CROLoss(num_items=8, alpha=1.0, kernel="softplus"),
        LambdaCROLoss(num_items=8, alpha=1.4, weight_kernel="sigmoid", grad_kernel="exponential"),
    ],
    ids=["exp-alpha0", "softplus-alpha1", "lambda-sigmoid-exp-alpha1.4"],
)
def test_mixed_float16_fit_at_logit_scale_100(loss):
    """float16 logits of scale 100 used to overflow (exp alpha 0, Lambda sigmoid/exp alpha 1.4).

    (In float32 these two diverge to NaN at this scale: their rank estimates pass 1e26, Adam's
    squared gradients overflow. Row losses of float16 inputs saturate above 4096, so they train.)
    """
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 4)).astype(np.float32)
    y = np.eye(8, dtype=np.float32)[np.argmax(x @ rng.normal(size=(4, 8)), axis=1)]
    tf.keras.utils.set_random_seed(1)  # unseeded, some Dense initializations did not learn in 8 epochs
    tf.keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        inputs = tf.keras.Input(shape=(4,))
        logits = tf.keras.layers.Rescaling(100.0)(
            tf.keras.layers.UnitNormalization()(tf.keras.layers.Dense(8)(inputs))
        )
        model = tf.keras.Model(inputs, logits)
        assert model.output.dtype == tf.float16
        model.compile(optimizer=tf.keras.optimizers.Adam(0.01), loss=loss, metrics=["categorical_accuracy"])
        history = model.fit(x, y, epochs=8, batch_size=32, verbose=0)
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")
    losses = history.history["loss"]
    assert np.isfinite(losses).all() and losses[-1] < 0.9 * losses[0]
    assert history.history["categorical_accuracy"][-1] > 0.25  # chance is 1/8
