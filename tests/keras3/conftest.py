"""tests/keras3 runs only in its own Keras 3 processes, one per backend, which
``tests/test_keras3.py`` starts with ``KERAS_BACKEND`` set (the main test process uses
tf-keras, and a process uses one Keras). By hand::

    KERAS_BACKEND=jax TFCROLOSS_KERAS3_TESTS=1 python -m pytest --confcutdir=tests/keras3 tests/keras3

What each backend runs: JAX runs op by op slowly outside ``jit``, so its run leaves out the
half-precision and sampling-probability grids, which TensorFlow and PyTorch cover; the keras-rs
two-tower model and the README example run on JAX. ``--all-grids`` runs everything everywhere.
"""

import os
import sys

import pytest

if os.environ.get("TFCROLOSS_KERAS3_TESTS") != "1":
    collect_ignore_glob = ["*.py"]
else:
    # What importing tfcroloss.keras3 did to the process, seen before any test module (keras-rs
    # imports TensorFlow itself) runs: tests/keras3/test_losses.py checks it.
    import tfcroloss.keras3  # noqa: F401

    IMPORT_STATE = {
        "tensorflow": "tensorflow" in sys.modules,
        "tf_keras": "tf_keras" in sys.modules,
        "TF_USE_LEGACY_KERAS": os.environ.get("TF_USE_LEGACY_KERAS"),
    }
    if os.environ.get("KERAS_BACKEND") != "jax":
        collect_ignore = ["test_keras_rs.py"]

SLOW_ON_JAX = (
    "test_half_precision_matches_float32",
    "test_half_precision_extreme_logits_stay_finite",
    "test_sampling_probability_matches_reference",
)


@pytest.fixture
def import_state():
    return IMPORT_STATE


def pytest_addoption(parser):
    parser.addoption("--all-grids", action="store_true", help="run every grid on every backend")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("KERAS_BACKEND") != "jax" or config.getoption("--all-grids"):
        return
    kept = [item for item in items if item.originalname not in SLOW_ON_JAX]
    config.hook.pytest_deselected(items=[item for item in items if item not in kept])
    items[:] = kept
