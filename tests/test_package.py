"""Importing tfcroloss imports no framework and picks Keras 2 for tf.keras; the tf-keras losses
load only where that holds, or say clearly why not."""

import os
import re
import subprocess
import sys
from pathlib import Path


def run_python(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_import_selects_tf_keras():
    result = run_python("import tfcroloss, tensorflow as tf; print(tf.keras.__name__)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("tf_keras")


def test_keras_3_already_loaded_is_a_clear_error():
    result = run_python("import tensorflow as tf; tf.keras.layers; from tfcroloss import CROLoss")
    assert result.returncode != 0
    assert "ImportError: tfcroloss needs Keras 2 (tf-keras)" in result.stderr
    assert "TF_USE_LEGACY_KERAS=1" in result.stderr


def test_import_has_no_side_effect_but_the_keras_variable():
    result = run_python(
        "import os, sys, tfcroloss, tfcroloss.functional, tfcroloss.kernels, tfcroloss.models.loss_presets;"
        "print([m for m in ('tensorflow', 'tf_keras', 'keras', 'tensorflow_recommenders') if m in sys.modules]);"
        "print(os.environ['TF_USE_LEGACY_KERAS'])"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[]", "1"]


def test_no_frame_inspection_or_private_keras_modules():
    root = Path(__file__).resolve().parents[1]
    found = [
        f"{path.relative_to(root)}:{number}"
        for folder in ("tfcroloss", "models", "pipelines")
        for path in sorted((root / folder).rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"_getframe|importlib\._bootstrap|keras\.src", line)
    ]
    assert not found


def test_tfrs_task_loads_on_first_use():
    result = run_python(
        "import sys, tfcroloss; assert 'tensorflow_recommenders' not in sys.modules;"
        "print(tfcroloss.tfrs.Retrieval.__mro__[1].__module__)"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["tensorflow_recommenders.tasks.retrieval"]
