"""tfcroloss: CROLoss, a customizable Recall@N optimization loss, for TensorFlow retrieval models.

Importing tfcroloss selects Keras 2 (tf-keras) for ``tf.keras``, which
tensorflow-recommenders needs, unless TensorFlow was already imported with
Keras 3; then it stops with an error that says what to do.
"""

import os

# Quiet TensorFlow's C++ start-up logging unless the user asked for it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Also helps when tensorflow is imported but tf.keras not yet resolved (it loads lazily).
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402

_keras_version = getattr(tf.keras, "__version__", None) or tf.keras.__name__
if not tf.keras.__name__.startswith("tf_keras"):
    raise ImportError(
        f"tfcroloss needs Keras 2 (tf-keras) as tf.keras, but TensorFlow was imported with Keras "
        f"{_keras_version}. Set the environment variable TF_USE_LEGACY_KERAS=1 before TensorFlow "
        "is first imported (or import tfcroloss before tensorflow), and `pip install tf-keras`."
    )

from tfcroloss import kernels, weightings  # noqa: E402
from tfcroloss.losses import CROLoss, LambdaCROLoss  # noqa: E402
from tfcroloss.rank import sampled_log_rank  # noqa: E402

__version__ = "0.1.0"
__all__ = ["CROLoss", "LambdaCROLoss", "kernels", "weightings", "sampled_log_rank"]
