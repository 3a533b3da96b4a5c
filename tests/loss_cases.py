"""The loss tests every implementation must pass, against a NumPy reference written from the paper.

No TensorFlow or Keras here: a test module subclasses :class:`LossContract` once, with ``IMPL``
(the tf-keras classes in ``tests/test_losses.py``, the Keras 3 classes per backend in
``tests/keras3/``) having:

- ``CROLoss``, ``LambdaCROLoss``: the classes; ``cross_entropy()``: that Keras's softmax
  cross-entropy from logits with ``reduction="none"``;
- ``value_and_grad(loss, y_true, y_pred, sample_weight=None, dtype=None, q=None)``: the loss
  value and d sum(value) / d y_pred as float64 NumPy arrays, the inputs cast to ``dtype``; with
  ``q`` it calls ``loss.call(y_true, y_pred, candidate_sampling_probability=q)``;
- ``loss_kwargs(dtype)``: extra constructor arguments for a half-precision dtype.

Every ``test_`` method of the contract then runs for that flavour: there is no list to keep.
"""

import inspect
import itertools

import ml_dtypes
import numpy as np
import pytest

from tfcroloss import functional

KERNELS = ("sigmoid", "softplus", "exponential", "hinge")
ALPHAS = (0.0, 0.6, 1.0, 1.4, 2.0)
MARGIN = 5.0
NUM_ITEMS = 500
MASKED = np.finfo(np.float32).min / 100  # what TFRS writes into masked logits
HALF_DTYPES = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16}
LAMBDA_CASES = [
    ("sigmoid", "softplus", 1.0),
    ("sigmoid", "exponential", 1.4),
    ("unit_step", "softplus", 0.6),
    ("unit_step", "hinge", 1.0),
    ("sigmoid", "hinge", 2.0),
    ("softplus", "softplus", 0.0),
]


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


def np_rank(gaps, kernel, num_items, weights=None):
    """Eq. 24: R = N / M * (1 + sum phi(gap)), gaps of one row's negatives.

    With importance weights w_j = 1 / (N q_j): R = N / M + sum phi_j / (M q_j).
    """
    weights = np.ones_like(gaps) if weights is None else weights
    return num_items / gaps.size * (1.0 + (NP_KERNELS[kernel][0](gaps) * weights).sum())


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


def np_croloss(y_true, y_pred, kernel, alpha, num_items, weight_kernel=None, q=None):
    """Per-row loss and d loss / d logits. With weight_kernel: the Lambda variant (eq. 23).

    ``q``: per-draw sampling probabilities, ``[candidates]`` or ``[batch, candidates]``.
    """
    losses, grads = [], np.zeros_like(y_pred)
    for row, (labels, logits) in enumerate(zip(y_true, y_pred, strict=True)):
        pos = int(np.argmax(labels))
        neg = np.flatnonzero(labels == 0)
        gaps = logits[neg] - logits[pos]
        weights = None
        if q is not None:
            row_q = np.broadcast_to(q, y_pred.shape)[row]
            weights = 1.0 / (num_items * row_q[neg])
        rank = np_rank(gaps, kernel, num_items, weights)
        if weight_kernel is None:
            losses.append(np_scaled_w(rank, alpha, num_items))
            weight = np_scaled_density(rank, alpha, num_items)
        else:
            weight = np_scaled_density(
                np_rank(gaps, weight_kernel, num_items, weights), alpha, num_items
            )
            losses.append(weight * rank)
        d_gaps = weight * num_items / gaps.size * NP_KERNELS[kernel][1](gaps)
        if weights is not None:
            d_gaps = d_gaps * weights
        grads[row, neg] = d_gaps
        grads[row, pos] = -d_gaps.sum()
    return np.array(losses), grads


def make_batch(seed=0, batch=4, candidates=9, scale=3.0):
    rng = np.random.default_rng(seed)
    y_pred = rng.normal(scale=scale, size=(batch, candidates))
    y_true = np.zeros_like(y_pred)
    y_true[np.arange(batch), rng.integers(0, candidates, batch)] = 1.0
    return y_true.astype(np.float32), y_pred.astype(np.float32)


# ---- values and gradients against the reference ------------------------------------------


# ---- the paper's special cases (section 3.5) ---------------------------------------------


# ---- masking, weights, reductions, stability ---------------------------------------------


SOME_LOSSES = {
    "cro": lambda impl, **kwargs: impl.CROLoss(NUM_ITEMS, 1.2, "sigmoid", **kwargs),
    "lambda": lambda impl, **kwargs: impl.LambdaCROLoss(NUM_ITEMS, 1.0, **kwargs),
}


