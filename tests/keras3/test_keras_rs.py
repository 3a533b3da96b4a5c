"""A keras-rs two-tower retrieval model trained with the Keras 3 CROLoss: in-batch negatives
(batches larger than the catalog included), accidental hits masked, top-k from ``keras_rs.layers.BruteForceRetrieval``; uniform and
importance-weighted (in-batch popularity) rank estimates; and the README's Keras 3 example."""

import re
from pathlib import Path

import keras
import keras_rs
import numpy as np
import pytest

from tfcroloss.keras3 import MASKED_LOGIT, CROLoss, LambdaCROLoss, remove_accidental_hits

NUM_USERS = NUM_ITEMS = 40
README = Path(__file__).resolve().parents[2] / "README.md"


class TwoTower(keras.Model):
    def __init__(self, loss, item_probability=None):
        super().__init__()
        self.user_tower = keras.layers.Embedding(NUM_USERS, 16)
        self.item_tower = keras.layers.Embedding(NUM_ITEMS, 16)
        self.retrieval = keras_rs.layers.BruteForceRetrieval(k=5, return_scores=False)
        self.cro = loss
        self.item_probability = item_probability  # q_j per draw of an in-batch negative

    def call(self, inputs):
        return self.user_tower(inputs["user"])

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        items = x["item"]
        logits = 5.0 * keras.ops.matmul(
            keras.ops.normalize(y_pred), keras.ops.transpose(keras.ops.normalize(self.item_tower(items)))
        )
        labels = keras.ops.eye(keras.ops.shape(logits)[0])
        logits = remove_accidental_hits(logits, labels, items)
        if self.item_probability is None:
            return self.cro(labels, logits)
        q = keras.ops.take(self.item_probability, items)
        return keras.ops.mean(self.cro.call(labels, logits, candidate_sampling_probability=q))

    def recall_at_5(self, users, items):
        self.retrieval.update_candidates(keras.ops.normalize(self.item_tower(np.arange(NUM_ITEMS))))
        top = keras.ops.convert_to_numpy(self.retrieval(self.user_tower(users)))
        return float(np.mean([item in row for item, row in zip(items, top, strict=True)]))


def interactions(seed=0, size=1024):
    """Each user likes one item; items are Zipf-popular (several users share popular items)."""
    rng = np.random.default_rng(seed)
    favourite = rng.zipf(1.5, NUM_USERS) % NUM_ITEMS
    users = rng.integers(0, NUM_USERS, size)
    return users.astype("int32"), favourite[users].astype("int32")


def test_remove_accidental_hits_masks_repeats_of_the_positive():
    labels = np.eye(3, 4, dtype="float32")
    ids = np.array([7, 5, 7, 8])  # candidate 2 repeats row 0's positive (and the other way round)
    got = keras.ops.convert_to_numpy(remove_accidental_hits(np.zeros((3, 4), "float32"), labels, ids))
    want = np.zeros((3, 4), "float32")
    want[0, 2] = want[2, 0] = MASKED_LOGIT
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    "loss,weighted",
    [
        (lambda: CROLoss(NUM_ITEMS, alpha=1.0, kernel="softplus"), False),
        (lambda: LambdaCROLoss(NUM_ITEMS, alpha=1.4, grad_kernel="exponential"), True),
    ],
    ids=["cro", "lambda-importance-weighted"],
)
def test_two_tower_fit(loss, weighted):
    users, items = interactions()
    probability = None
    if weighted:  # an in-batch negative is a random interaction's item: q_j = count_j / total
        probability = np.bincount(items, minlength=NUM_ITEMS).astype("float32") / len(items)
        probability = np.maximum(probability, 1e-6)
    keras.utils.set_random_seed(0)
    model = TwoTower(loss(), None if probability is None else keras.ops.convert_to_tensor(probability))
    model.compile(optimizer=keras.optimizers.Adam(0.1))
    before = model.recall_at_5(users[:256], items[:256])
    history = model.fit({"user": users, "item": items}, batch_size=32, epochs=3, verbose=0)
    losses = history.history["loss"]
    assert np.isfinite(losses).all()
    if isinstance(model.cro, CROLoss):  # (the Lambda value is a surrogate whose weight moves)
        assert losses[-1] < losses[0]
    assert model.recall_at_5(users[:256], items[:256]) > max(0.8, before + 0.3)


def test_batch_larger_than_the_catalog_with_duplicates():
    """128 interactions over 40 items per batch: each row has 127 candidates, most items many times."""
    users, items = interactions(seed=1, size=512)
    keras.utils.set_random_seed(0)
    model = TwoTower(LambdaCROLoss(NUM_ITEMS, alpha=1.0))
    model.compile(optimizer=keras.optimizers.Adam(0.1))
    eager = model.compute_loss({"user": users[:128], "item": items[:128]}, y_pred=model(
        {"user": users[:128]}))  # eager: the input checks run on concrete values
    history = model.fit({"user": users, "item": items}, batch_size=128, epochs=3, verbose=0)
    assert len(np.unique(items[:128])) < NUM_ITEMS < 127
    assert np.isfinite(float(eager)) and np.isfinite(history.history["loss"]).all()
    assert model.recall_at_5(users[:256], items[:256]) > 0.8


KERAS3_EXAMPLES = re.findall(r"```python keras3\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="the README example picks JAX")
def test_readme_keras3_example_runs():
    assert KERAS3_EXAMPLES, "README has no ```python keras3 block"
    for code in KERAS3_EXAMPLES:
        exec(compile(code, str(README), "exec"), {})
