"""The run directory: the on-disk contract between training and evaluation, export and experiments.

Layout (written by ``train``)::

    config.yaml          the run's full configuration (defaults filled in), data.path absolute
    checkpoints/         latest model + optimizer + early-stopping state, written at every validation
    best/                weights of the best validation step (``weights_checkpoint``: no optimizer state)
    logs/                TensorBoard logs (train loss, validation metrics)
    validation.jsonl     one line per validation: step, metrics, seconds
    metrics.json         final test metrics of the best weights, written when training ends
    per_user.npz         per-user Recall@N of the best weights on valid and test (experiments and tune)

``load_run`` rebuilds the model the config describes and restores the best weights. Training
records ``data.path`` resolved (``with_resolved_data``), so a run loads from any directory; a
relative path (runs made before) is relative to where the command runs, as it was then.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import tensorflow as tf

from tfcroloss.models.loss_presets import build_loss
from tfcroloss.models.two_tower import TwoTowerModel
from tfcroloss.pipelines.data.dataset import PreparedDataset
from tfcroloss.pipelines.data.inputs import positive_probabilities
from tfcroloss.pipelines.training import config as config_lib

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
VALIDATION_FILE = "validation.jsonl"
CHECKPOINTS_DIR = "checkpoints"
BEST_DIR = "best"
LOGS_DIR = "logs"


@dataclasses.dataclass
class Run:
    """A trained (or training) run: its directory, config, data set and model."""

    directory: Path
    config: config_lib.RunConfig
    dataset: PreparedDataset
    model: TwoTowerModel


def with_resolved_data(config: config_lib.RunConfig) -> config_lib.RunConfig:
    """``config`` with ``data.path`` absolute, resolved from the current directory."""
    data = dataclasses.replace(config.data, path=str(Path(config.data.path).resolve()))
    return dataclasses.replace(config, data=data)


def build_model(config: config_lib.RunConfig, dataset: PreparedDataset) -> TwoTowerModel:
    """The two-tower model a config describes, for ``dataset``'s catalog."""
    probabilities = None
    if config.negatives.mode != "sampled" and config.negatives.correction != "none":
        probabilities = positive_probabilities(dataset.train, dataset.num_items, config.data.scheme)
    model = TwoTowerModel(
        num_items=dataset.num_items,
        loss=build_loss(config.loss.name, dataset.num_items, **config.loss.params),
        embedding_dim=config.model.embedding_dim,
        hidden_dims=config.model.hidden_dims,
        tower=config.model.tower,
        temperature_scale=config.model.temperature_scale,
        negatives=config.negatives.mode,
        negatives_per_positive=config.negatives.per_positive,
        item_probabilities=probabilities,
        seed=config.training.seed,
        correction=config.negatives.correction,
        item_initializer=config.model.item_initializer,
    )
    return model


def weights_checkpoint(model: TwoTowerModel) -> tf.train.Checkpoint:
    """The trained weights alone (no optimizer state): what ``best/`` holds."""
    return tf.train.Checkpoint(item_embedding=model.item_embedding, user_tower=model.user_tower)


def holds_training(run_dir: Path) -> bool:
    """Whether ``run_dir`` keeps anything trained (a checkpoint, best weights or test metrics):
    a folder without any is a run that failed before its first validation, free to be replaced."""
    checkpoints = (tf.train.latest_checkpoint(str(run_dir / folder)) for folder in (CHECKPOINTS_DIR, BEST_DIR))
    return any(checkpoints) or (run_dir / METRICS_FILE).exists()


def load_run(run_dir: str | Path) -> Run:
    """A finished run with its best weights restored (for evaluation and export)."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).exists():
        raise FileNotFoundError(f"{run_dir} is not a run directory: {CONFIG_FILE} is missing")
    config = config_lib.load(run_dir / CONFIG_FILE)
    if not Path(config.data.path).is_absolute() and not Path(config.data.path).exists():
        raise FileNotFoundError(
            f"{run_dir / CONFIG_FILE}: data.path {config.data.path!r} (recorded by an older tfcroloss) is "
            "relative to the directory the run was trained in: run the command there, or make it absolute"
        )
    best = tf.train.latest_checkpoint(str(run_dir / BEST_DIR))
    if best is None:
        raise FileNotFoundError(f"{run_dir} has no trained weights yet (best/ is empty): train it first")
    dataset = PreparedDataset.load(config.data.path)
    model = build_model(config, dataset)
    weights_checkpoint(model).restore(best).expect_partial()
    return Run(run_dir, config, dataset, model)
