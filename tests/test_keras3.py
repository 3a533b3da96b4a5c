"""The Keras 3 losses, each backend in its own process, and the rule that a process uses one Keras.

``tests/keras3`` (the shared NumPy-reference cases, serialization, ``.keras`` round trips, a fit,
a keras-rs two-tower model, the README's Keras 3 example) runs once per backend with
``KERAS_BACKEND`` set; the backends run side by side. PyTorch runs when it is installed
(``pip install -e ".[dev]"`` installs ``torch==2.13.0``).
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


def keras3_env(backend: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_USE_LEGACY_KERAS", "KERAS_BACKEND")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    if backend:
        env["KERAS_BACKEND"] = backend
    return env


@functools.cache
def backend_runs() -> dict[str, subprocess.Popen]:
    """Starts every available backend's run at once; each test waits for its own."""
    runs = {}
    for backend in BACKENDS:
        if importlib.util.find_spec(backend) is None:
            continue
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                   "--confcutdir=tests/keras3", "tests/keras3"]
        runs[backend] = subprocess.Popen(
            command, cwd=ROOT, env={**keras3_env(backend), "TFCROLOSS_KERAS3_TESTS": "1"},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
    return runs


@pytest.mark.parametrize("backend", BACKENDS)
def test_keras3_backend(backend):
    if backend == "torch" and importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed (pip install torch==2.13.0)")
    run = backend_runs()[backend]
    output, _ = run.communicate(timeout=300)
    assert run.returncode == 0, output[-6000:]
    assert " passed" in output and " failed" not in output and "error" not in output.splitlines()[-1]


def run_python(code: str, backend: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=keras3_env(backend),
                          capture_output=True, text=True, timeout=120)


def test_keras3_import_leaves_tensorflow_and_tf_keras_alone():
    result = run_python(
        "import os, sys, tfcroloss.keras3, keras\n"
        "print('tensorflow' in sys.modules, os.environ.get('TF_USE_LEGACY_KERAS'), keras.__version__[0])",
        backend="jax",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "None", "3"]


def test_keras3_import_keeps_tf_keras_as_keras_3_on_tensorflow():
    result = run_python(
        "import tfcroloss.keras3, tensorflow as tf; print(tf.keras.__name__)", backend="tensorflow"
    )
    assert result.returncode == 0, result.stderr
    assert not result.stdout.strip().startswith("tf_keras")


@pytest.mark.parametrize(
    "code,message",
    [
        ("import tfcroloss\nimport tfcroloss.keras3", "already in use with tf-keras"),
        ("import tfcroloss.keras3\nfrom tfcroloss import CROLoss", "already in use with Keras 3"),
        ("import tfcroloss.keras3\nimport tfcroloss.losses", "already in use with Keras 3"),
    ],
    ids=["tf-keras-then-keras3", "keras3-then-tf-keras", "keras3-then-tf-keras-module"],
)
def test_one_keras_per_process(code, message):
    result = run_python(code, backend="jax")
    assert result.returncode != 0
    assert f"ImportError: tfcroloss is {message}" in result.stderr
    assert "use one of the two per process" in result.stderr