EXTREME_LOSSES = [("cro", k, a, None) for k in KERNELS for a in ALPHAS] + [
    ("lambda", g, a, w) for w in ("sigmoid", "unit_step") for g in KERNELS for a in (0.0, 1.0, 1.4)
]


def make_loss(impl, variant, kernel, alpha, weight_kernel, **kwargs):
    if variant == "cro":
        return impl.CROLoss(NUM_ITEMS, alpha, kernel, **kwargs)
    return impl.LambdaCROLoss(NUM_ITEMS, alpha, weight_kernel, kernel, **kwargs)


EXTREME = np.array(
    [
        [1e4, -1e4, 1e4, 0, -1e4, 1e4],
        [-1e4, 1e4, 1e4, 1e4, 1e4, 1e4],
        [0, 0, -1e4, 1e4, -1e4, 0],
    ],
    np.float32,
)


BAD_ARGUMENTS = {
    "kernel": (lambda impl: impl.CROLoss(100, kernel="cosine"), "valid kernels: exp, exponential, hinge, sigmoid"),
    "step": (lambda impl: impl.CROLoss(100, kernel="unit_step"), "has no gradient"),
    "grad_kernel": (lambda impl: impl.LambdaCROLoss(100, grad_kernel="unit_step"), "has no gradient"),
    "alpha": (lambda impl: impl.CROLoss(100, alpha=-0.5), "alpha must be a number >= 0"),
    "num_items": (lambda impl: impl.CROLoss(0), "num_items must be a positive integer"),
    "weighting": (lambda impl: impl.CROLoss(100, weighting="linear"), "valid weightings: power"),
    "margin": (lambda impl: impl.CROLoss(100, kernel="hinge", margin="wide"), "margin must be a number"),
}


# ---- NaN is never hidden ----------------------------------------------------------------


# ---- half precision -------------------------------------------------------------------------


HALF_CASES = [("cro", k, a, None) for k in KERNELS for a in (0.0, 1.0, 1.4)] + [
    ("lambda", "softplus", 1.0, "sigmoid"),
    ("lambda", "exponential", 1.4, "sigmoid"),
    ("lambda", "hinge", 0.6, "unit_step"),
]


# ---- non-uniform negatives: importance-weighted rank ---------------------------------------


def popularity(candidates, seed=0):
    weights = 1.0 / np.arange(1, candidates + 1) ** 1.1  # Zipf-like
    return np.random.default_rng(seed).permutation(weights / weights.sum()).astype(np.float32)


