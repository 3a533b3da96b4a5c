"""CROLoss and LambdaCROLoss against a NumPy reference written from the paper's equations."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from tfcroloss import CROLoss, LambdaCROLoss

KERNELS = ("sigmoid", "softplus", "exponential", "hinge")
ALPHAS = (0.0, 0.6, 1.0, 1.4, 2.0)
MARGIN = 5.0
NUM_ITEMS = 500


# ---- NumPy reference (float64, direct formulas, no log-space tricks) -------------------------


def np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


NP_KERNELS = {  # name: (phi, phi')
    "sigmoid": (np_sigmoid, lambda x: np_sigmoid(x) * (1 - np_sigmoid(x))),
    "softplus": (lambda x: np.log1p(np.exp(x)), np_sigmoid),
    "exponential": (np.exp, np.exp),
    "hinge": (lambda x: np.maximum(x + MARGIN, 0.0), lambda x: (x + MARGIN > 0).astype(float)),
    "unit_step": (lambda x: (x >= 0).astype(float), None),
}


def np_rank(gaps, kernel, num_items):
    """Eq. 24: R = N / M * (1 + sum phi(gap)), gaps of one row's negatives."""
    return num_items / gaps.size * (1.0 + NP_KERNELS[kernel][0](gaps).sum())


def np_scaled_w(rank, alpha, num_items):
    """log(N + 1) * W_alpha(rank), eq. 13."""
    if alpha == 1.0:
        return np.log(rank)
    top = num_items + 1.0
    return np.log(top) * (1.0 - rank ** (1.0 - alpha)) / (1.0 - top ** (1.0 - alpha))


def np_scaled_density(rank, alpha, num_items):
    """d/dR of np_scaled_w: log(N + 1) * w_alpha(R)."""
    if alpha == 1.0:
        return 1.0 / rank
    top = num_items + 1.0
    return np.log(top) * (1.0 - alpha) * rank ** (-alpha) / (top ** (1.0 - alpha) - 1.0)


def np_croloss(y_true, y_pred, kernel, alpha, num_items, weight_kernel=None):
    """Per-row loss and d loss / d logits. With weight_kernel: the Lambda variant (eq. 23)."""
    losses, grads = [], np.zeros_like(y_pred)
    for row, (labels, logits) in enumerate(zip(y_true, y_pred, strict=True)):
        pos = int(np.argmax(labels))
        neg = np.flatnonzero(labels == 0)
        gaps = logits[neg] - logits[pos]
        rank = np_rank(gaps, kernel, num_items)
        if weight_kernel is None:
            losses.append(np_scaled_w(rank, alpha, num_items))
            weight = np_scaled_density(rank, alpha, num_items)
        else:
            weight = np_scaled_density(np_rank(gaps, weight_kernel, num_items), alpha, num_items)
            losses.append(weight * rank)
        d_gaps = weight * num_items / gaps.size * NP_KERNELS[kernel][1](gaps)
        grads[row, neg] = d_gaps
        grads[row, pos] = -d_gaps.sum()
    return np.array(losses), grads


# ---- helpers -----------------------------------------------------------------------------


def make_batch(seed=0, batch=4, candidates=9, scale=3.0):
    rng = np.random.default_rng(seed)
    y_pred = rng.normal(scale=scale, size=(batch, candidates))
    y_true = np.zeros_like(y_pred)
    y_true[np.arange(batch), rng.integers(0, candidates, batch)] = 1.0
    return y_true.astype(np.float32), y_pred.astype(np.float32)


def value_and_grad(loss, y_true, y_pred, sample_weight=None):
    logits = tf.constant(y_pred)
    with tf.GradientTape() as tape:
        tape.watch(logits)
        value = loss(tf.constant(y_true), logits, sample_weight=sample_weight)
    return value.numpy(), tape.gradient(value, logits).numpy()


# ---- values and gradients against the reference ------------------------------------------


@pytest.mark.parametrize("kernel,alpha", list(itertools.product(KERNELS, ALPHAS)))
def test_croloss_matches_reference(kernel, alpha):
    y_true, y_pred = make_batch(seed=hash((kernel, alpha)) % 1000)
    loss = CROLoss(NUM_ITEMS, alpha=alpha, kernel=kernel, margin=MARGIN, reduction="none")
    value, grad = value_and_grad(loss, y_true, y_pred)
    want_value, want_grad = np_croloss(y_true, y_pred.astype(np.float64), kernel, alpha, NUM_ITEMS)
    np.testing.assert_allclose(value, want_value, rtol=2e-5, atol=1e-5)
    np.testing.assert_allclose(grad, want_grad, rtol=2e-4, atol=1e-6)


