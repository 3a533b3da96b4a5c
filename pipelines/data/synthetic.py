"""A synthetic interaction log with structure a sequence model can learn and popularity cannot.

Items belong to latent clusters ("interests") and have Zipf-like popularity; each user holds one to
four interests and walks through them in sessions: an interaction stays on the current interest
with probability ``1 - switch_probability`` (temporal locality), and a small share of clicks is
noise drawn from global popularity. Sequence lengths are log-normal with a floor of 3, so a few
users fall under the 5-interaction filter, as in real logs. Users are generated in fixed-size
chunks, each with its own seeded generator, so the output depends only on the seed and the sizes,
and memory stays bounded at any size.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from tfcroloss.pipelines.data import SYNTHETIC_FORMATS, DataError
from tfcroloss.pipelines.data.synthetic_presets import PRESETS, SyntheticConfig
from tfcroloss.pipelines.files import atomic_file
from tfcroloss.registry import lookup

_CHUNK_USERS = 50_000
_START_TIME = 1_511_539_200  # 2017-11-25, the first day of the Taobao log


def write_synthetic(
    output: str | os.PathLike[str],
    config: SyntheticConfig | str = "tiny",
    *,
    seed: int = 0,
    fmt: str = "comirec",
) -> int:
    """Write a synthetic log to ``output`` (atomically) and return its number of interactions."""
    if isinstance(config, str):
        config = lookup(PRESETS, config, "preset", error=DataError)
    lookup(dict.fromkeys(SYNTHETIC_FORMATS), fmt, "format", error=DataError)
    catalog = _Catalog(config, np.random.default_rng([seed, 0]))
    delimiter = "\t" if fmt == "recbole" else ","
    header = {
        "comirec": "",
        "csv": "user_id,item_id,timestamp\n",
        "recbole": "user_id:token\titem_id:token\ttimestamp:float\n",
    }[fmt]
    total = 0
    with atomic_file(output) as tmp:
        with pa.OSFile(str(tmp), "wb") as sink:
            sink.write(header.encode())
            options = pacsv.WriteOptions(include_header=False, delimiter=delimiter)
            for chunk, first in enumerate(range(0, config.num_users, _CHUNK_USERS)):
                rng = np.random.default_rng([seed, chunk + 1])
                count = min(_CHUNK_USERS, config.num_users - first)
                table = _user_chunk(config, catalog, rng, first, count)
                pacsv.write_csv(table, sink, options)
                total += table.num_rows
    return total


class _Catalog:
    """Items grouped by cluster with Zipf-like weights, for vectorised sampling."""

    def __init__(self, config: SyntheticConfig, rng: np.random.Generator) -> None:
        clusters = rng.integers(0, config.num_clusters, config.num_items)
        self.items_by_cluster = np.argsort(clusters, kind="stable")
        self.cluster_end = np.searchsorted(
            clusters[self.items_by_cluster], np.arange(config.num_clusters), side="right"
        )
        cluster_start = np.concatenate([[0], self.cluster_end[:-1]])
        # Zipf within each cluster (items are in random order there) and across clusters.
        sizes = self.cluster_end - cluster_start
        rank = np.arange(config.num_items) - np.repeat(cluster_start, sizes)
        self.cumulative = np.cumsum((rank + 1.0) ** -config.zipf_exponent)
        below = np.concatenate([[0.0], self.cumulative])
        self.cluster_low = below[cluster_start]
        self.cluster_mass = below[self.cluster_end] - self.cluster_low
        cluster_rank = rng.permutation(config.num_clusters)
        self.cluster_cdf = np.cumsum((cluster_rank + 1.0) ** -config.zipf_exponent)
        # Raw item tokens: a seeded permutation, so raw ids say nothing about popularity.
        self.tokens = rng.permutation(config.num_items).astype(np.int64) + 1

    def sample_clusters(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        return np.searchsorted(self.cluster_cdf, rng.random(shape) * self.cluster_cdf[-1])

    def sample_items(self, rng: np.random.Generator, clusters: np.ndarray) -> np.ndarray:
        target = (
            self.cluster_low[clusters] + rng.random(clusters.size) * self.cluster_mass[clusters]
        )
        position = np.searchsorted(self.cumulative, target, side="right")
        position = np.minimum(position, self.cluster_end[clusters] - 1)
        return self.items_by_cluster[position]


def _user_chunk(
    config: SyntheticConfig,
    catalog: _Catalog,
    rng: np.random.Generator,
    first_user: int,
    num_users: int,
) -> pa.Table:
    mu = np.log(config.mean_length - 3) - 0.5
    lengths = 3 + np.minimum(np.rint(rng.lognormal(mu, 1.0, num_users)), 50 * config.mean_length)
    lengths = lengths.astype(np.int64)
    num_rows = int(lengths.sum())
    row_user = np.repeat(np.arange(num_users), lengths)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    position = np.arange(num_rows) - np.repeat(starts, lengths)

    interests = catalog.sample_clusters(rng, (num_users, 4))
    num_interests = rng.integers(1, 5, num_users)
    switch = (rng.random(num_rows) < config.switch_probability) | (position == 0)
    segment = np.cumsum(switch) - 1
    segment_user = row_user[switch]
    segment_slot = (rng.random(segment_user.size) * num_interests[segment_user]).astype(np.int64)
    clusters = interests[row_user, segment_slot[segment]]
    noise = rng.random(num_rows) < config.noise_probability
    clusters[noise] = catalog.sample_clusters(rng, (int(noise.sum()),))
    items = catalog.sample_items(rng, clusters)

    gaps = 1 + rng.exponential(3_600.0, num_rows).astype(np.int64)
    gaps[starts] = rng.integers(0, 30 * 86_400, num_users)
    times = (
        _START_TIME + np.cumsum(gaps) - np.repeat(np.cumsum(gaps)[starts] - gaps[starts], lengths)
    )
    return pa.table(
        {
            "user": row_user + first_user + 1,
            "item": catalog.tokens[items],
            "time": times,
        }
    )
