"""Losses by name: CROLoss, LambdaCROLoss and the paper's baselines as CROLoss special cases.

>>> build_loss("bpr", num_items=1000).get_config()["kernel"]
'softplus'
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from tfcroloss import CROLoss, LambdaCROLoss
from tfcroloss.registry import lookup

# name: (class, fixed arguments). Baselines fix kernel and alpha (section 3.5).
PRESETS: dict[str, tuple[type, dict[str, Any]]] = {
    "croloss": (CROLoss, {}),
    "lambda_croloss": (LambdaCROLoss, {}),
    "softmax": (CROLoss, {"kernel": "exponential", "alpha": 1.0}),
    "bpr": (CROLoss, {"kernel": "softplus", "alpha": 0.0}),
    "triplet": (CROLoss, {"kernel": "hinge", "alpha": 0.0}),
    "tfrs_softmax": (tf.keras.losses.CategoricalCrossentropy, {"from_logits": True}),
}


def build_loss(name: str, num_items: int, **params: Any) -> tf.keras.losses.Loss:
    """Builds the loss ``name`` for a catalog of ``num_items``, with per-example reduction.

    ``params`` are the loss's own arguments (kernel, alpha, margin, ...); a
    baseline refuses arguments that would change what it is.
    """
    cls, fixed = lookup(PRESETS, name, "loss", plural="losses")
    clash = sorted(set(params) & set(fixed))
    if clash:
        raise ValueError(f"loss {name!r} fixes {', '.join(clash)}; use 'croloss' to set them")
    if cls is tf.keras.losses.CategoricalCrossentropy:
        if params:
            raise ValueError(f"loss {name!r} takes no parameters, got {', '.join(sorted(params))}")
        return cls(**fixed, reduction=tf.keras.losses.Reduction.NONE)
    return cls(num_items=num_items, reduction=tf.keras.losses.Reduction.NONE, name=name, **fixed, **params)
