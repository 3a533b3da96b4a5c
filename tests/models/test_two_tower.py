"""The two-tower model's candidates: shared negatives, in-batch negatives, accidental hits, log-Q."""

import numpy as np
import pytest
import tensorflow as tf

from tests.test_losses import np_croloss
from tfcroloss.models import TwoTowerModel, build_loss

NUM_ITEMS = 30
HISTORY = np.array([[1, 2, 0], [3, 0, 0], [4, 5, 6], [7, 8, 0]], np.int32)
POSITIVES = np.array([9, 10, 11, 9], np.int32)  # rows 0 and 3 share their positive


def make_model(negatives="sampled", tower="mean", **kwargs):
    model = TwoTowerModel(
        NUM_ITEMS, build_loss("croloss", NUM_ITEMS, kernel="sigmoid", alpha=1.2),
        embedding_dim=8, hidden_dims=[8], tower=tower, negatives=negatives, negatives_per_positive=2, seed=3,
        **kwargs,
    )
    model.user_embeddings(tf.constant(HISTORY))
    return model


def reference_loss(model, candidate_ids, keep):
    """Mean over rows of the NumPy CROLoss on the kept candidates (column of row i's positive first)."""
    users = model.user_embeddings(tf.constant(HISTORY)).numpy().astype(np.float64)
    items = model.item_vectors(tf.constant(candidate_ids)).numpy().astype(np.float64)
    scores = model.temperature_scale * users @ items.T
    losses = []
    for row in range(len(HISTORY)):
        columns = [row] + [c for c in range(len(candidate_ids)) if keep(row, c)]
        labels = np.zeros((1, len(columns)))
        labels[0, 0] = 1
        losses.append(np_croloss(labels, scores[row : row + 1, columns], "sigmoid", 1.2, NUM_ITEMS)[0][0])
    return np.mean(losses)


def features():
    return {"history": tf.constant(HISTORY), "item_id": tf.constant(POSITIVES)}


def test_shared_negatives_only_and_accidental_hits_removed():
    model = make_model("sampled")
    sampled = model._shared_negatives(tf.constant(4), training=False).numpy()
    assert len(sampled) == 4 * 2 and sampled.min() >= 1 and sampled.max() <= NUM_ITEMS
    loss = model.compute_loss(features(), training=False).numpy()
    candidates = np.concatenate([POSITIVES, sampled])
    want = reference_loss(model, candidates, lambda r, c: c >= 4 and candidates[c] != POSITIVES[r])
    np.testing.assert_allclose(loss, want, rtol=1e-5)


def test_in_batch_negatives_skip_rows_with_the_same_item():
    model = make_model("in_batch")
    loss = model.compute_loss(features(), training=False).numpy()
    want = reference_loss(model, POSITIVES, lambda r, c: c != r and POSITIVES[c] != POSITIVES[r])
    np.testing.assert_allclose(loss, want, rtol=1e-5)


def test_log_q_correction_subtracts_log_probability():
    probabilities = np.linspace(1.0, 2.0, NUM_ITEMS + 1)
    probabilities /= probabilities.sum()
    model = make_model("in_batch", item_probabilities=probabilities)
    plain = make_model("in_batch")
    plain.set_weights(model.get_weights())
    assert not np.isclose(model.compute_loss(features()).numpy(), plain.compute_loss(features()).numpy())


