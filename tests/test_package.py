"""Importing tfcroloss picks Keras 2 for tf.keras, or says clearly why it cannot."""

import os
import subprocess
import sys


def run_python(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_import_selects_tf_keras():
    result = run_python("import tfcroloss, tensorflow as tf; print(tf.keras.__name__)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("tf_keras")


def test_keras_3_already_loaded_is_a_clear_error():
    result = run_python("import tensorflow as tf; tf.keras.layers; import tfcroloss")
    assert result.returncode != 0
    assert "ImportError: tfcroloss needs Keras 2 (tf-keras)" in result.stderr
    assert "TF_USE_LEGACY_KERAS=1" in result.stderr
