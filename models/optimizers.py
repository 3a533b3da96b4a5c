"""Optimizers by name; ``lazy_adam`` updates only the embedding rows a batch touched.

tf-keras ``Adam`` receives the item table's gradient as ``tf.IndexedSlices`` but
decays both moment tables and rewrites the variable densely, over every row, at
every step: at a catalog of 1.7M items that is several passes over 219 MB per
step, for a batch that touched a few thousand rows.
"""

from __future__ import annotations

import tensorflow as tf

from tfcroloss.registry import lookup


@tf.keras.utils.register_keras_serializable(package="tfcroloss")
class LazyAdam(tf.keras.optimizers.Adam):
    """Adam whose sparse updates touch only the rows in the gradient ("lazy Adam").

    Dense gradients get plain Adam. For a ``tf.IndexedSlices`` gradient only
    the listed rows' moments decay and only those rows move, by Adam's rule with
    the global step's bias correction; other rows keep their moments and values
    as they were. This is the semantics of TF-Addons' ``LazyAdam`` (and
    TF 1's ``LazyAdamOptimizer``): rows that are touched every step follow Adam
    exactly, rarely seen rows skip the decay of the steps they missed.
    """

    def update_step(self, gradient: tf.Tensor | tf.IndexedSlices, variable: tf.Variable) -> None:
        if not isinstance(gradient, tf.IndexedSlices):
            super().update_step(gradient, variable)
            return
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        beta_1_power = tf.pow(tf.cast(self.beta_1, dtype), step)
        beta_2_power = tf.pow(tf.cast(self.beta_2, dtype), step)
        alpha = tf.cast(self.learning_rate, dtype) * tf.sqrt(1 - beta_2_power) / (1 - beta_1_power)
        epsilon = self.epsilon * tf.sqrt(1 - beta_2_power) if self.adaptive_epsilon else self.epsilon

        index = self._index_dict[self._var_key(variable)]
        m, v = self._momentums[index], self._velocities[index]
        rows = gradient.indices  # unique: apply_gradients deduplicates sparse gradients
        m_rows = self.beta_1 * tf.gather(m, rows) + (1 - self.beta_1) * gradient.values
        v_rows = self.beta_2 * tf.gather(v, rows) + (1 - self.beta_2) * tf.square(gradient.values)
        m.scatter_update(tf.IndexedSlices(m_rows, rows))
        v.scatter_update(tf.IndexedSlices(v_rows, rows))
        if self.amsgrad:
            v_hat = self._velocity_hats[index]
            v_rows = tf.maximum(tf.gather(v_hat, rows), v_rows)
            v_hat.scatter_update(tf.IndexedSlices(v_rows, rows))
        variable.scatter_sub(tf.IndexedSlices(alpha * m_rows / (tf.sqrt(v_rows) + epsilon), rows))


_CLASSES: dict[str, type[tf.keras.optimizers.Optimizer]] = {
    "adam": tf.keras.optimizers.Adam,
    "lazy_adam": LazyAdam,
}
OPTIMIZERS = tuple(_CLASSES)


def build_optimizer(name: str, learning_rate: float) -> tf.keras.optimizers.Optimizer:
    """The optimizer ``name`` (one of ``OPTIMIZERS``) at ``learning_rate``."""
    return lookup(_CLASSES, name, "optimizer")(learning_rate=learning_rate)
