"""Optimizers by name: ``adam`` is Adam at the cost of the embedding rows a batch touches.

tf-keras ``Adam`` (``dense_adam`` here) receives the item table's gradient as
``tf.IndexedSlices`` but decays both moment tables and rewrites the variable over
every row at every step: at a catalog of 1.7M items that is several passes over
219 MB per step, for a batch that touched a few thousand rows. ``lazy_adam``
updates the touched rows only and so is not Adam: rows skip the decay and the
momentum of the steps they missed. ``adam`` (``SparseAdam``) gives dense Adam's
result while touching only the rows a step reads (``docs/performance-training.md``).
"""

from __future__ import annotations

import numpy as np
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


@tf.keras.utils.register_keras_serializable(package="tfcroloss")
class SparseAdam(tf.keras.optimizers.Adam):
    """tf-keras ``Adam``'s result at the cost of the rows a step reads (registered as ``adam``).

    Adam moves a row that no step touches deterministically: with
    ``alpha_t = lr_t sqrt(1 - b2^t) / (1 - b1^t)``, a row last updated at step ``s`` and
    untouched for ``k`` steps is at ``theta_s - sum_i alpha_{s+i} b1^i m_s / (b2^(i/2) sqrt(v_s)
    + eps)``, with ``m = b1^k m_s`` and ``v = b2^k v_s``. This optimizer keeps each row's last
    step (an optimizer variable, checkpointed) and one coefficient per recent step,
    ``C(s) = sum_i alpha_{s+i} r^i`` with ``r = b1 / sqrt(b2)``, accumulated as each step's
    rate becomes known (any learning-rate schedule). A row is then brought up to date as
    ``theta_s - C(s) m_s / (sqrt(v_s) + eps)``: exact with ``eps = 0``; with ``eps > 0`` the
    error of term i is ``(b2^(-i/2) - 1) eps / (sqrt(v_s) + eps)`` of it at most
    (``docs/performance-training.md``).

    - ``lookup(variable, ids)`` gives rows as dense Adam has them now, without writing: read
      the embedding table through it in the forward pass (``TwoTowerModel`` does).
    - A sparse gradient (``tf.IndexedSlices``) brings its rows up to date, then takes Adam's
      step on them; a dense gradient first brings the whole variable up to date if it is
      read or updated by rows (as traced in this process), then takes plain Adam's step.
    - ``catch_up()`` brings every row up to date in place: call it before reading or saving
      whole tables by other means than ``lookup`` (weights-only checkpoints, exports).
    - Every ``catch_up_every`` steps the optimizer catches up by itself, so that the
      coefficients of only that many recent steps are kept.

    Build it (``build(model.trainable_variables)``) after restoring a checkpoint and before
    the first ``lookup``: rows of a checkpoint without per-row steps (tf-keras ``Adam``'s)
    are then taken to be up to date at the restored step, as they are.
    """

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 catch_up_every: int = 1000, name: str = "SparseAdam", **kwargs):
        unsupported = [key for key in ("amsgrad", "adaptive_epsilon", "weight_decay", "use_ema") if kwargs.get(key)]
        if unsupported:
            raise ValueError(f"SparseAdam does not support {', '.join(unsupported)}; use tf.keras.optimizers.Adam")
        if catch_up_every < 1:
            raise ValueError(f"catch_up_every must be >= 1, got {catch_up_every}")
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
                         name=name, **kwargs)
        self.catch_up_every = int(catch_up_every)

    def build(self, var_list) -> None:
        if self.built:
            return
        super().build(var_list)
        self._variables_of_rows = self._no_dependency(list(var_list))
        # Variables read or updated by rows (known when steps are traced); the others, updated
        # densely at every step, are never behind.
        self._read_by_rows = self._no_dependency(set())
        # Slot s % (catch_up_every + 1) holds C(s) for the rows last updated at step s.
        self._coefficients = self.add_variable([self.catch_up_every + 1], tf.float64, name="catch_up_coefficients")
        # A checkpoint without these (tf-keras Adam's) leaves every row up to date at its step.
        now = self.iterations

        def up_to_date(shape, dtype):
            return tf.fill(shape, tf.cast(now, dtype))

        self._last_steps = [
            self.add_variable(var.shape[:1], tf.int64, up_to_date, name=f"last_step/{var._shared_name}")
            for var in var_list
        ]

    @property
    def built(self) -> bool:
        """Whether ``build`` has made the per-row state (``lookup`` needs it)."""
        return getattr(self, "_built", False)

    def get_config(self) -> dict:
        return {**super().get_config(), "catch_up_every": self.catch_up_every}

    def _alpha(self, step: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
        """Adam's step size at ``step``, computed as tf-keras ``Adam`` does (betas cast from float32)."""
        step = tf.cast(step, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        return tf.cast(self.learning_rate, dtype) * tf.sqrt(1 - tf.pow(beta_2, step)) / (1 - tf.pow(beta_1, step))

    def _slots(self, variable):
        index = self._index_dict[self._var_key(variable)]
        return self._momentums[index], self._velocities[index], self._last_steps[index]

    def _displacement(self, value_dtype, rank: int, m, v, last) -> tf.Tensor:
        """What dense Adam has moved rows (of rank ``rank``) since their last steps ``last``."""
        coefficient = tf.cast(tf.gather(self._coefficients, last % (self.catch_up_every + 1)), value_dtype)
        for _ in range(rank - last.shape.rank):
            coefficient = coefficient[..., None]
        return coefficient * m / (tf.sqrt(v) + self.epsilon)

    def _caught_up(self, value, m, v, last, now):
        """``(value, m, v)`` of rows last updated at steps ``last``, brought to step ``now``."""
        dtype = value.dtype
        value = value - self._displacement(dtype, value.shape.rank, m, v, last)
        behind = tf.cast(now - last, dtype)
        for _ in range(value.shape.rank - last.shape.rank):
            behind = behind[..., None]
        return value, tf.pow(tf.constant(self.beta_1, dtype), behind) * m, tf.pow(tf.constant(self.beta_2, dtype), behind) * v

    def lookup(self, variable: tf.Variable, ids: tf.Tensor) -> tf.Tensor:
        """``tf.gather(variable, ids)`` with every row as dense Adam has it now (nothing written;
        gradients flow to ``variable`` as for ``tf.gather``)."""
        self._read_by_rows.add(self._var_key(variable))
        m, v, last = self._slots(variable)
        rows = tf.gather(variable, ids)
        displacement = self._displacement(rows.dtype, rows.shape.rank, tf.gather(m, ids), tf.gather(v, ids),
                                          tf.gather(last, ids))
        return rows - tf.stop_gradient(displacement)

    def _catch_up_variable(self, variable) -> None:
        m, v, last = self._slots(variable)
        now = tf.cast(self.iterations, tf.int64)
        value, m_now, v_now = self._caught_up(variable.value(), m.value(), v.value(), last.value(), now)
        variable.assign(value)
        m.assign(m_now)
        v.assign(v_now)
        last.assign(tf.fill(tf.shape(last), now))

    def _catch_up_all(self, distribution) -> None:
        for variable in self._variables_of_rows:
            distribution.extended.update(variable, self._catch_up_variable, group=False)

    def catch_up(self) -> None:
        """Brings every row of every variable up to date (in place; call outside ``strategy.run``)."""
        if self.built:
            self._catch_up_all(self._distribution_strategy)

    def update_step(self, gradient: tf.Tensor | tf.IndexedSlices, variable: tf.Variable) -> None:
        if not isinstance(gradient, tf.IndexedSlices):
            if self._var_key(variable) in self._read_by_rows:  # rows may be behind: catch them up first
                self._catch_up_variable(variable)
            super().update_step(gradient, variable)
            m, v, last = self._slots(variable)
            last.assign(tf.fill(tf.shape(last), tf.cast(self.iterations + 1, tf.int64)))
            return
        step = self.iterations + 1
        alpha = self._alpha(step, variable.dtype)
        m, v, last = self._slots(variable)
        self._read_by_rows.add(self._var_key(variable))
        rows = gradient.indices  # unique: apply_gradients deduplicates sparse gradients
        value, m_rows, v_rows = self._caught_up(
            tf.gather(variable, rows), tf.gather(m, rows), tf.gather(v, rows), tf.gather(last, rows),
            tf.cast(self.iterations, tf.int64),
        )
        m_rows = self.beta_1 * m_rows + (1 - self.beta_1) * gradient.values
        v_rows = self.beta_2 * v_rows + (1 - self.beta_2) * tf.square(gradient.values)
        variable.scatter_update(tf.IndexedSlices(value - alpha * m_rows / (tf.sqrt(v_rows) + self.epsilon), rows))
        m.scatter_update(tf.IndexedSlices(m_rows, rows))
        v.scatter_update(tf.IndexedSlices(v_rows, rows))
        last.scatter_update(tf.IndexedSlices(tf.fill(tf.shape(rows), tf.cast(step, tf.int64)), rows))

    def _advance(self, coefficients: tf.Variable) -> None:
        """Adds the step just taken (``iterations``) to C(s) of the steps before it."""
        step = tf.cast(self.iterations, tf.int64)
        back = np.arange(1, self.catch_up_every + 1)
        slots = (step - back) % (self.catch_up_every + 1)
        powers = (self.beta_1 / np.sqrt(self.beta_2)) ** back.astype(np.float64)
        coefficients.scatter_add(tf.IndexedSlices(self._alpha(step, tf.float64) * powers, slots))
        coefficients.scatter_update(tf.IndexedSlices(tf.zeros([1], tf.float64), [step % (self.catch_up_every + 1)]))

    def _distributed_apply_gradients_fn(self, distribution, grads_and_vars, **kwargs):
        iteration = super()._distributed_apply_gradients_fn(distribution, grads_and_vars, **kwargs)
        distribution.extended.update(self._coefficients, self._advance, group=False)
        tf.cond(
            tf.equal(self.iterations % self.catch_up_every, 0),
            lambda: self._catch_up_all(distribution),
            lambda: None,
        )
        return iteration


_CLASSES: dict[str, type[tf.keras.optimizers.Optimizer]] = {
    "adam": SparseAdam,
    "dense_adam": tf.keras.optimizers.Adam,
    "lazy_adam": LazyAdam,
}
OPTIMIZERS = tuple(_CLASSES)


def build_optimizer(name: str, learning_rate: float) -> tf.keras.optimizers.Optimizer:
    """The optimizer ``name`` (one of ``OPTIMIZERS``) at ``learning_rate``."""
    return lookup(_CLASSES, name, "optimizer")(learning_rate=learning_rate)
