"""tests/keras3 runs only in its own Keras 3 processes, one per backend, which
``tests/test_keras3.py`` starts with ``KERAS_BACKEND`` set (the main test process uses
tf-keras, and a process uses one Keras). By hand::

    KERAS_BACKEND=jax TFCROLOSS_KERAS3_TESTS=1 python -m pytest --confcutdir=tests/keras3 tests/keras3

JAX runs op by op slowly outside ``jit``, so its run leaves out the half-precision and
sampling-probability grids, which the TensorFlow and PyTorch runs cover (``--all-grids``
keeps them).
"""

import os

if os.environ.get("TFCROLOSS_KERAS3_TESTS") != "1":
    collect_ignore_glob = ["*.py"]

SLOW_ON_JAX = (
    "test_half_precision_matches_float32",
    "test_half_precision_extreme_logits_stay_finite",
    "test_sampling_probability_matches_reference",
)


def pytest_addoption(parser):
    parser.addoption("--all-grids", action="store_true", help="run every grid on every backend")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("KERAS_BACKEND") != "jax" or config.getoption("--all-grids"):
        return
    kept = [item for item in items if item.originalname not in SLOW_ON_JAX]
    config.hook.pytest_deselected(items=[item for item in items if item not in kept])
    items[:] = kept