@pytest.mark.parametrize(
    "weight_kernel,grad_kernel,alpha",
    [
        ("sigmoid", "softplus", 1.0),
        ("sigmoid", "exponential", 1.4),
        ("unit_step", "softplus", 0.6),
        ("unit_step", "hinge", 1.0),
        ("sigmoid", "hinge", 2.0),
        ("softplus", "softplus", 0.0),
    ],
)
def test_lambda_matches_reference(weight_kernel, grad_kernel, alpha):
    y_true, y_pred = make_batch(seed=7, scale=2.0)
    loss = LambdaCROLoss(
        NUM_ITEMS,
        alpha=alpha,
        weight_kernel=weight_kernel,
        grad_kernel=grad_kernel,
        reduction="none",
    )
    value, grad = value_and_grad(loss, y_true, y_pred)
    want_value, want_grad = np_croloss(
        y_true,
        y_pred.astype(np.float64),
        grad_kernel,
        alpha,
        NUM_ITEMS,
        weight_kernel=weight_kernel,
    )
    np.testing.assert_allclose(value, want_value, rtol=2e-5)
    np.testing.assert_allclose(grad, want_grad, rtol=2e-4, atol=1e-6)


def test_lambda_with_same_kernels_has_croloss_gradient():
    """phi1 == phi2 makes eq. 22 the plain CROLoss gradient (eq. 20)."""
    y_true, y_pred = make_batch(seed=3)
    _, plain = value_and_grad(CROLoss(NUM_ITEMS, 1.4, "sigmoid"), y_true, y_pred)
    _, lam = value_and_grad(LambdaCROLoss(NUM_ITEMS, 1.4, "sigmoid", "sigmoid"), y_true, y_pred)
    np.testing.assert_allclose(lam, plain, rtol=1e-5, atol=1e-7)


# ---- the paper's special cases (section 3.5) ---------------------------------------------


def test_exponential_alpha_one_is_softmax_cross_entropy():
    y_true, y_pred = make_batch(seed=11, candidates=12)
    num_negatives = y_pred.shape[1] - 1
    cro = CROLoss(NUM_ITEMS, alpha=1.0, kernel="exponential", reduction="none")
    xent = tf.keras.losses.CategoricalCrossentropy(from_logits=True, reduction="none")
    value, grad = value_and_grad(cro, y_true, y_pred)
    xent_value, xent_grad = value_and_grad(xent, y_true, y_pred)
    np.testing.assert_allclose(grad, xent_grad, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(value - xent_value, np.log(NUM_ITEMS / num_negatives), rtol=1e-5)


@pytest.mark.parametrize(
    "kernel,pairwise",
    [
        ("softplus", lambda gaps: np.log1p(np.exp(gaps))),  # BPR: -log sigmoid(s+ - s-)
        ("hinge", lambda gaps: np.maximum(gaps + MARGIN, 0.0)),  # triplet: (s- - s+ + m)_+
    ],
)
def test_alpha_zero_is_bpr_and_triplet(kernel, pairwise):
    """CROLoss(alpha=0) = log(N+1) * mean pairwise loss + log(N+1) * (1/M - 1/N)."""
    y_true, y_pred = make_batch(seed=5, candidates=10)
    value, _ = value_and_grad(
        CROLoss(NUM_ITEMS, alpha=0.0, kernel=kernel, reduction="none"), y_true, y_pred
    )
    pos = y_pred[y_true == 1][:, None]
    gaps = y_pred[y_true == 0].reshape(len(y_pred), -1) - pos
    mean_pairwise = pairwise(gaps.astype(np.float64)).mean(axis=1)
    scale, m = np.log(NUM_ITEMS + 1.0), gaps.shape[1]
    np.testing.assert_allclose(
        value, scale * mean_pairwise + scale * (1 / m - 1 / NUM_ITEMS), rtol=1e-5
    )


# ---- masking, weights, reductions, stability ---------------------------------------------


@pytest.mark.parametrize(
    "loss", [CROLoss(NUM_ITEMS, 1.2, "sigmoid"), LambdaCROLoss(NUM_ITEMS, 1.0)]
)
def test_masked_logits_are_ignored(loss):
    y_true, y_pred = make_batch(seed=2, candidates=6)
    masked = np.finfo(np.float32).min / 100
    pad = np.full((len(y_pred), 3), masked, np.float32)
    value, grad = value_and_grad(loss, y_true, y_pred)
    padded_value, padded_grad = value_and_grad(
        loss, np.hstack([y_true, np.zeros_like(pad)]), np.hstack([y_pred, pad])
    )
    np.testing.assert_allclose(padded_value, value, rtol=1e-6)
    np.testing.assert_allclose(padded_grad[:, :6], grad, rtol=1e-6)
    assert not padded_grad[:, 6:].any()


def test_row_without_negatives_contributes_nothing():
    masked = np.finfo(np.float32).min / 100
    y_true = np.array([[1, 0, 0], [0, 1, 0]], np.float32)
    y_pred = np.array([[1.0, masked, masked], [0.5, 1.0, 2.0]], np.float32)
    value, grad = value_and_grad(CROLoss(10, reduction="none"), y_true, y_pred)
    assert value[0] == 0 and not grad[0].any() and value[1] > 0


def test_sample_weight_and_reductions():
    y_true, y_pred = make_batch(seed=4)
    weights = np.array([1.0, 0.0, 2.5, 0.5], np.float32)
    per_row, _ = np_croloss(y_true, y_pred.astype(np.float64), "softplus", 1.0, NUM_ITEMS)
    for reduction, want in [
        ("none", per_row * weights),
        ("sum", (per_row * weights).sum()),
        ("sum_over_batch_size", (per_row * weights).sum() / len(weights)),
    ]:
        got = CROLoss(NUM_ITEMS, reduction=reduction)(y_true, y_pred, sample_weight=weights)
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5)


