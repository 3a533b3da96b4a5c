"""Run configuration: a YAML file with the sections below, checked strictly on load.

Every key is optional except ``data.path``; defaults are the paper's Amazon
Books settings. An unknown key, a wrong type or a value outside its allowed set
is an error that names the file, the key and what is allowed.

.. code-block:: yaml

    data:       {path: data/prepared/book, maxlen: 20, scheme: random_users}
    model:      {embedding_dim: 32, hidden_dims: [32], tower: mean, temperature_scale: 10,
                 item_initializer: uniform}
    loss:       {name: croloss, kernel: softplus, alpha: 1.0}     # other keys go to the loss
    negatives:  {mode: sampled, per_positive: 10, correction: auto}
    training:   {batch_size: 256, learning_rate: 0.02, max_steps: 500000, eval_every: 4000,
                 patience: 10, seed: 1, strategy: default, optimizer: adam}
    evaluation: {ns: [20, 50, 100, 200, 500], select_on: recall@100, index: exact,
                 exclude_history: false, validation_users: null}

``negatives.correction`` (``auto|none|log_q|importance``) says how the loss accounts for
in-batch negatives being popularity draws (``models/two_tower.py``, ``docs/unbiased-rank.md``):
``auto`` is unbiased for each loss (log-Q for softmax cross-entropy, the importance-weighted
rank for the CROLoss family) and does nothing for ``sampled`` negatives. ``log_q: true`` is the
older spelling of ``correction: log_q``.
"""

from __future__ import annotations

import dataclasses
import importlib
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from tfcroloss.registry import unknown_name


class ConfigError(ValueError):
    """A configuration file or value that cannot be used; the message says where and why."""


@dataclasses.dataclass(frozen=True)
class Registry:
    """Where the allowed values of a config key live: ``module.attribute`` (a mapping or a tuple of
    names), imported when a config is checked, so this module stays light."""

    module: str
    attribute: str
    what: str
    plural: str | None = None

    def names(self) -> tuple[str, ...]:
        return tuple(getattr(importlib.import_module(self.module), self.attribute))


@dataclasses.dataclass
class DataConfig:
    path: str = ""
    maxlen: int = 20
    scheme: str = "random_users"

    CHOICES = {"scheme": Registry("tfcroloss.pipelines.data.inputs", "TRAINING_SCHEMES", "scheme")}


@dataclasses.dataclass
class ModelConfig:
    embedding_dim: int = 32
    hidden_dims: list[int] = dataclasses.field(default_factory=lambda: [32])
    tower: str = "mean"
    temperature_scale: float = 10.0
    item_initializer: str = "uniform"

    CHOICES = {
        "tower": Registry("tfcroloss.models.towers", "TOWERS", "tower"),
        "item_initializer": Registry("tfcroloss.models.two_tower", "ITEM_INITIALIZERS", "item initializer"),
    }


@dataclasses.dataclass
class LossConfig:
    name: str = "croloss"
    params: dict[str, Any] = dataclasses.field(default_factory=dict)

    CHOICES = {"name": Registry("tfcroloss.models.loss_presets", "PRESETS", "loss", "losses")}


@dataclasses.dataclass
class NegativesConfig:
    mode: str = "sampled"
    per_positive: int = 10
    correction: str = "auto"
    log_q: bool = False  # the older spelling of correction: log_q

    CHOICES = {
        "mode": Registry("tfcroloss.models.two_tower", "NEGATIVE_MODES", "negatives mode"),
        "correction": Registry("tfcroloss.models.two_tower", "CORRECTIONS", "correction"),
    }


@dataclasses.dataclass
class TrainingConfig:
    batch_size: int = 256
    learning_rate: float = 0.02
    max_steps: int = 500_000
    eval_every: int = 4_000
    patience: int = 10
    seed: int = 1
    strategy: str = "default"
    optimizer: str = "adam"

    CHOICES = {
        "strategy": Registry("tfcroloss.pipelines.training.distribute", "STRATEGIES", "strategy", "strategies"),
        "optimizer": Registry("tfcroloss.models.optimizers", "OPTIMIZERS", "optimizer"),
    }


