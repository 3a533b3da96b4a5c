"""TensorFlow distribution strategies for training, chosen by name (``training.strategy``).

- ``default``: one device (no strategy).
- ``mirrored``: synchronous data parallelism over the local GPUs (or logical CPUs).
- ``multi_worker``: synchronous data parallelism over the workers of ``TF_CONFIG``
  (``tf.distribute.MultiWorkerMirroredStrategy``); every worker runs the same command.
- ``parameter_server``: asynchronous training with variables on the ``ps`` tasks of
  ``TF_CONFIG`` (``tf.distribute.ParameterServerStrategy``). The chief runs the training
  loop; ``worker`` and ``ps`` tasks only serve (``serve_if_server_task``). Variables of at
  least ``min_shard_bytes`` (in practice the item embedding table) are split row-wise over
  the parameter servers, so the table never has to fit one machine.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tfcroloss.pipelines.training.config import STRATEGIES, ConfigError
from tfcroloss.registry import lookup

if TYPE_CHECKING:
    import tensorflow as tf

CLUSTER_STRATEGIES = ("multi_worker", "parameter_server")
# TensorFlow's own default for MinSizePartitioner: smaller variables stay whole.
MIN_SHARD_BYTES = 256 << 10
# Job names each cluster strategy accepts, and the ones it requires.
_JOBS = {
    "multi_worker": ({"chief", "worker"}, set()),
    "parameter_server": ({"chief", "worker", "ps"}, {"chief", "worker", "ps"}),
}
_TF_CONFIG_EXAMPLE = (
    'TF_CONFIG=\'{"cluster": {"worker": ["host1:2222", "host2:2222"]}, '
    '"task": {"type": "worker", "index": 0}}\''
)


def tf_config(strategy: str) -> dict[str, Any]:
    """The checked ``TF_CONFIG`` of this process for a cluster ``strategy``.

    Raises ``ConfigError`` naming what is missing or wrong: no variable, not JSON, no
    ``cluster``/``task``, a job the strategy does not use (or lacks), a task not in the cluster.
    """
    if strategy not in CLUSTER_STRATEGIES:
        raise ValueError(f"strategy {strategy!r} uses no cluster; cluster strategies: {CLUSTER_STRATEGIES}")
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise ConfigError(
            f"training.strategy={strategy} needs the TF_CONFIG environment variable "
            f"(the cluster and this task), e.g. {_TF_CONFIG_EXAMPLE}"
        )
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ConfigError(f"TF_CONFIG is not valid JSON ({error}): {raw!r}") from None
    cluster, task = (parsed.get(key) if isinstance(parsed, dict) else None for key in ("cluster", "task"))
    if not isinstance(cluster, dict) or not cluster:
        raise ConfigError(f"TF_CONFIG needs a 'cluster' mapping of job name to host:port list, got {raw!r}")
    if not isinstance(task, dict) or not isinstance(task.get("type"), str) or not isinstance(task.get("index"), int):
        raise ConfigError(f"TF_CONFIG needs a 'task' with a 'type' and an integer 'index', got {raw!r}")
    allowed, required = _JOBS[strategy]
    unknown, missing = sorted(set(cluster) - allowed), sorted(required - set(cluster))
    if unknown or missing or not set(cluster) & {"chief", "worker"}:
        raise ConfigError(
            f"TF_CONFIG cluster for {strategy} takes jobs {sorted(allowed)} and needs "
            f"{sorted(required) or 'a chief or a worker'}; got jobs {sorted(cluster)}"
        )
    for job, addresses in cluster.items():
        if not isinstance(addresses, list) or not addresses or not all(isinstance(a, str) for a in addresses):
            raise ConfigError(f"TF_CONFIG cluster.{job} must be a non-empty list of 'host:port', got {addresses!r}")
    if len(cluster.get("chief", [])) > 1:
        raise ConfigError(f"TF_CONFIG cluster may have one chief, got {cluster['chief']!r}")
    if task["type"] not in cluster or not 0 <= task["index"] < len(cluster[task["type"]]):
        raise ConfigError(f"TF_CONFIG task {task!r} is not in the cluster {cluster!r}")
    return parsed


def make_strategy(name: str, *, min_shard_bytes: int = MIN_SHARD_BYTES) -> tf.distribute.Strategy:
    """The ``tf.distribute.Strategy`` called ``name`` (one of ``STRATEGIES``).

    Cluster strategies read ``TF_CONFIG`` (checked by ``tf_config``). Create the strategy
    before any other TensorFlow operation of the program: multi-worker collectives are
    configured when it is built. For ``parameter_server`` call it on the chief only.
    """
    import tensorflow as tf

    lookup(dict.fromkeys(STRATEGIES), name, "strategy", plural="strategies", error=ConfigError)
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    config = tf_config(name)
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    if config["task"]["type"] != "chief":
        raise ConfigError(
            f"the parameter_server strategy runs on the chief; task {config['task']!r} only serves "
            "(see serve_if_server_task)"
        )
    partitioner = tf.distribute.experimental.partitioners.MinSizePartitioner(
        min_shard_bytes=min_shard_bytes, max_shards=len(config["cluster"]["ps"])
    )
    return tf.distribute.ParameterServerStrategy(resolver, variable_partitioner=partitioner)


def serve_if_server_task(name: str) -> None:
    """On a ``worker`` or ``ps`` task of a ``parameter_server`` cluster, serves forever.

    Such a task runs a ``tf.distribute.Server`` that the chief drives; it never returns and
    is stopped from outside (by the cluster manager) once the chief has finished. On any
    other task, or with another strategy, returns at once.
    """
    import tensorflow as tf

    if name != "parameter_server":
        return
    config = tf_config(name)
    task = config["task"]
    if task["type"] == "chief":
        return
    server = tf.distribute.Server(
        tf.train.ClusterSpec(config["cluster"]),
        job_name=task["type"],
        task_index=task["index"],
        protocol="grpc",
        start=True,
    )
    server.join()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run directory: always, except on non-chief workers
    of a multi-worker cluster (the chief is task ``chief``, else ``worker`` 0)."""
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    resolver = strategy.cluster_resolver
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def distributed_input(
    strategy: tf.distribute.Strategy,
    make_dataset: Callable[[tf.distribute.InputContext | None], tf.data.Dataset],
) -> tf.data.Dataset | tf.keras.utils.experimental.DatasetCreator:
    """What ``model.fit`` takes under ``strategy``: ``make_dataset(None)`` without a strategy,
    otherwise a ``DatasetCreator`` that builds one input pipeline per worker with its
    ``InputContext`` (the pipeline's id, the number of pipelines, the per-replica batch)."""
    import tensorflow as tf

    distributed = (
        tf.distribute.MirroredStrategy,
        tf.distribute.MultiWorkerMirroredStrategy,
        tf.distribute.ParameterServerStrategy,
    )
    if not isinstance(strategy, distributed):
        return make_dataset(None)
    return tf.keras.utils.experimental.DatasetCreator(make_dataset)
