"""TFRS's basic retrieval tutorial as its users write it, with the loss swapped: ``docs/tfrs.md``
runs as written (generated MovieLens-shaped data, batch 8,192 over 200 movies, FactorizedTopK,
Adagrad, fit, evaluate, BruteForce index saved and reloaded), then LambdaCROLoss in the same model."""

import re
from pathlib import Path

import pytest
import tensorflow as tf
import tensorflow_recommenders as tfrs

import tfcroloss

DOC = Path(__file__).resolve().parents[1] / "docs" / "tfrs.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
CHANCE_TOP_10 = 10 / 200


@pytest.fixture(scope="module")
def tutorial():
    """The namespace after every block of docs/tfrs.md has run, in order."""
    namespace = {}
    for block in BLOCKS:
        exec(compile(block, str(DOC), "exec"), namespace)
    return namespace


def test_the_doc_runs_and_both_variants_learn(tutorial):
    assert len(BLOCKS) == 5
    for result in (tutorial["result"], tutorial["result_q"]):
        assert result["factorized_top_k/top_10_categorical_accuracy"] > 3 * CHANCE_TOP_10
        assert result["factorized_top_k/top_100_categorical_accuracy"] > result[
            "factorized_top_k/top_10_categorical_accuracy"]


def test_lambda_croloss_in_the_tutorial_model(tutorial):
    """LambdaCROLoss, batch 8,192 over 200 movies: trains and evaluates with no other change."""
    user_model, movie_model = tutorial["towers"]()
    task = tfrs.tasks.Retrieval(
        loss=tfcroloss.LambdaCROLoss(num_items=200, alpha=1.0, reduction=tf.keras.losses.Reduction.SUM),
        metrics=tfrs.metrics.FactorizedTopK(candidates=tutorial["movies"].batch(128).map(movie_model)),
    )
    model = tutorial["MovielensModel"](user_model, movie_model, task)
    model.compile(optimizer=tf.keras.optimizers.Adagrad(learning_rate=0.1))
    history = model.fit(tutorial["cached_train"], epochs=3, verbose=0)
    result = model.evaluate(tutorial["cached_test"], return_dict=True, verbose=0)
    assert all(tf.math.is_finite(value) for value in history.history["loss"])
    assert result["factorized_top_k/top_10_categorical_accuracy"] > 3 * CHANCE_TOP_10