@dataclasses.dataclass
class EvaluationConfig:
    ns: list[int] = dataclasses.field(default_factory=lambda: [20, 50, 100, 200, 500])
    select_on: str = "recall@100"
    index: str = "exact"
    exclude_history: bool = False
    validation_users: int | None = None

    CHOICES = {"index": Registry("tfcroloss.pipelines.retrieval", "INDEX_KINDS", "index kind")}


@dataclasses.dataclass
class RunConfig:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    negatives: NegativesConfig = dataclasses.field(default_factory=NegativesConfig)
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = dataclasses.field(default_factory=EvaluationConfig)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["loss"] = {"name": self.loss.name, **self.loss.params}
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _check_value(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in typing.get_args(annotation):
            return None
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
        origin = typing.get_origin(annotation)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_type,) = typing.get_args(annotation)
        return [_check_value(v, item_type, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return value
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation in (int, float, str, bool) and (
        not isinstance(value, annotation) or (annotation is int and isinstance(value, bool))
    ):
        raise ConfigError(f"{where}: expected {annotation.__name__}, got {value!r}")
    return value


def _section(cls: type, raw: Any, where: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if cls is LossConfig:  # every key but `name` is an argument of the loss
        raw = {"name": raw.get("name", LossConfig.name), "params": {k: v for k, v in raw.items() if k != "name"}}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: {unknown_name('key', unknown[0], fields)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in raw.items():
        if dataclasses.is_dataclass(hints[key]):
            values[key] = _section(hints[key], value, f"{where}.{key}")
            continue
        values[key] = _check_value(value, hints[key], f"{where}.{key}")
        registry = getattr(cls, "CHOICES", {}).get(key)
        if registry and values[key] not in registry.names():
            message = unknown_name(registry.what, value, registry.names(), plural=registry.plural)
            raise ConfigError(f"{where}.{key}: {message}")
    return cls(**values)


def from_dict(raw: dict[str, Any], source: str = "config") -> RunConfig:
    """Builds a checked ``RunConfig`` from a mapping (as read from YAML)."""
    config = _section(RunConfig, raw, source)
    if not config.data.path:
        raise ConfigError(f"{source}: data.path is required (a prepared data set directory)")
    positive = {
        "data.maxlen": config.data.maxlen,
        "model.embedding_dim": config.model.embedding_dim,
        "training.batch_size": config.training.batch_size,
        "training.max_steps": config.training.max_steps,
        "training.eval_every": config.training.eval_every,
        "training.learning_rate": config.training.learning_rate,
        "model.temperature_scale": config.model.temperature_scale,
    }
    for key, value in positive.items():
        if not value > 0:
            raise ConfigError(f"{source}: {key} must be > 0, got {value!r}")
    if config.negatives.log_q:
        if config.negatives.correction not in ("auto", "log_q"):
            raise ConfigError(
                f"{source}: negatives.log_q: true contradicts negatives.correction: {config.negatives.correction}"
            )
        config.negatives.correction = "log_q"
    if config.negatives.mode == "sampled" and config.negatives.correction not in ("auto", "none"):
        raise ConfigError(
            f"{source}: negatives.correction: {config.negatives.correction} needs in_batch or both negatives "
            "(sampled negatives are uniform draws: nothing to correct)"
        )
    if not config.evaluation.ns or min(config.evaluation.ns) < 1:
        raise ConfigError(f"{source}: evaluation.ns must be a non-empty list of positive integers")
    metric, _, n = config.evaluation.select_on.partition("@")
    if metric not in ("recall", "hit_rate", "ndcg") or not n.isdigit() or int(n) not in config.evaluation.ns:
        raise ConfigError(
            f"{source}: evaluation.select_on must be recall|hit_rate|ndcg@N with N in evaluation.ns, "
            f"got {config.evaluation.select_on!r}"
        )
    return config


def load(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Reads and checks a YAML run config; ``overrides`` maps "section.key" to a value."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise FileNotFoundError(f"config file not found: {path}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        if not key:
            raise ConfigError(f"override {dotted!r}: expected section.key")
        if raw.get(section) is None:
            raw[section] = {}
        raw[section][key] = value
    return from_dict(raw, source=str(path))
