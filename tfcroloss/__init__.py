"""tfcroloss: CROLoss, a customizable Recall@N optimization loss, for TensorFlow retrieval models.

Importing tfcroloss selects Keras 2 (tf-keras) for ``tf.keras``, which
tensorflow-recommenders needs, unless TensorFlow was already imported with
Keras 3; then it stops with an error that says what to do.

The Keras 3 losses (TensorFlow, JAX or PyTorch backend) are in ``tfcroloss.keras3``.
``import tfcroloss.keras3`` runs this file too, as Python imports a package before its
submodule; for that import only, nothing here imports TensorFlow or touches
``TF_USE_LEGACY_KERAS``, and the tf-keras names below are looked up when first used
(which, in a Keras 3 process, is an ``ImportError`` that says why).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

__version__ = "0.1.0"
__all__ = [
    "CROLoss",
    "LambdaCROLoss",
    "cro_loss",
    "lambda_cro_loss",
    "kernels",
    "weightings",
    "sampled_log_rank",
]

_LAZY = {
    "CROLoss": "tfcroloss.losses",
    "LambdaCROLoss": "tfcroloss.losses",
    "cro_loss": "tfcroloss.functional",
    "lambda_cro_loss": "tfcroloss.functional",
    "sampled_log_rank": "tfcroloss.rank",
}


def _imported_for_keras3() -> bool:
    """True while Python imports this package only as the parent of ``tfcroloss.keras3``.

    The import machinery's frames above this module's body name the module being
    imported (``importlib._bootstrap._find_and_load(name, ...)``); the first one
    that names a submodule of ours tells which one it is.
    """
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_globals.get("__name__") == "importlib._bootstrap" and frame.f_code.co_name in (
            "_find_and_load",
            "_find_and_load_unlocked",
        ):
            name = frame.f_locals.get("name")
            if isinstance(name, str) and name.startswith(__name__ + "."):
                return name == __name__ + ".keras3" or name.startswith(__name__ + ".keras3.")
        frame = frame.f_back
    return False


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if not _imported_for_keras3():
    from tfcroloss import backends as _backends

    _backends.tensorflow_ops()  # selects tf-keras, or raises the ImportError above
    from tfcroloss import kernels, weightings  # noqa: E402
    from tfcroloss.functional import cro_loss, lambda_cro_loss  # noqa: E402
    from tfcroloss.losses import CROLoss, LambdaCROLoss  # noqa: E402
    from tfcroloss.rank import sampled_log_rank  # noqa: E402
