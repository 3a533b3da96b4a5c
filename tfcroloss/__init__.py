"""tfcroloss: CROLoss, a customizable Recall@N optimization loss, for TensorFlow retrieval models.

Two Keras flavours over one framework-free core (``functional``, ``kernels``, ``weightings``,
``rank``):

- tf-keras (Keras 2), for TFRS: ``tfcroloss.CROLoss``, ``tfcroloss.LambdaCROLoss``
  (module ``tfcroloss.losses``);
- Keras 3 on TensorFlow, JAX or PyTorch, and keras-rs: ``tfcroloss.keras3``;
- ``tfcroloss.tfrs.Retrieval``: TFRS's retrieval task that hands sampling probabilities to the loss.

Importing this package imports no framework. Its one side effect is the one the tf-keras
flavour needs before TensorFlow is first imported: ``TF_USE_LEGACY_KERAS=1`` unless the
variable is already set (so ``import tfcroloss`` then TFRS code gets Keras 2 as ``tf.keras``).
The names below are loaded on first use; ``tfcroloss.keras3`` undoes the variable when it is
loaded first. A process uses one flavour: each refuses to load beside the other.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

__version__ = "0.1.0"

# True when this import set TF_USE_LEGACY_KERAS (``tfcroloss.keras3`` then removes it again).
SET_TF_USE_LEGACY_KERAS = "TF_USE_LEGACY_KERAS" not in os.environ
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

_HOMES = {
    "CROLoss": "tfcroloss.losses",
    "LambdaCROLoss": "tfcroloss.losses",
    "cro_loss": "tfcroloss.functional",
    "lambda_cro_loss": "tfcroloss.functional",
    "sampled_log_rank": "tfcroloss.rank",
}
_SUBMODULES = ("kernels", "weightings", "tfrs")

__all__ = [*_HOMES, *_SUBMODULES]


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
