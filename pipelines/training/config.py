"""Run configuration: a YAML file with the sections below, checked strictly on load.

Every key is optional except ``data.path``; defaults are the paper's Amazon
Books settings. Every section is checked when the config is loaded (``load``, ``from_dict``):
an unknown key, a wrong type, a value outside its range or its allowed set is a
``ConfigError`` that names the file, the key and what is allowed. The ``loss`` section takes the
preset's ``name`` and the loss function's own keyword arguments (``loss_presets.loss_arguments``);
``loss.num_items`` comes from the data set.

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
import inspect
import math
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from tfcroloss.registry import unknown_name


class ConfigError(ValueError):
    """A configuration file or value that cannot be used; the message says where and why."""


# Strategy names live here, light, for configs and CLI choices; ``distribute`` builds them.
STRATEGIES = ("default", "mirrored", "multi_worker", "parameter_server")
# The largest integer a config takes (TensorFlow counts steps, batches and sizes in int32 or int64).
INT_MAX = 2**31 - 1


@dataclasses.dataclass(frozen=True)
class Bound:
    """The allowed range of a number (of each entry, for a list): ``low <= value <= high``, or
    ``low < value`` when ``exclusive``."""

    low: float
    high: float = INT_MAX
    exclusive: bool = False

    def check(self, value: float, where: str) -> None:
        if (value > self.low if self.exclusive else value >= self.low) and value <= self.high:
            return
        low = f"> {self.low:g}" if self.exclusive else f">= {self.low:g}"
        high = f" and <= {self.high:,}" if value > self.high else ""
        raise ConfigError(f"{where} must be {low}{high}, got {value!r}")


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

    def unknown(self, name: Any) -> str:
        return unknown_name(self.what, name, self.names(), plural=self.plural)


@dataclasses.dataclass
class DataConfig:
    path: str = ""
    maxlen: int = 20
    scheme: str = "random_users"

    CHOICES = {"scheme": Registry("tfcroloss.pipelines.data.inputs", "TRAINING_SCHEMES", "scheme")}
    BOUNDS = {"maxlen": Bound(1)}


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
    BOUNDS = {"embedding_dim": Bound(1), "hidden_dims": Bound(1), "temperature_scale": Bound(0, exclusive=True)}


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
    BOUNDS = {"per_positive": Bound(1)}


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
        "strategy": Registry("tfcroloss.pipelines.training.config", "STRATEGIES", "strategy", "strategies"),
        "optimizer": Registry("tfcroloss.models.optimizers", "OPTIMIZERS", "optimizer"),
    }
    # patience: validations without gain before stopping (0 would stop before the first one);
    # seed: NumPy's seeds are below 2**32.
    BOUNDS = {
        "batch_size": Bound(1), "learning_rate": Bound(0, exclusive=True), "max_steps": Bound(1),
        "eval_every": Bound(1), "patience": Bound(1), "seed": Bound(0),
    }


@dataclasses.dataclass
class EvaluationConfig:
    ns: list[int] = dataclasses.field(default_factory=lambda: [20, 50, 100, 200, 500])
    select_on: str = "recall@100"
    index: str = "exact"
    exclude_history: bool = False
    validation_users: int | None = None

    CHOICES = {"index": Registry("tfcroloss.pipelines.retrieval", "INDEX_KINDS", "index kind")}
    BOUNDS = {"ns": Bound(1), "validation_users": Bound(1)}


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


SECTIONS: dict[str, type] = typing.get_type_hints(RunConfig)
# A number in exponent notation without a dot (``1e-3``): YAML 1.1 (PyYAML) reads it as a string.
_EXPONENT_NUMBER = re.compile(r"[-+]?[0-9]+[eE][-+]?[0-9]+")
# Plain annotations of the loss functions' arguments (the other ones are checked by the loss).
_ANNOTATIONS = {"int": int, "float": float, "str": str, "bool": bool}


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
    if annotation is float and isinstance(value, str) and _EXPONENT_NUMBER.fullmatch(value):
        value = float(value)
    if annotation in (int, float, str, bool) and (
        not isinstance(value, annotation) or (annotation is int and isinstance(value, bool))
    ):
        raise ConfigError(f"{where}: expected {annotation.__name__}, got {value!r}")
    if annotation is float and not math.isfinite(value):
        raise ConfigError(f"{where}: expected a finite float, got {value!r}")
    return value


def _loss_arguments(name: Any, where: str) -> dict[str, inspect.Parameter]:
    """The arguments the loss preset ``name`` takes besides ``name`` (``name`` checked first)."""
    registry = LossConfig.CHOICES["name"]
    if not isinstance(name, str) or name not in registry.names():
        raise ConfigError(f"{where}: loss.name: {registry.unknown(name)}")
    from tfcroloss.models.loss_presets import loss_arguments

    return loss_arguments(name)


def _keys(section: str, raw: dict[str, Any], where: str) -> tuple[str, ...]:
    """The keys ``section`` accepts (for ``loss``: those of the preset ``raw`` names)."""
    if section == "loss":
        return ("name", *_loss_arguments(raw.get("name", LossConfig.name), where))
    return tuple(field.name for field in dataclasses.fields(SECTIONS[section]))


def _check_key(section: str, key: str, raw: dict[str, Any], where: str) -> None:
    if section == "loss" and key == "num_items":
        raise ConfigError(f"{where}: loss.num_items is set from the data set (its number of items); remove it")
    valid = _keys(section, raw, where)
    if key in valid:
        return
    if section != "loss":
        raise ConfigError(f"{where}: section {section}: {unknown_name('key', key, valid)}")
    from tfcroloss.models.loss_presets import PRESETS

    name = raw.get("name", LossConfig.name)
    if key in PRESETS[name][1]:
        raise ConfigError(f"{where}: loss {name!r} fixes {key}; use 'croloss' to set it")
    raise ConfigError(f"{where}: section loss: {unknown_name('key', key, valid, plural=f'keys of loss {name!r}')}")


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a mapping of keys to values, got {value!r}")
    return value


def _section(section: str, raw: Any, source: str) -> Any:
    raw = _mapping(raw, f"{source}: section {section}")
    for key in raw:
        _check_key(section, key, raw, source)
    if section == "loss":
        return _loss_section(raw, source)
    cls = SECTIONS[section]
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in raw.items():
        where = f"{source}: {section}.{key}"
        values[key] = _check_value(value, hints[key], where)
        bound = getattr(cls, "BOUNDS", {}).get(key)
        if bound is not None and values[key] is not None:
            for number in values[key] if isinstance(values[key], list) else [values[key]]:
                bound.check(number, where)
        registry = getattr(cls, "CHOICES", {}).get(key)
        if registry and values[key] not in registry.names():
            raise ConfigError(f"{where}: {registry.unknown(value)}")
    return cls(**values)


def _loss_section(raw: dict[str, Any], source: str) -> LossConfig:
    """The ``loss`` section, checked against the loss function's own signature and checks."""
    from tfcroloss.models.loss_presets import check_loss_arguments

    name = raw.get("name", LossConfig.name)
    accepted = _loss_arguments(name, source)
    params = {}
    for key, value in raw.items():
        if key != "name":
            annotation = accepted[key].annotation
            params[key] = _check_value(value, _ANNOTATIONS.get(annotation, annotation), f"{source}: loss.{key}")
    try:
        check_loss_arguments(name, params)
    except ValueError as error:
        raise ConfigError(f"{source}: loss ({name}): {error}") from None
    return LossConfig(name, params)


