"""CROLoss inside tfrs.tasks.Retrieval: in-batch negatives, extra sampled negatives, accidental hits."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_recommenders as tfrs

from tests.test_losses import np_croloss
from tfcroloss import CROLoss, LambdaCROLoss

NUM_ITEMS = 50


def embeddings(seed, rows, dim=8):
    return np.random.default_rng(seed).normal(size=(rows, dim)).astype(np.float32)


@pytest.mark.parametrize("extra_negatives", [0, 6])
def test_task_loss_matches_reference(extra_negatives):
    queries, positives = embeddings(0, 5), embeddings(1, 5)
    candidates = np.vstack([positives, embeddings(2, extra_negatives)])
    task = tfrs.tasks.Retrieval(
        loss=CROLoss(NUM_ITEMS, alpha=1.4, kernel="sigmoid", reduction="sum")
    )
    got = task(queries, candidates, compute_metrics=False).numpy()

    scores = (queries @ candidates.T).astype(np.float64)
    labels = np.eye(5, len(candidates))
    want, _ = np_croloss(labels, scores, "sigmoid", 1.4, NUM_ITEMS)
    np.testing.assert_allclose(got, want.sum(), rtol=1e-5)


def test_accidental_hits_are_not_negatives():
    """Candidate 2 repeats item 0's id: for query 0 it is removed, for the others it is a negative."""
    queries, candidates = embeddings(3, 4), embeddings(4, 6)
    ids = tf.constant(["a", "b", "a", "c", "d", "e"])
    loss = LambdaCROLoss(NUM_ITEMS, alpha=1.0, reduction="none")
    task = tfrs.tasks.Retrieval(loss=loss, remove_accidental_hits=True)
    got = task(queries, candidates, candidate_ids=ids, compute_metrics=False)

    scores = (queries @ candidates.T).astype(np.float64)
    labels = np.eye(4, 6)
    kept = [np.ones(6, bool) for _ in range(4)]
    kept[0][2] = False  # accidental hit: same item as query 0's positive
    kept[2][0] = False  # and the other way round
    want = [
        np_croloss(
            labels[i : i + 1, kept[i]],
            scores[i : i + 1, kept[i]],
            "softplus",
            1.0,
            NUM_ITEMS,
            weight_kernel="sigmoid",
        )[0][0]
        for i in range(4)
    ]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5)


class TinyRetrievalModel(tfrs.Model):
    def __init__(self, loss):
        super().__init__()
        self.query_tower = tf.keras.layers.Embedding(NUM_ITEMS, 8)
        self.item_tower = tf.keras.layers.Embedding(NUM_ITEMS, 8)
        self.task = tfrs.tasks.Retrieval(loss=loss, remove_accidental_hits=True)

    def compute_loss(self, features, training=False):
        negatives = tf.random.stateless_uniform([16], seed=[1, 2], maxval=NUM_ITEMS, dtype=tf.int32)
        items = tf.concat([features["item"], negatives], axis=0)
        return self.task(
            self.query_tower(features["user"]),
            self.item_tower(items),
            candidate_ids=items,
            compute_metrics=False,
        )


def test_fits_inside_tfrs_model():
    rng = np.random.default_rng(0)
    users = rng.integers(0, NUM_ITEMS, 512).astype(np.int32)
    data = tf.data.Dataset.from_tensor_slices(
        {"user": users, "item": (users * 7) % NUM_ITEMS}
    ).batch(32)
    model = TinyRetrievalModel(CROLoss(NUM_ITEMS, alpha=1.0, kernel="softplus"))
    model.compile(optimizer=tf.keras.optimizers.Adam(0.1))
    history = model.fit(data, epochs=4, verbose=0)
    losses = history.history["loss"]
    assert np.isfinite(losses).all() and losses[-1] < 0.5 * losses[0]