class LossContract:
    """The tests every implementation passes. A test module subclasses this once, as
    ``class TestX(LossContract)`` with ``IMPL`` set; a test added here runs for every flavour."""

    IMPL: type

    @pytest.fixture
    def impl(self):
        return self.IMPL

    @pytest.mark.parametrize("kernel,alpha", list(itertools.product(KERNELS, ALPHAS)))
    def test_croloss_matches_reference(self, impl, kernel, alpha):
        y_true, y_pred = make_batch(seed=sum(map(ord, kernel)) + int(10 * alpha))
        loss = impl.CROLoss(NUM_ITEMS, alpha=alpha, kernel=kernel, margin=MARGIN, reduction="none")
        value, grad = impl.value_and_grad(loss, y_true, y_pred)
        want_value, want_grad = np_croloss(y_true, y_pred.astype(np.float64), kernel, alpha, NUM_ITEMS)
        np.testing.assert_allclose(value, want_value, rtol=2e-5, atol=1e-5)
        np.testing.assert_allclose(grad, want_grad, rtol=2e-4, atol=1e-6)

    @pytest.mark.parametrize("weight_kernel,grad_kernel,alpha", LAMBDA_CASES)
    def test_lambda_matches_reference(self, impl, weight_kernel, grad_kernel, alpha):
        y_true, y_pred = make_batch(seed=7, scale=2.0)
        loss = impl.LambdaCROLoss(
            NUM_ITEMS,
            alpha=alpha,
            weight_kernel=weight_kernel,
            grad_kernel=grad_kernel,
            reduction="none",
        )
        value, grad = impl.value_and_grad(loss, y_true, y_pred)
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

    def test_lambda_with_same_kernels_has_croloss_gradient(self, impl):
        """phi1 == phi2 makes eq. 22 the plain CROLoss gradient (eq. 20)."""
        y_true, y_pred = make_batch(seed=3)
        _, plain = impl.value_and_grad(impl.CROLoss(NUM_ITEMS, 1.4, "sigmoid"), y_true, y_pred)
        _, lam = impl.value_and_grad(
            impl.LambdaCROLoss(NUM_ITEMS, 1.4, "sigmoid", "sigmoid"), y_true, y_pred
        )
        np.testing.assert_allclose(lam, plain, rtol=1e-5, atol=1e-7)

    def test_exponential_alpha_one_is_softmax_cross_entropy(self, impl):
        y_true, y_pred = make_batch(seed=11, candidates=12)
        num_negatives = y_pred.shape[1] - 1
        cro = impl.CROLoss(NUM_ITEMS, alpha=1.0, kernel="exponential", reduction="none")
        value, grad = impl.value_and_grad(cro, y_true, y_pred)
        xent_value, xent_grad = impl.value_and_grad(impl.cross_entropy(), y_true, y_pred)
        np.testing.assert_allclose(grad, xent_grad, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(value - xent_value, np.log(NUM_ITEMS / num_negatives), rtol=1e-5)

    @pytest.mark.parametrize(
        "kernel,pairwise",
        [
            ("softplus", lambda gaps: np.log1p(np.exp(gaps))),  # BPR: -log sigmoid(s+ - s-)
            ("hinge", lambda gaps: np.maximum(gaps + MARGIN, 0.0)),  # triplet: (s- - s+ + m)_+
        ],
    )
    def test_alpha_zero_is_bpr_and_triplet(self, impl, kernel, pairwise):
        """CROLoss(alpha=0) = log(N+1) * mean pairwise loss + log(N+1) * (1/M - 1/N)."""
        y_true, y_pred = make_batch(seed=5, candidates=10)
        value, _ = impl.value_and_grad(
            impl.CROLoss(NUM_ITEMS, alpha=0.0, kernel=kernel, reduction="none"), y_true, y_pred
        )
        pos = y_pred[y_true == 1][:, None]
        gaps = y_pred[y_true == 0].reshape(len(y_pred), -1) - pos
        mean_pairwise = pairwise(gaps.astype(np.float64)).mean(axis=1)
        scale, m = np.log(NUM_ITEMS + 1.0), gaps.shape[1]
        np.testing.assert_allclose(
            value, scale * mean_pairwise + scale * (1 / m - 1 / NUM_ITEMS), rtol=1e-5
        )

    @pytest.mark.parametrize("variant,kernel,alpha,weight_kernel", [
        ("cro", "softplus", 1.0, None), ("cro", "sigmoid", 0.6, None), ("lambda", "softplus", 1.4, "sigmoid"),
    ])
    def test_more_candidates_than_num_items(self, impl, variant, kernel, alpha, weight_kernel):
        """In-batch negatives are draws with replacement: a batch may hold more candidates than
        the catalog, and the same item many times (eq. 24 holds for any M)."""
        num_items = 3
        y_true, y_pred = make_batch(seed=18, batch=6, candidates=12)
        y_pred[:, 8:] = y_pred[:, :4]  # duplicates among the candidates
        y_pred[np.arange(6), np.argmax(y_true, axis=1)] += 1.0  # positives duplicated stay positives
        loss = (impl.CROLoss(num_items, alpha, kernel, reduction="none") if variant == "cro"
                else impl.LambdaCROLoss(num_items, alpha, weight_kernel, kernel, reduction="none"))
        value, grad = impl.value_and_grad(loss, y_true, y_pred)
        want_value, want_grad = np_croloss(
            y_true, y_pred.astype(np.float64), kernel, alpha, num_items, weight_kernel=weight_kernel
        )
        np.testing.assert_allclose(value, want_value, rtol=2e-5, atol=1e-5)
        np.testing.assert_allclose(grad, want_grad, rtol=2e-4, atol=1e-6)

    @pytest.mark.parametrize("make", SOME_LOSSES.values(), ids=SOME_LOSSES.keys())
    def test_masked_logits_are_ignored(self, impl, make):
        loss = make(impl)
        y_true, y_pred = make_batch(seed=2, candidates=6)
        pad = np.full((len(y_pred), 3), MASKED, np.float32)
        value, grad = impl.value_and_grad(loss, y_true, y_pred)
        padded_value, padded_grad = impl.value_and_grad(
            loss, np.hstack([y_true, np.zeros_like(pad)]), np.hstack([y_pred, pad])
        )
        np.testing.assert_allclose(padded_value, value, rtol=1e-6)
        np.testing.assert_allclose(padded_grad[:, :6], grad, rtol=1e-6)
        assert not padded_grad[:, 6:].any()

    def test_row_without_negatives_contributes_nothing(self, impl):
        y_true = np.array([[1, 0, 0], [0, 1, 0]], np.float32)
        y_pred = np.array([[1.0, MASKED, MASKED], [0.5, 1.0, 2.0]], np.float32)
        value, grad = impl.value_and_grad(impl.CROLoss(10, reduction="none"), y_true, y_pred)
        assert value[0] == 0 and not grad[0].any() and value[1] > 0

    def test_sample_weight_and_reductions(self, impl):
        y_true, y_pred = make_batch(seed=4)
        weights = np.array([1.0, 0.0, 2.5, 0.5], np.float32)
        per_row, _ = np_croloss(y_true, y_pred.astype(np.float64), "softplus", 1.0, NUM_ITEMS)
        for reduction, want in [
            ("none", per_row * weights),
            ("sum", (per_row * weights).sum()),
            ("sum_over_batch_size", (per_row * weights).sum() / len(weights)),
        ]:
            got, _ = impl.value_and_grad(
                impl.CROLoss(NUM_ITEMS, reduction=reduction), y_true, y_pred, sample_weight=weights
            )
            np.testing.assert_allclose(got, want, rtol=1e-5)

    @pytest.mark.parametrize("variant,kernel,alpha,weight_kernel", EXTREME_LOSSES)
    def test_extreme_logits_stay_finite(self, impl, variant, kernel, alpha, weight_kernel):
        loss = make_loss(impl, variant, kernel, alpha, weight_kernel)
        value, grad = impl.value_and_grad(loss, np.eye(3, 6, dtype=np.float32), EXTREME)
        assert np.isfinite(value).all() and np.isfinite(grad).all()

    @pytest.mark.parametrize("make,match", BAD_ARGUMENTS.values(), ids=BAD_ARGUMENTS.keys())
    def test_bad_arguments(self, impl, make, match):
        with pytest.raises(ValueError, match=match):
            make(impl)

    @pytest.mark.parametrize("make", SOME_LOSSES.values(), ids=SOME_LOSSES.keys())
    @pytest.mark.parametrize("where", ["all", "one_negative", "positive"])
    def test_nan_logits_make_the_row_nan(self, impl, make, where):
        """Like softmax cross-entropy: a NaN row is a NaN loss, the other rows are untouched."""
        y_true, y_pred = make_batch(seed=6, candidates=5)
        positive = int(np.argmax(y_true[1]))
        poisoned = y_pred.copy()
        if where == "all":
            poisoned[1] = np.nan
        elif where == "one_negative":
            poisoned[1, (positive + 1) % 5] = np.nan
        else:
            poisoned[1, positive] = np.nan
        per_row = make(impl, reduction="none")
        want, _ = impl.value_and_grad(per_row, y_true, y_pred)
        value, grad = impl.value_and_grad(per_row, y_true, poisoned)
        assert np.isnan(value[1])
        np.testing.assert_allclose(np.delete(value, 1), np.delete(want, 1), rtol=1e-6)
        assert np.isfinite(np.delete(grad, 1, axis=0)).all()
        mean, _ = impl.value_and_grad(make(impl), y_true, poisoned)
        assert np.isnan(mean)  # the reduced loss shows it: TerminateOnNaN stops the run

    def test_masked_candidates_stay_ignored_beside_nan(self, impl):
        y_true = np.array([[1, 0, 0, 0]], np.float32)
        y_pred = np.array([[1.0, 0.5, MASKED, np.nan]], np.float32)
        value, _ = impl.value_and_grad(impl.CROLoss(10, reduction="none"), y_true, y_pred)
        assert np.isnan(value).all()
        value, _ = impl.value_and_grad(impl.CROLoss(10, reduction="none"), y_true[:, :3], y_pred[:, :3])
        want, _ = np_croloss(y_true[:, :2], y_pred[:, :2].astype(np.float64), "softplus", 1.0, 10)
        np.testing.assert_allclose(value, want, rtol=1e-6)

    @pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
    @pytest.mark.parametrize("variant,kernel,alpha,weight_kernel", HALF_CASES)
    def test_half_precision_matches_float32(self, impl, dtype, variant, kernel, alpha, weight_kernel):
        """Computed in float32 from the rounded logits, returned in the input dtype."""
        y_true, y_pred = make_batch(seed=8, scale=2.0)
        rounded = y_pred.astype(HALF_DTYPES[dtype]).astype(np.float32)
        loss = make_loss(impl, variant, kernel, alpha, weight_kernel, reduction="none", **impl.loss_kwargs(dtype))
        value, grad, value_dtype = impl.value_and_grad(loss, y_true, y_pred, dtype=dtype, with_dtype=True)
        assert value_dtype == dtype
        reference = make_loss(impl, variant, kernel, alpha, weight_kernel, reduction="none")
        want_value, want_grad = impl.value_and_grad(reference, y_true, rounded)
        tolerance = {"float16": 2e-3, "bfloat16": 1.6e-2}[dtype]  # the output's own rounding
        np.testing.assert_allclose(value, want_value, rtol=tolerance, atol=tolerance)
        np.testing.assert_allclose(grad, want_grad, rtol=tolerance, atol=tolerance)

    @pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
    @pytest.mark.parametrize(
        "variant,kernel,alpha,weight_kernel",
        [("cro", k, a, None) for k in KERNELS for a in (0.0, 1.0, 1.4)]
        + [("lambda", g, a, w) for w in ("sigmoid", "unit_step") for g in KERNELS for a in (0.0, 1.4)],
    )
    def test_half_precision_extreme_logits_stay_finite(self, impl, dtype, variant, kernel, alpha, weight_kernel):
        """+-1e4 logits in float16 once gave 1e29 (exponential, alpha 0) and non-finite gradients."""
        loss = make_loss(impl, variant, kernel, alpha, weight_kernel, reduction="none", **impl.loss_kwargs(dtype))
        value, grad = impl.value_and_grad(loss, np.eye(3, 6, dtype=np.float32), EXTREME, dtype=dtype)
        assert np.isfinite(value).all() and np.isfinite(grad).all()
        assert (value >= 0).all() and np.abs(grad).max() > 0

    @pytest.mark.parametrize("shape", ["candidates", "batch_candidates"])
    @pytest.mark.parametrize(
        "variant,kernel,alpha,weight_kernel",
        [("cro", k, a, None) for k in KERNELS for a in (0.0, 1.0, 1.4)] + [
            ("lambda", g, a, w) for w, g, a in LAMBDA_CASES
        ],
    )
    def test_sampling_probability_matches_reference(self, impl, shape, variant, kernel, alpha, weight_kernel):
        y_true, y_pred = make_batch(seed=12, scale=2.0)
        q = popularity(y_pred.shape[1])
        if shape == "batch_candidates":
            q = np.stack([popularity(y_pred.shape[1], seed) for seed in range(len(y_pred))])
        loss = make_loss(impl, variant, kernel, alpha, weight_kernel, reduction="none")
        value, grad = impl.value_and_grad(loss, y_true, y_pred, q=q)
        want_value, want_grad = np_croloss(
            y_true, y_pred.astype(np.float64), kernel, alpha, NUM_ITEMS, weight_kernel=weight_kernel,
            q=q.astype(np.float64),
        )
        np.testing.assert_allclose(value, want_value, rtol=5e-5, atol=1e-5)
        np.testing.assert_allclose(grad, want_grad, rtol=5e-4, atol=1e-6)

    @pytest.mark.parametrize("kernel", KERNELS)
    def test_uniform_sampling_probability_is_eq_24(self, impl, kernel):
        y_true, y_pred = make_batch(seed=13)
        loss = impl.CROLoss(NUM_ITEMS, 1.4, kernel, reduction="none")
        uniform = np.full(y_pred.shape[1], 1.0 / NUM_ITEMS, np.float32)
        value, grad = impl.value_and_grad(loss, y_true, y_pred)
        weighted_value, weighted_grad = impl.value_and_grad(loss, y_true, y_pred, q=uniform)
        np.testing.assert_allclose(weighted_value, value, rtol=1e-6)
        np.testing.assert_allclose(weighted_grad, grad, rtol=1e-5, atol=1e-9)

    def test_class_signatures_are_the_functions(self, impl):
        """Each class takes its function's loss arguments, in order, with the same defaults."""
        for cls, fn in ((impl.CROLoss, functional.cro_loss), (impl.LambdaCROLoss, functional.lambda_cro_loss)):
            wanted = [(p.name, p.default) for p in inspect.signature(fn).parameters.values()
                      if p.kind is p.KEYWORD_ONLY and p.name not in ("candidate_sampling_probability", "ops")]
            got = [(p.name, p.default) for p in inspect.signature(cls).parameters.values()
                   if p.name not in ("reduction", "name", "dtype")]
            assert got == wanted, cls.__name__
