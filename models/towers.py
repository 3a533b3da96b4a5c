"""User towers: from an embedded behaviour history to one L2-normalised vector.

A tower sees ``embedded [batch, maxlen, dim]`` and ``mask [batch, maxlen]``
(False at padding); the item embedding table itself is owned by the model and
shared with the item tower, as in the authors' code.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from tfcroloss.registry import lookup


@tf.keras.utils.register_keras_serializable(package="tfcroloss")
class MeanPoolTower(tf.keras.layers.Layer):
    """The paper's base user model ("DNN"): masked mean of the history, then an MLP."""

    def __init__(self, hidden_dims=(32,), output_dim: int = 32, **kwargs):
        super().__init__(**kwargs)
        self.hidden_dims = tuple(hidden_dims)
        self.output_dim = output_dim
        self.mlp = [tf.keras.layers.Dense(units, activation="relu") for units in self.hidden_dims]
        self.mlp.append(tf.keras.layers.Dense(output_dim))

    def call(self, embedded: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
        weights = tf.cast(mask, embedded.dtype)[..., None]
        x = tf.reduce_sum(embedded * weights, axis=1) / tf.maximum(tf.reduce_sum(weights, axis=1), 1.0)
        for layer in self.mlp:
            x = layer(x)
        return tf.math.l2_normalize(x, axis=-1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "hidden_dims": list(self.hidden_dims), "output_dim": self.output_dim}


@tf.keras.utils.register_keras_serializable(package="tfcroloss")
class GRUTower(tf.keras.layers.Layer):
    """A sequence-aware alternative: a GRU over the history (padding masked), then a projection."""

    def __init__(self, hidden_dims=(32,), output_dim: int = 32, **kwargs):
        super().__init__(**kwargs)
        self.hidden_dims = tuple(hidden_dims)
        self.output_dim = output_dim
        self.gru = tf.keras.layers.GRU(self.hidden_dims[0] if self.hidden_dims else output_dim)
        self.projection = tf.keras.layers.Dense(output_dim)

    def call(self, embedded: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
        return tf.math.l2_normalize(self.projection(self.gru(embedded, mask=mask)), axis=-1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "hidden_dims": list(self.hidden_dims), "output_dim": self.output_dim}


TOWERS = {"mean": MeanPoolTower, "gru": GRUTower}


def get(name: str) -> type[tf.keras.layers.Layer]:
    """Returns the user tower class registered as ``name``."""
    return lookup(TOWERS, name, "tower")
