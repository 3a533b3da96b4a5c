"""The run directory: the on-disk contract between training and evaluation, export and experiments.

Layout (written by ``train``)::

    config.yaml          the run's full configuration (defaults filled in)
    checkpoints/         latest model + optimizer + early-stopping state, written at every validation
    best/                weights of the best validation step (``weights_checkpoint``: no optimizer state)
    logs/                TensorBoard logs (train loss, validation metrics)
    validation.jsonl     one line per validation: step, metrics, seconds
    metrics.json         final test metrics of the best weights, written when training ends

``load_run`` rebuilds the model the config describes and restores the best weights.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfcroloss.models.loss_presets import build_loss
from tfcroloss.models.two_tower import TwoTowerModel
from tfcroloss.pipelines.data.dataset import PreparedDataset, Split
from tfcroloss.pipelines.data.inputs import training_dataset
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


def positive_probabilities(split: Split, num_items: int, scheme: str) -> np.ndarray:
    """``[num_items + 1]`` float64: the probability that a training batch's positive is item i,
    under ``scheme`` (what an in-batch negative's q_j is; ``training_dataset`` draws the batches).

    ``random_users`` takes a uniform user with more than ``min_cut`` items and a uniform cut k in
    [min_cut, len - 1], the positive being item k of that user; ``all_cuts`` takes every such
    (user, cut) pair equally often.
    """
    min_cut = inspect.signature(training_dataset).parameters["min_cut"].default
    lengths = split.lengths
    eligible = lengths > min_cut
    position = np.arange(len(split.items)) - np.repeat(split.offsets[:-1], lengths)
    user = np.repeat(np.arange(len(lengths)), lengths)
    target = (position >= min_cut) & eligible[user]
    if scheme == "random_users":
        weights = 1.0 / (lengths[user[target]] - min_cut)
    else:
        weights = np.ones(int(target.sum()))
    probabilities = np.bincount(split.items[target], weights=weights, minlength=num_items + 1).astype(np.float64)
    return probabilities / probabilities.sum()


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
    model.user_embeddings(tf.zeros([1, config.data.maxlen], tf.int32))  # create the variables
    return model


def weights_checkpoint(model: TwoTowerModel) -> tf.train.Checkpoint:
    """The trained weights alone (no optimizer state): what ``best/`` holds."""
    return tf.train.Checkpoint(item_embedding=model.item_embedding, user_tower=model.user_tower)


def load_run(run_dir: str | Path) -> Run:
    """A finished run with its best weights restored (for evaluation and export)."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).exists():
        raise FileNotFoundError(f"{run_dir} is not a run directory: {CONFIG_FILE} is missing")
    config = config_lib.load(run_dir / CONFIG_FILE)
    dataset = PreparedDataset.load(config.data.path)
    model = build_model(config, dataset)
    best = tf.train.latest_checkpoint(str(run_dir / BEST_DIR))
    if best is None:
        raise FileNotFoundError(f"{run_dir} has no trained weights yet (best/ is empty): train it first")
    weights_checkpoint(model).restore(best).expect_partial()
    return Run(run_dir, config, dataset, model)
