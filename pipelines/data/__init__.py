"""Data: raw interaction logs in, a prepared data set on disk out, and model inputs from it.

``readers`` parse the usual log formats into one columnar ``InteractionLog``; ``prepare`` applies
the paper's protocol (filters, ids by popularity, user split) and writes a prepared data set,
whose on-disk format is ``dataset`` (its splits as Parquet shards: ``shards``); ``spark_engine``
runs the same protocol as a Spark job and writes the same files; ``inputs`` turns a prepared
split into tf.data training cuts (streamed from the shards) and evaluation samples. ``synthetic`` writes logs with learnable structure; ``download`` fetches
public data sets. Nothing here imports training or serving.

This package itself is light (no numpy, pyarrow or TensorFlow): it holds the room's error and the
names that the CLI offers as choices, which the modules implementing them import from here.
"""


class DataError(ValueError):
    """Bad input data or a bad prepared data set; the message names the file, line and field."""


SPLIT_NAMES = ("train", "valid", "test")  # the splits of a prepared data set (``dataset``)
FORMATS = ("comirec", "movielens", "recbole", "csv")  # the log formats ``readers`` parse
SYNTHETIC_FORMATS = ("comirec", "csv", "recbole")  # the formats ``synthetic`` writes
ENGINES = ("numpy", "spark")  # what runs ``prepare``: ``prepare`` (one process) or ``spark_engine``
