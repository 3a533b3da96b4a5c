"""User towers: masking, normalisation, and serialization round trips."""

import numpy as np
import pytest
import tensorflow as tf

from tfcroloss.models import towers


@pytest.mark.parametrize("name", ["mean", "gru"])
def test_round_trip_gives_same_outputs(name):
    tower = towers.get(name)(hidden_dims=[6], output_dim=4)
    embedded = tf.random.stateless_normal([3, 5, 8], seed=[1, 2])
    mask = tf.constant([[True] * 5, [True, True, False, False, False], [True] + [False] * 4])
    out = tower(embedded, mask).numpy()
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)

    clone = tf.keras.layers.deserialize(tf.keras.layers.serialize(tower))
    assert type(clone) is type(tower) and clone.get_config() == tower.get_config()
    clone(embedded, mask)
    clone.set_weights(tower.get_weights())
    np.testing.assert_allclose(clone(embedded, mask).numpy(), out, rtol=1e-5)


def test_mean_tower_ignores_padding():
    tower = towers.get("mean")(hidden_dims=[], output_dim=4)
    embedded = tf.random.stateless_normal([1, 3, 8], seed=[3, 4])
    mask = tf.constant([[True, True, False]])
    padded = tf.concat([embedded[:, :2], 100.0 * tf.ones([1, 1, 8])], axis=1)
    np.testing.assert_allclose(tower(embedded, mask).numpy(), tower(padded, mask).numpy(), rtol=1e-6)


def test_unknown_tower():
    with pytest.raises(ValueError, match="valid towers: mean, gru"):
        towers.get("transformer")
