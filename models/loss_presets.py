"""Losses by name: CROLoss, LambdaCROLoss and the paper's baselines as CROLoss special cases.

Light to import (no framework): configs check a loss's name and arguments here, against the
loss function's own signature, before anything is built.

>>> sorted(loss_arguments("bpr"))
['margin', 'weighting']
>>> check_loss_arguments("croloss", {"alpah": 1.2})
Traceback (most recent call last):
...
ValueError: unknown argument 'alpah' (did you mean 'alpha'?); valid arguments: alpha, kernel, margin, weighting
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from tfcroloss import functional
from tfcroloss.registry import lookup, unknown_name

# name: (loss function, fixed arguments); None is Keras's softmax cross-entropy (what TFRS uses).
# Baselines fix kernel and alpha (section 3.5).
PRESETS: dict[str, tuple[Callable[..., Any] | None, dict[str, Any]]] = {
    "croloss": (functional.cro_loss, {}),
    "lambda_croloss": (functional.lambda_cro_loss, {}),
    "softmax": (functional.cro_loss, {"kernel": "exponential", "alpha": 1.0}),
    "bpr": (functional.cro_loss, {"kernel": "softplus", "alpha": 0.0}),
    "triplet": (functional.cro_loss, {"kernel": "hinge", "alpha": 0.0}),
    "tfrs_softmax": (None, {}),
}
# Arguments of the functions that a preset's user does not set: the pipeline or the model does.
_SET_ELSEWHERE = ("num_items", "candidate_sampling_probability", "ops")


def loss_arguments(name: str) -> dict[str, inspect.Parameter]:
    """The arguments the loss ``name`` takes from a user (a config's ``loss:`` section), in the
    order of its function's signature; the catalog size and the fixed arguments are not among them."""
    fn, fixed = lookup(PRESETS, name, "loss", plural="losses")
    if fn is None:
        return {}
    return {
        parameter.name: parameter
        for parameter in inspect.signature(fn).parameters.values()
        if parameter.kind is parameter.KEYWORD_ONLY and parameter.name not in (*_SET_ELSEWHERE, *fixed)
    }


def check_loss_arguments(name: str, arguments: dict[str, Any]) -> None:
    """Raises ``ValueError`` naming the first argument of ``arguments`` that the loss ``name``
    does not take or cannot use (its name, type or value), and what is allowed."""
    fn, fixed = lookup(PRESETS, name, "loss", plural="losses")
    valid = loss_arguments(name)
    if "num_items" in arguments:
        raise ValueError("num_items is the catalog size, set from the data set; leave it out")
    clash = sorted(set(arguments) & set(fixed))
    if clash:
        raise ValueError(f"loss {name!r} fixes {', '.join(clash)}; use 'croloss' to set them")
    if fn is None and arguments:
        raise ValueError(f"loss {name!r} takes no arguments, got {', '.join(sorted(arguments))}")
    unknown = [key for key in arguments if key not in valid]
    if unknown:
        raise ValueError(unknown_name("argument", unknown[0], valid))
    if fn is not None:
        defaults = {key: parameter.default for key, parameter in valid.items()}
        # num_items=1 stands in for the catalog size, which is checked when the loss is built.
        functional.check_arguments(**{**defaults, **fixed, **arguments, "num_items": 1})


def build_loss(name: str, num_items: int, **arguments: Any) -> Any:
    """Builds the tf-keras loss ``name`` for a catalog of ``num_items``, with per-example reduction.

    ``arguments`` are the loss's own (kernel, alpha, margin, ...); a baseline refuses
    arguments that would change what it is.

    >>> build_loss("bpr", num_items=1000).get_config()["kernel"]
    'softplus'
    """
    check_loss_arguments(name, arguments)
    fn, fixed = PRESETS[name]
    import tensorflow as tf

    from tfcroloss.losses import CROLoss, LambdaCROLoss

    if fn is None:
        return tf.keras.losses.CategoricalCrossentropy(from_logits=True, reduction=tf.keras.losses.Reduction.NONE)
    cls = {functional.cro_loss: CROLoss, functional.lambda_cro_loss: LambdaCROLoss}[fn]
    return cls(num_items=num_items, reduction=tf.keras.losses.Reduction.NONE, name=name, **fixed, **arguments)
