"""What an in-batch negative's q_j is, per training scheme, and the config keys that pick corrections."""

import numpy as np
import pytest

from tests.conftest import tiny_config
from tfcroloss.pipelines.data.dataset import Split
from tfcroloss.pipelines.data.inputs import training_dataset
from tfcroloss.pipelines.training import config as config_lib
from tfcroloss.pipelines.training.run_directory import positive_probabilities


def small_split():
    # user 0: 6 items (cuts 4, 5), user 1: 5 items (cut 4), user 2: 3 items (never a target)
    sequences = [[1, 2, 3, 4, 5, 6], [2, 3, 4, 1, 7], [5, 6, 7]]
    offsets = np.cumsum([0] + [len(s) for s in sequences])
    return Split(user_index=np.arange(3), offsets=offsets, items=np.concatenate(sequences).astype(np.int32))


def test_random_users_probability_is_uniform_user_then_uniform_cut():
    p = positive_probabilities(small_split(), num_items=7, scheme="random_users")
    want = np.zeros(8)
    want[[5, 6]] += 0.5 * 0.5  # user 0: items 5, 6 with probability 1/2 each
    want[7] += 0.5  # user 1: item 7
    np.testing.assert_allclose(p, want)


def test_all_cuts_probability_counts_target_positions():
    p = positive_probabilities(small_split(), num_items=7, scheme="all_cuts")
    np.testing.assert_allclose(p[[5, 6, 7]], [1 / 3, 1 / 3, 1 / 3])


def test_probability_matches_the_batches_drawn(tiny_dataset):
    from tfcroloss.pipelines.data.dataset import PreparedDataset

    dataset = PreparedDataset.load(tiny_dataset)
    p = positive_probabilities(dataset.train, dataset.num_items, "random_users")
    batches = training_dataset(dataset.train, batch_size=16, maxlen=5, seed=0).take(400)
    drawn = np.concatenate([b["item_id"].numpy() for b in batches])
    frequency = np.bincount(drawn, minlength=dataset.num_items + 1) / drawn.size
    assert np.abs(frequency - p).sum() < 0.15  # total variation of 6,400 draws from the exact law


def test_correction_keys(tiny_dataset):
    config = tiny_config(tiny_dataset, negatives={"mode": "in_batch"})
    assert config.negatives.correction == "auto"
    legacy = tiny_config(tiny_dataset, negatives={"mode": "in_batch", "log_q": True})
    assert legacy.negatives.correction == "log_q"
    with pytest.raises(config_lib.ConfigError, match="nothing to correct"):
        tiny_config(tiny_dataset, negatives={"mode": "sampled", "correction": "importance"})
    with pytest.raises(config_lib.ConfigError, match="contradicts"):
        tiny_config(tiny_dataset, negatives={"mode": "in_batch", "log_q": True, "correction": "none"})
    with pytest.raises(config_lib.ConfigError, match="valid item initializers"):
        tiny_config(tiny_dataset, model={"item_initializer": "zeros"})


def test_in_batch_run_trains_with_the_corrected_loss(tiny_dataset, tmp_path):
    from tfcroloss.pipelines.training.run_directory import build_model
    from tfcroloss.pipelines.training.train import train

    config = tiny_config(tiny_dataset, negatives={"mode": "both", "per_positive": 1},
                         model={"item_initializer": "glorot_uniform", "hidden_dims": []},
                         training={"max_steps": 20, "eval_every": 20})
    result = train(config, tmp_path / "run", verbose=0)
    assert np.isfinite(result["test"]["recall@10"])
    from tfcroloss.pipelines.data.dataset import PreparedDataset

    assert build_model(config, PreparedDataset.load(tiny_dataset)).correction == "importance"
