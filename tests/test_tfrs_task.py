"""tfcroloss.tfrs.Retrieval: TFRS's task, with q handed to a CROLoss-family loss instead of log-Q."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_recommenders as tfrs

import tfcroloss.tfrs
from tests.loss_cases import popularity
from tfcroloss import CROLoss, LambdaCROLoss

NUM_ITEMS = 50
IDS = tf.constant(["a", "b", "a", "c", "d", "e", "b", "f"])  # duplicates: accidental hits


def embeddings(seed, rows, dim=8):
    return tf.constant(np.random.default_rng(seed).normal(size=(rows, dim)).astype(np.float32))


def task_inputs(extra_negatives=2):
    queries = embeddings(0, 6)
    candidates = embeddings(1, 6 + extra_negatives)
    q = tf.constant(popularity(6 + extra_negatives, seed=3))
    return queries, candidates, q


@pytest.mark.parametrize("temperature", [None, 0.5])
@pytest.mark.parametrize(
    "loss",
    [CROLoss(NUM_ITEMS, alpha=1.4, kernel="sigmoid", reduction="sum"),
     LambdaCROLoss(NUM_ITEMS, alpha=1.0, reduction="sum_over_batch_size")],
    ids=["cro-sum", "lambda-mean"],
)
def test_q_goes_to_the_loss_on_the_same_logits(loss, temperature):
    """The task's value is ``loss.call(labels, logits, candidate_sampling_probability=q)`` on
    TFRS's logits (temperature, accidental hits removed, no log-Q shift), reduced as the loss does."""
    queries, candidates, q = task_inputs()
    weights = tf.constant([1.0, 0.0, 2.0, 0.5, 1.0, 1.0])
    task = tfcroloss.tfrs.Retrieval(loss=loss, temperature=temperature, remove_accidental_hits=True)
    got = task(queries, candidates, sample_weight=weights, candidate_sampling_probability=q,
               candidate_ids=IDS, compute_metrics=False)

    logits = tf.matmul(queries, candidates, transpose_b=True) / (temperature or 1.0)
    labels = tf.eye(6, 8)
    logits = tfrs.layers.loss.RemoveAccidentalHits()(labels, logits, IDS)
    per_row = loss.call(labels, logits, candidate_sampling_probability=q).numpy() * weights.numpy()
    want = per_row.sum() / (1 if loss.reduction == "sum" else 6)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)
    # and it is not what TFRS's own task computes (log-Q shift, uniform rank)
    tfrs_value = tfrs.tasks.Retrieval(loss=loss, temperature=temperature, remove_accidental_hits=True)(
        queries, candidates, sample_weight=weights, candidate_sampling_probability=q,
        candidate_ids=IDS, compute_metrics=False)
    assert abs(float(tfrs_value) - want) > 1e-3 * abs(want)


def test_inside_tf_function_and_gradient():
    """Traced (as in fit): same value, and the gradient flows through the weighted rank."""
    queries, candidates, q = task_inputs()
    loss = CROLoss(NUM_ITEMS, alpha=1.0, reduction="sum")
    task = tfcroloss.tfrs.Retrieval(loss=loss)

    @tf.function
    def step(queries):
        with tf.GradientTape() as tape:
            tape.watch(queries)
            value = task(queries, candidates, candidate_sampling_probability=q, compute_metrics=False)
        return value, tape.gradient(value, queries)

    value, grad = step(queries)
    with tf.GradientTape() as tape:
        tape.watch(queries)
        want = tf.reduce_sum(loss.call(tf.eye(6, 8), tf.matmul(queries, candidates, transpose_b=True),
                                       candidate_sampling_probability=q))
    np.testing.assert_allclose(value.numpy(), want.numpy(), rtol=1e-6)
    np.testing.assert_allclose(grad.numpy(), tape.gradient(want, queries).numpy(), rtol=1e-5, atol=1e-7)


def test_softmax_loss_keeps_tfrs_log_q_and_metrics_match_tfrs():
    """With any other loss it is TFRS's task; metrics and batch metrics are TFRS's for both."""
    queries, candidates, q = task_inputs(extra_negatives=0)
    index = tf.data.Dataset.from_tensor_slices(embeddings(1, 6)).batch(4)

    def run(task_class, loss):
        task = task_class(
            loss=loss, metrics=tfrs.metrics.FactorizedTopK(candidates=index, ks=(1, 3)),
            batch_metrics=[tf.keras.metrics.AUC(from_logits=True, name="auc")],
        )
        value = task(queries, candidates, candidate_sampling_probability=q)
        return value.numpy(), {m.name: m.result().numpy() for m in task.metrics}

    for loss in (None, CROLoss(NUM_ITEMS, reduction="sum")):
        (want, want_metrics), (got, got_metrics) = run(tfrs.tasks.Retrieval, loss), run(
            tfcroloss.tfrs.Retrieval, loss)
        assert got_metrics.keys() == want_metrics.keys()
        for name in got_metrics:  # top-k: no q involved; AUC sees the shifted logits only in TFRS's
            if name.startswith("factorized_top_k") or loss is None:
                np.testing.assert_allclose(got_metrics[name], want_metrics[name], err_msg=name)
        if loss is None:
            np.testing.assert_allclose(got, want, rtol=1e-6)


def test_without_q_it_is_tfrs_task():
    queries, candidates, _ = task_inputs()
    loss = LambdaCROLoss(NUM_ITEMS, alpha=1.4, reduction="sum")
    args = dict(remove_accidental_hits=True, num_hard_negatives=3)
    got = tfcroloss.tfrs.Retrieval(loss=loss, **args)(queries, candidates, candidate_ids=IDS)
    want = tfrs.tasks.Retrieval(loss=loss, **args)(queries, candidates, candidate_ids=IDS)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)


def test_refusals():
    queries, candidates, q = task_inputs()
    task = tfcroloss.tfrs.Retrieval(loss=CROLoss(NUM_ITEMS), num_hard_negatives=3)
    with pytest.raises(ValueError, match="num_hard_negatives cannot go with candidate_sampling_probability"):
        task(queries, candidates, candidate_sampling_probability=q)
    small = tfcroloss.tfrs.Retrieval(loss=CROLoss(5), remove_accidental_hits=True)
    with pytest.raises(ValueError, match="num_items=5 is smaller than the 6 distinct candidate ids"):
        small(queries, candidates, candidate_ids=IDS)
    with pytest.raises(ValueError, match="candidate ids must be supplied"):  # TFRS's own check
        small(queries, candidates)