def test_negatives_are_a_function_of_seed_and_step():
    model = make_model("sampled")
    first = model._shared_negatives(tf.constant(4), training=True).numpy()
    second = model._shared_negatives(tf.constant(4), training=True).numpy()
    again = make_model("sampled")
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(again._shared_negatives(tf.constant(4), training=True).numpy(), first)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"negatives": "hard"}, "valid negatives modes: sampled, in_batch, both"),
        ({"negatives": "sampled", "item_probabilities": np.ones(NUM_ITEMS + 1)}, "in_batch"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TwoTowerModel(NUM_ITEMS, build_loss("softmax", NUM_ITEMS), **kwargs)


def test_refuses_a_loss_that_reduces_itself():
    from tfcroloss import CROLoss

    with pytest.raises(ValueError, match="reduction='none'"):
        TwoTowerModel(NUM_ITEMS, CROLoss(NUM_ITEMS))


def test_gru_tower_trains():
    model = make_model("sampled", tower="gru")
    model.compile(optimizer=tf.keras.optimizers.Adam(0.05))
    data = tf.data.Dataset.from_tensors(features()).repeat(30)
    losses = model.fit(data, epochs=1, verbose=0).history["loss"]
    assert np.isfinite(losses).all()
    assert model.user_embeddings(tf.constant(HISTORY)).shape == (4, 8)


@pytest.mark.parametrize("negatives,kwargs", [("sampled", {}), ("in_batch", {"item_probabilities": np.full(31, 1 / 31)})])
def test_config_round_trip_gives_the_same_loss(negatives, kwargs):
    model = make_model(negatives, **kwargs)
    clone = TwoTowerModel.from_config(model.get_config())
    clone.user_embeddings(tf.constant(HISTORY))
    clone.set_weights(model.get_weights())
    assert clone.get_config() == model.get_config()
    np.testing.assert_allclose(clone.compute_loss(features()).numpy(), model.compute_loss(features()).numpy(), rtol=1e-6)


# ---- in-batch and mixed negatives with the unbiased rank estimate (docs/unbiased-rank.md) ------

def popularity_probabilities():
    probabilities = np.linspace(1.0, 3.0, NUM_ITEMS + 1) ** 2
    probabilities[0] = 0.0
    return probabilities / probabilities.sum()


def corrected_reference(model, candidate_ids, keep, q):
    """Mean over rows of the NumPy importance-weighted CROLoss (w_j = 1 / (|I| q_j)) on the kept
    candidates; row i's positive is column i."""
    users = model.user_embeddings(tf.constant(HISTORY)).numpy().astype(np.float64)
    items = model.item_vectors(tf.constant(candidate_ids)).numpy().astype(np.float64)
    scores = model.temperature_scale * users @ items.T
    losses = []
    for row in range(len(HISTORY)):
        columns = [row] + [c for c in range(len(candidate_ids)) if keep(row, c)]
        labels = np.zeros((1, len(columns)))
        labels[0, 0] = 1
        row_q = np.asarray(q, np.float64)[columns]
        losses.append(np_croloss(labels, scores[row : row + 1, columns], "sigmoid", 1.2, NUM_ITEMS, q=row_q)[0][0])
    return np.mean(losses)


def test_in_batch_importance_correction_matches_reference():
    p = popularity_probabilities()
    model = make_model("in_batch", item_probabilities=p)
    assert model.correction == "importance"  # the default for CROLoss with in-batch negatives
    loss = model.compute_loss(features(), training=False).numpy()
    keep = lambda r, c: c != r and POSITIVES[c] != POSITIVES[r]  # noqa: E731 - accidental hit: row 0 / row 3
    want = corrected_reference(model, POSITIVES, keep, p[POSITIVES])
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    uncorrected = make_model("in_batch", item_probabilities=p, correction="none")
    uncorrected.set_weights(model.get_weights())
    np.testing.assert_allclose(
        uncorrected.compute_loss(features()).numpy(), reference_loss(model, POSITIVES, keep), rtol=1e-5
    )


def test_mixed_negatives_use_the_mixture_probability():
    p = popularity_probabilities()
    model = make_model("both", item_probabilities=p)
    sampled = model._shared_negatives(tf.constant(4), training=False).numpy()
    loss = model.compute_loss(features(), training=False).numpy()
    candidates = np.concatenate([POSITIVES, sampled])
    in_batch, uniform = 4 - 1, 4 * 2  # B other positives and U = n_rn * batch uniform draws per row
    q = (in_batch * p[candidates] + uniform / NUM_ITEMS) / (in_batch + uniform)
    want = corrected_reference(model, candidates, lambda r, c: c != r and candidates[c] != POSITIVES[r], q)
    np.testing.assert_allclose(loss, want, rtol=1e-5)


def test_softmax_keeps_tfrs_log_q_correction():
    p = popularity_probabilities()
    model = TwoTowerModel(NUM_ITEMS, build_loss("tfrs_softmax", NUM_ITEMS), embedding_dim=8, hidden_dims=[8],
                          negatives="in_batch", item_probabilities=p, seed=3)
    model.user_embeddings(tf.constant(HISTORY))
    assert model.correction == "log_q"
    assert make_model("in_batch", item_probabilities=p, correction="auto").correction == "importance"
    softmax_preset = TwoTowerModel(NUM_ITEMS, build_loss("softmax", NUM_ITEMS), negatives="in_batch",
                                   item_probabilities=p)
    assert softmax_preset.correction == "log_q"
    users = model.user_embeddings(tf.constant(HISTORY)).numpy().astype(np.float64)
    items = model.item_vectors(tf.constant(POSITIVES)).numpy().astype(np.float64)
    logits = model.temperature_scale * users @ items.T - np.log(p[POSITIVES])
    losses = []
    for row in range(4):
        columns = [c for c in range(4) if c == row or POSITIVES[c] != POSITIVES[row]]
        row_logits = logits[row, columns]
        losses.append(np.log(np.exp(row_logits).sum()) - logits[row, row])
    np.testing.assert_allclose(model.compute_loss(features()).numpy(), np.mean(losses), rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"negatives": "sampled", "correction": "importance"}, "uniform"),
        ({"negatives": "in_batch", "correction": "importance"}, "item_probabilities"),
        ({"negatives": "in_batch", "correction": "typo"}, "valid corrections"),
    ],
)
def test_bad_corrections(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TwoTowerModel(NUM_ITEMS, build_loss("croloss", NUM_ITEMS), **kwargs)


def test_importance_needs_a_croloss_family_loss():
    with pytest.raises(ValueError, match="log_q"):
        TwoTowerModel(NUM_ITEMS, build_loss("tfrs_softmax", NUM_ITEMS), negatives="in_batch",
                      item_probabilities=popularity_probabilities(), correction="importance")


@pytest.mark.parametrize("initializer,limit", [("uniform", 0.05), ("glorot_uniform", np.sqrt(6 / (NUM_ITEMS + 1 + 8)))])
def test_item_initializer(initializer, limit):
    model = make_model("sampled", item_initializer=initializer)
    table = model.item_embedding.embeddings.numpy()
    assert np.abs(table).max() <= limit and np.abs(table).max() > 0.5 * limit
