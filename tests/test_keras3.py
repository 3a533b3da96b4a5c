"""The Keras 3 losses, each backend in its own process (a process uses one Keras).

``tests/keras3`` (the shared NumPy-reference cases, serialization, ``.keras`` round trips, fits,
mixed precision, what ``import tfcroloss.keras3`` does to the process, a keras-rs two-tower model
and the README's Keras 3 example on JAX) runs once per backend with ``KERAS_BACKEND`` set; the
backends run side by side. PyTorch runs when it is installed (the ``dev`` extra installs
``torch==2.13.0``).
"""

import functools
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ["tensorflow", "jax", "torch"]


@functools.cache
def backend_runs() -> dict[str, subprocess.Popen]:
    """Starts every available backend's run at once; each test waits for its own."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_USE_LEGACY_KERAS", "KERAS_BACKEND")}
    runs = {}
    for backend in BACKENDS:
        if importlib.util.find_spec(backend) is None:
            continue
        extra = {}
        if backend == "jax":  # op-by-op compiles dominate; unoptimised XLA code compiles ~25% faster
            extra["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
        runs[backend] = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             "--confcutdir=tests/keras3", "tests/keras3"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**env, "KERAS_BACKEND": backend, "TFCROLOSS_KERAS3_TESTS": "1",
                 "TF_CPP_MIN_LOG_LEVEL": "3", **extra},
        )
    return runs


@pytest.mark.parametrize("backend", BACKENDS)
def test_keras3_backend(backend):
    if backend == "torch" and importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed (pip install torch==2.13.0)")
    run = backend_runs()[backend]
    output, _ = run.communicate(timeout=400)
    assert run.returncode == 0, output[-6000:]
    assert " passed" in output.splitlines()[-1]


def test_keras3_refuses_in_a_tf_keras_process():
    from tfcroloss import CROLoss  # noqa: F401  (this process: tf-keras)

    with pytest.raises(ImportError, match="already in use with tf-keras .*use one of the two per process"):
        import tfcroloss.keras3  # noqa: F401
    assert "tfcroloss.keras3" not in sys.modules
