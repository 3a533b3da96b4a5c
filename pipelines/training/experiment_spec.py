"""The experiment file: a grid of losses x kernels x alpha x seeds over one base run config.

An experiment file (YAML)::

    base: configs/ml-100k.yaml        # the run config every variant starts from
    output: docs/results/ml-100k      # tables, plots, results.json; runs under output/runs/
    seeds: [1, 2, 3]
    learning_rates: [0.002, 0.005]    # the same search budget for every variant
    variants:                         # each a loss section, named by its label
      softmax: {name: softmax}
      croloss-softplus-a1.0: {name: croloss, kernel: softplus, alpha: 1.0}
    grid:                             # optional: more variants, a product of values
      - {name: croloss, kernel: [sigmoid, softplus], alpha: [0.6, 1.0, 1.4]}
    overrides: {negatives.per_positive: 10}   # optional: base config values for every variant
    share_learning_rate: family       # optional: search the rate once per loss family
    learning_rates_from: docs/results/x/results.json   # optional: reuse an earlier experiment's rates

A variant may carry ``overrides`` of its own (``{"section.key": value}``), e.g.
``{name: croloss, overrides: {negatives.mode: in_batch, negatives.correction: none}}``.
``load`` checks the whole file, and that every variant, rate and seed makes a valid run config,
before anything trains.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Any

from tfcroloss.pipelines.training import config as config_lib
from tfcroloss.registry import unknown_name

REQUIRED = ("base", "output", "seeds", "learning_rates")
OPTIONAL = ("variants", "grid", "overrides", "share_learning_rate", "learning_rates_from")
SHARE_LEARNING_RATE = ("none", "family")


@dataclasses.dataclass
class Experiment:
    base: config_lib.RunConfig
    output: Path
    seeds: list[int]
    learning_rates: list[float]
    variants: dict[str, dict[str, Any]]
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    share_learning_rate: str = "none"
    learning_rates_from: Path | None = None


def _label(loss: dict[str, Any]) -> str:
    """A variant's name from its loss section, e.g. ``croloss kernel=sigmoid alpha=0.6``."""
    parts = [loss["name"]] + [f"{key}={value}" for key, value in loss.items() if key not in ("name", "overrides")]
    overrides = loss.get("overrides") or {}
    parts += [f"{key.split('.')[-1]}={value}" for key, value in overrides.items()]
    return " ".join(parts)


def family(variant: dict[str, Any]) -> str:
    """A variant's label without its alpha: the variants that share a learning rate under
    ``share_learning_rate: family``."""
    return _label({k: v for k, v in variant.items() if k != "alpha"})


def variant_config(base: config_lib.RunConfig, variant: dict[str, Any], overrides: dict[str, Any] | None = None,
                   source: str = "variant") -> config_lib.RunConfig:
    """The run config of a variant: ``base`` with the experiment's and the variant's overrides and its loss."""
    if not isinstance(variant, dict) or not isinstance(variant.get("overrides") or {}, dict):
        raise config_lib.ConfigError(f"{source}: expected a loss section (a mapping, overrides a mapping), "
                                     f"got {variant!r}")
    raw = base.to_dict()
    loss = {k: v for k, v in variant.items() if k != "overrides"}
    for dotted, value in {**(overrides or {}), **(variant.get("overrides") or {})}.items():
        section, _, key = str(dotted).partition(".")
        if section not in raw or not key or section == "loss":
            raise config_lib.ConfigError(f"{source}: override {dotted!r}: expected section.key outside 'loss'")
        raw[section][key] = value
    raw["loss"] = loss
    return config_lib.from_dict(raw, source=source)


def _read(path: Path) -> dict[str, Any]:
    """The file's top-level mapping; a missing file, bad YAML or another shape is one line naming the file."""
    raw = config_lib.read_yaml(path, what="experiment file")
    if not isinstance(raw, dict):
        raise config_lib.ConfigError(f"{path}: expected a mapping with keys {', '.join(REQUIRED + OPTIONAL)}; "
                                     f"got {'an empty file' if raw is None else type(raw).__name__}")
    unknown = sorted(set(raw) - set(REQUIRED + OPTIONAL), key=str)
    if unknown:
        raise config_lib.ConfigError(f"{path}: {unknown_name('key', unknown[0], REQUIRED + OPTIONAL)}")
    for key in REQUIRED:
        if key not in raw:
            raise config_lib.ConfigError(f"{path}: {key!r} is required")
    expected = {"base": str, "output": str, "seeds": list, "learning_rates": list, "variants": dict, "grid": list,
                "overrides": dict, "share_learning_rate": str, "learning_rates_from": str}
    for key, kind in expected.items():
        if raw.get(key) is not None and not isinstance(raw[key], kind):
            raise config_lib.ConfigError(f"{path}: {key} must be a {'mapping' if kind is dict else kind.__name__}, "
                                         f"got {raw[key]!r}")
    return raw


def _variants(path: Path, raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The named variants, then the grid's products (named by their loss sections) in order."""
    variants = dict(raw.get("variants") or {})
    for name in variants:
        if not isinstance(name, str):
            raise config_lib.ConfigError(f"{path}: variants: a label must be a string, got {name!r}")
    for entry in raw.get("grid") or []:
        if not isinstance(entry, dict) or "name" not in entry:
            raise config_lib.ConfigError(f"{path}: grid: expected a loss section with a name, got {entry!r}")
        values = [value if isinstance(value, list) else [value] for value in entry.values()]
        for combo in itertools.product(*values):
            loss = dict(zip(entry, combo, strict=True))
            variants.setdefault(_label(loss), loss)
    if not variants:
        raise config_lib.ConfigError(f"{path}: no variants (give 'variants' or 'grid')")
    return variants


def load(path: str | Path) -> Experiment:
    """Reads and checks an experiment file; every variant must make a valid run config, every
    learning rate and seed a valid training section."""
    path = Path(path)
    raw = _read(path)
    variants = _variants(path, raw)
    base = config_lib.load(raw["base"])
    overrides = dict(raw.get("overrides") or {})
    for name, loss in variants.items():  # fail now, not after hours of training
        variant_config(base, loss, overrides, source=f"{path}: variant {name!r}")
    for key, field in (("learning_rates", "learning_rate"), ("seeds", "seed")):
        if not raw[key]:
            raise config_lib.ConfigError(f"{path}: {key} must not be empty")
        for value in raw[key]:
            run = base.to_dict()
            run["training"][field] = value
            config_lib.from_dict(run, source=f"{path}: {key}")
    share = raw.get("share_learning_rate", "none")
    if share not in SHARE_LEARNING_RATE:
        raise config_lib.ConfigError(f"{path}: share_learning_rate: {unknown_name('value', share, SHARE_LEARNING_RATE)}")
    rates_from = Path(raw["learning_rates_from"]) if raw.get("learning_rates_from") else None
    return Experiment(base, Path(raw["output"]), [int(s) for s in raw["seeds"]],
                      [float(r) for r in raw["learning_rates"]], variants, overrides, share, rates_from)