def from_dict(raw: dict[str, Any], source: str = "config") -> RunConfig:
    """Builds a checked ``RunConfig`` from a mapping (as read from YAML)."""
    raw = _mapping(raw, f"{source}: the top level")
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{source}: {unknown_name('section', unknown[0], SECTIONS)}")
    config = RunConfig(**{section: _section(section, value, source) for section, value in raw.items()})
    if not config.data.path:
        raise ConfigError(f"{source}: data.path is required (a prepared data set directory)")
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
    if not config.evaluation.ns:
        raise ConfigError(f"{source}: evaluation.ns must be a non-empty list of positive integers")
    metric, _, n = config.evaluation.select_on.partition("@")
    if metric not in ("recall", "hit_rate", "ndcg") or not n.isdigit() or int(n) not in config.evaluation.ns:
        raise ConfigError(
            f"{source}: evaluation.select_on must be recall|hit_rate|ndcg@N with N in evaluation.ns, "
            f"got {config.evaluation.select_on!r}"
        )
    return config


def read_yaml(path: str | Path, what: str = "config file") -> Any:
    """A YAML file's content; a missing file (named as ``what``), non-UTF-8 text or a syntax error
    is one line."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte {error.start})") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{at}: {problem}") from None


def load(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Reads and checks a YAML run config; ``overrides`` maps "section.key" to a value."""
    raw = read_yaml(path)
    raw = _mapping(raw if raw is not None else {}, f"{path}: the top level")
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        where = f"{path}, --set {dotted}"
        if section not in SECTIONS or not key:
            message = unknown_name("section", section, SECTIONS) if key else "expected section.key"
            raise ConfigError(f"{where}: {message}")
        raw[section] = {**_mapping(raw.get(section), f"{path}: section {section}"), key: value}
        _check_key(section, key, raw[section], where)
    return from_dict(raw, source=str(path))