@pytest.mark.parametrize(
    "loss",
    [CROLoss(NUM_ITEMS, a, k) for k in KERNELS for a in ALPHAS]
    + [
        LambdaCROLoss(NUM_ITEMS, a, w, g)
        for w in ("sigmoid", "unit_step")
        for g in KERNELS
        for a in (0.0, 1.0, 1.4)
    ],
    ids=lambda loss: loss.get_config().get("kernel", "lambda"),
)
def test_extreme_logits_stay_finite(loss):
    y_true = np.eye(3, 6, dtype=np.float32)
    y_pred = np.array(
        [
            [1e4, -1e4, 1e4, 0, -1e4, 1e4],
            [-1e4, 1e4, 1e4, 1e4, 1e4, 1e4],
            [0, 0, -1e4, 1e4, -1e4, 0],
        ],
        np.float32,
    )
    value, grad = value_and_grad(loss, y_true, y_pred)
    assert np.isfinite(value).all() and np.isfinite(grad).all()


# ---- argument and input errors -------------------------------------------------------------


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: CROLoss(100, kernel="cosine"), "valid kernels: exp, exponential, hinge, sigmoid"),
        (lambda: CROLoss(100, kernel="unit_step"), "has no gradient"),
        (lambda: LambdaCROLoss(100, grad_kernel="unit_step"), "has no gradient"),
        (lambda: CROLoss(100, alpha=-0.5), "alpha must be a number >= 0"),
        (lambda: CROLoss(0), "num_items must be a positive integer"),
        (lambda: CROLoss(100, weighting="linear"), "valid weightings: power"),
    ],
)
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_inputs():
    loss = CROLoss(4)
    with pytest.raises(tf.errors.InvalidArgumentError, match="more negatives than num_items=4"):
        loss(np.eye(2, 6, dtype=np.float32), np.zeros((2, 6), np.float32))
    with pytest.raises(ValueError, match="same shape"):
        loss(np.eye(2, 3, dtype=np.float32), np.zeros((2, 4), np.float32))
    with pytest.raises(tf.errors.InvalidArgumentError, match="exactly one 1"):
        loss(np.array([[1, 1, 0], [1, 0, 0]], np.float32), np.zeros((2, 3), np.float32))
    with pytest.raises(tf.errors.InvalidArgumentError, match="exactly one 1"):
        loss(np.array([[0, 0, 0], [1, 0, 0]], np.float32), np.zeros((2, 3), np.float32))


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
