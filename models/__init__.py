"""Two-tower retrieval models (TFRS) trained with the tfcroloss losses.

Light to import: the names below load their module (and TensorFlow) on first use, so configs
and the CLI can read the registries without a framework.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "PRESETS": "loss_presets",
    "build_loss": "loss_presets",
    "OPTIMIZERS": "optimizers",
    "LazyAdam": "optimizers",
    "SparseAdam": "optimizers",
    "build_optimizer": "optimizers",
    "NEGATIVE_MODES": "two_tower",
    "TwoTowerModel": "two_tower",
}

__all__ = list(_HOMES)


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
