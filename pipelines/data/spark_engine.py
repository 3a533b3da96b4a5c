"""The Spark engine of ``tfcroloss prepare`` (``--engine spark``): ``prepare``'s protocol as a
Spark job, for logs larger than one machine's memory.

It writes the same prepared data set as the NumPy engine, byte for byte: the log is read as
``readers.plan_log`` lays it out, each row keeps its position in the log (the order of the
files, then of the lines: Spark numbers the rows of a file's splits in file order), and every
rule is stated on positions and counts so that no step needs the whole log in one process:

- a user's (an item's) code is the position of its first row, so the order of first appearance;
- each user's rows are ordered by (timestamp, position): the stable sort;
- of rows with equal (user, item, timestamp) the one at the first position is kept;
- item ids rank items by (-count, first position); user indexes rank users by first position;
- the split ranks users by (``split_keys``' md5 key, user index): ``prepare.SPLIT_RULE``;
- ranks are computed per range partition plus the partition's offset (``_rank``).

Users and items become numbers once, the position of their first row, so every later shuffle
moves numbers, not tokens. Each table of the log's size (the numbered log, the rows after
duplicates, after each filter pass, the sequences) and each token, item and user table is
written as Parquet in a work directory (``_Work``) and read back: computed once, positions
fixed, cut from its lineage, and still there after a kill, so a re-run goes on from the first
unfinished phase; each log-size table is removed as soon as no later phase reads it, so at most
two exist at once. Tables of users or items are also cached, so Spark broadcasts them to joins
where they are small. In ``local[N]``, ``local_settings`` sizes the session to the machine.

The shards are written by the executors with ``shards.write_shard`` into the output directory,
which every executor must be able to write (a local path under ``local[N]``, a shared file system
on a cluster); the driver writes the vocabularies (it holds the item and user tokens) and the
metadata. Reading checks every row and names the file and the record of the first bad one.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tfcroloss.pipelines.data import SPLIT_NAMES, DataError
from tfcroloss.pipelines.data.dataset import write_items, write_metadata, write_users
from tfcroloss.pipelines.data.prepare import (
    NO_RATING_COLUMN,
    PrepareConfig,
    metadata,
    mixed_split_user,
    no_training_user,
    no_user_left,
    settings,
)
from tfcroloss.pipelines.data.readers import COMPRESSIONS, LogPlan, compression_of, plan_log
from tfcroloss.pipelines.data.shards import shard_name, write_index, write_shard
from tfcroloss.pipelines.files import atomic_directory, atomic_write_text, check_writable

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

SPARK_COMPRESSIONS = {"gzip": ".gz", "bz2": ".bz2"}  # what Spark decompresses, found by the ending
_CORRUPT = "_corrupt_record"
WORK_SUFFIX = ".spark-work"  # the default work directory: the output's name with this ending
SHUFFLE_PARTITION_BYTES = 2**28  # of log text per shuffle partition on local[N] (local_settings)
WORK_VERSION = 1  # the layout of the work directory; a work directory of another version starts afresh


def spark_session(master: str | None = None, conf: dict[str, str] | None = None, *, input_bytes: int = 0) -> SparkSession:
    """The active ``SparkSession`` (under ``spark-submit``), or a new one on ``master``
    (``local[*]`` by default) with ``conf``, sized for a log of ``input_bytes`` (``log_bytes``);
    one line saying what to install without Java or pyspark."""
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        raise DataError(
            "--engine spark needs Java 17 or 21 (java on PATH or JAVA_HOME): install a JDK or JRE, "
            "e.g. apt-get install openjdk-17-jre-headless"
        )
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise DataError("--engine spark needs pyspark: pip install 'tfcroloss[spark]'") from None
    active = SparkSession.getActiveSession()
    if active is not None and master is None and not conf:
        return active
    builder = SparkSession.builder.appName("tfcroloss prepare")
    settings = {}
    if master is not None or "PYSPARK_GATEWAY_PORT" not in os.environ:  # not under spark-submit
        master = master or "local[*]"
        builder = builder.master(master)
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # workers import tfcroloss as we do
        if master.startswith("local"):
            settings = local_settings(master, input_bytes)
    for key, value in {**settings, **(conf or {})}.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def local_settings(master: str, input_bytes: int = 0) -> dict[str, str]:
    """Settings for ``local[N]`` (one JVM holds the driver and the executors): half of the
    machine's memory as heap; 4 shuffle partitions per core, or one per 256 MiB of a larger log
    (``input_bytes``), which adaptive execution merges where they are small (it also broadcasts
    small join sides); Kryo, zstd for shuffle files, Arrow. ``--spark-conf`` overrides each."""
    threads = master.partition("[")[2].split(",")[0].rstrip("]")  # local, local[N], local[*], local[N,F]
    cores = 1 if "[" not in master else (os.cpu_count() or 1) if threads == "*" else int(threads)
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "spark.driver.memory": f"{max(1, memory // 2**31)}g",
        # 8 partitions of a 1.1B-line log's 15 GB shuffle spilled 12.8 GB in one stage; 512 for every
        # log made the small-table phases of a 2M-line log 2-7x slower
        "spark.sql.shuffle.partitions": str(max(4 * cores, -(-input_bytes // SHUFFLE_PARTITION_BYTES))),
        "spark.sql.adaptive.enabled": "true",
        "spark.sql.autoBroadcastJoinThreshold": "64m",
        "spark.serializer": "org.apache.spark.serializer.KryoSerializer",
        "spark.io.compression.codec": "zstd",  # shuffle files and spills: less scratch disk than lz4's
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.ui.showConsoleProgress": "false",
    }


def log_bytes(path: str | os.PathLike[str]) -> int:
    """The text size of the log at ``path`` (a file, or a directory of split files), for sizing
    the session: a gzip or bzip2 file counts three times its size; 0 if there is none."""
    path = Path(path)
    files = [p for p in path.iterdir() if p.is_file()] if path.is_dir() else [path] if path.is_file() else []
    return sum(p.stat().st_size * (3 if compression_of(p) in SPARK_COMPRESSIONS else 1) for p in files)


def prepare_spark(
    spark: SparkSession,
    fmt: str,
    input_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    config: PrepareConfig | None = None,
    overwrite: bool = False,
    timings: dict[str, float] | None = None,
    progress: Callable[[str], None] | None = None,
    work_dir: str | os.PathLike[str] | None = None,
    **reader_options: Any,
) -> dict[str, Any]:
    """Prepare ``input_path`` (format ``fmt``) with ``spark`` into ``output``; returns the metadata.

    The tables of the log's size and the token tables are stored as Parquet in ``work_dir``
    (default: ``<output>.spark-work``, beside the output, so on the file system every executor
    sees), each beside a marker holding the counts found on it: the same call after a kill goes
    on from the first unfinished phase. The work directory records what it was made from (the
    input files' sizes and times, the format, reader options and settings); another input or
    setting starts afresh. It is removed once ``output`` is complete, or when the input is refused.

    ``timings``, when given, receives the seconds of each phase (each ends with a Spark action);
    ``progress``, a line as each phase ends (its name and seconds). The tables it caches are
    released when it ends."""
    output = Path(output)
    work = Path(work_dir) if work_dir is not None else output.with_name(output.name + WORK_SUFFIX)
    cached: list[DataFrame] = []
    try:
        meta = _prepare(spark, fmt, input_path, output, work, config or PrepareConfig(), overwrite,
                        _Clock(timings if timings is not None else {}, progress), cached, reader_options)
    except DataError:
        shutil.rmtree(work, ignore_errors=True)
        raise
    finally:
        for frame in cached:
            frame.unpersist()
    shutil.rmtree(work)
    return meta


def _prepare(
    spark: SparkSession,
    fmt: str,
    input_path: str | os.PathLike[str],
    output: Path,
    work_path: Path,
    config: PrepareConfig,
    overwrite: bool,
    clock: _Clock,
    cached: list[DataFrame],
    reader_options: dict[str, Any],
) -> dict[str, Any]:
    from pyspark.sql import functions as F

    if output.exists() and not overwrite:
        left = f" (which goes on from {work_path}, left by an earlier run)" if work_path.exists() else ""
        raise FileExistsError(f"{output} already exists; choose another --output or --overwrite{left}")
    check_writable(output)
    check_writable(work_path)
    plan = plan_log(fmt, input_path, **reader_options)
    if config.min_rating is not None and plan.columns.rating is None:
        raise DataError(NO_RATING_COLUMN)
    sources = [str(path) for path in plan.paths]
    presplit = plan.presplit
    min_user, min_item = config.min_counts(presplit)
    recorded = settings(config, {"format": fmt, **reader_options}, presplit)
    work = _Work(spark, work_path, {
        "version": WORK_VERSION,
        "sources": [[source, path.stat().st_size, path.stat().st_mtime_ns] for source, path in zip(sources, plan.paths, strict=True)],
        "settings": recorded,
    })
    read = {"interactions": work.table("log", lambda: _numbered_log(spark, plan), lambda log: {"rows": _check_rows(log, plan)})["rows"]}

    def log() -> DataFrame:
        return _rows(work.frame("log"), plan)

    # tokens become codes (their first position) once; every later step shuffles numbers only
    for name, column, code in (("users", "user", "u"), ("items", "item", "i")):
        read[name] = work.table(f"{name}_tokens", lambda column=column, code=code: log().groupBy(column).agg(F.min("pos").alias(code)), _count)["rows"]
    user_tokens, item_tokens = (_small(work.frame(f"{name}_tokens"), cached) for name in ("users", "items"))
    clock("read, check and number the rows; first positions")

    def coded() -> DataFrame:
        rows = log()
        if config.min_rating is not None:
            rows = rows.where(F.col("rating") >= config.min_rating)
        rows = rows.join(item_tokens, "item").join(user_tokens, "user")
        if config.drop_duplicates:  # the first position's file is the smallest: positions grow with the file
            # "user" among the keys: the user join's partitioning serves the grouping (no third shuffle)
            rows = rows.groupBy("user", "u", "i", "time").agg(F.min("pos").alias("pos"), F.min("split").alias("split"))
        return rows.select("pos", "u", "i", "time", "split")

    def rated(rows: DataFrame) -> dict[str, int]:
        counts = _count(rows)
        if config.min_rating is not None:
            counts["rated"] = log().where(F.col("rating") >= config.min_rating).count()
        return counts

    stored = work.table("rows", coded, rated)
    work.release("log")
    dropped = {}
    count = read["interactions"]
    if config.min_rating is not None:
        dropped["below_min_rating"] = count - stored["rated"]
        count -= dropped["below_min_rating"]
    dropped["duplicates"] = count - stored["rows"]
    clock("rating filter and duplicates")
    kept_name, count = _frequency_filter(work, "rows", stored["rows"], min_user, min_item, config.iterative_filter)
    dropped["filtered_interactions"] = read["interactions"] - sum(dropped.values()) - count
    clock("user and item filter")
    if count == 0:
        raise no_user_left(read["interactions"], sources, config, presplit)

    def kept() -> DataFrame:
        return work.frame(kept_name)

    num_items = work.table(
        "items", lambda: _rank(kept().groupBy("i").count(), [F.desc("count"), F.asc("i")], "item_id", cached, offset=1).select("i", "item_id"), _count
    )["rows"]
    clock("item ids and user indexes")
    found = work.table("users", lambda: _split(kept(), user_tokens, config, presplit, sources, cached), _split_counts)
    num_users, split_users = found["rows"], {split: users for split, users in found["splits"]}
    clock("split")
    if split_users.get(0, 0) == 0:
        raise no_training_user(num_users, config)

    def sequences() -> DataFrame:
        ordered = F.array_sort(F.collect_list(F.struct("time", "pos", "item_id")))
        return (
            kept().select("u", "i", "time", "pos").repartition("u").join(work.frame("items"), "i")
            .join(work.frame("users"), "u")
            .groupBy("u", "user_index", "split", "rank", "shard")
            .agg(F.transform(ordered, lambda row: row.item_id).alias("items"))
        )

    def sizes(frame: DataFrame) -> dict[str, Any]:
        return {
            "interactions": [list(row) for row in frame.groupBy("split").agg(F.sum(F.size("items"))).collect()],
            "short": frame.where((F.col("split") == 0) & (F.size("items") < config.min_cut + 1)).count(),
        }

    found = work.table("sequences", sequences, sizes)
    work.release(kept_name)
    interactions = dict(found["interactions"])
    work.table(
        "train_counts",
        lambda: work.frame("sequences").where(F.col("split") == 0).select(F.explode("items").alias("item_id")).groupBy("item_id").count(),
        _count,
    )
    item_counts = np.zeros(num_items + 1, np.int64)
    counts = work.frame("train_counts").toArrow()
    item_counts[counts["item_id"].to_numpy()] = counts["count"].to_numpy()
    clock("sequences and counts")
    meta = metadata(
        read=read,
        splits={name: (split_users.get(code, 0), int(interactions.get(code, 0))) for code, name in enumerate(SPLIT_NAMES)},
        num_items=num_items,
        num_users=num_users,
        dropped=dropped,
        train_users_without_cut=found["short"],
        settings=recorded,
        sources=sources,
    )
    with atomic_directory(output, overwrite=overwrite) as tmp:
        for name in SPLIT_NAMES:
            (tmp / name).mkdir()
        entries = _write_shards(work.frame("sequences"), tmp)
        clock("shards (executors)")
        for code, name in enumerate(SPLIT_NAMES):
            write_index(tmp / name, entries.get(code, []))
        items = work.frame("items").join(item_tokens, "i").orderBy("item_id").select(F.col("item").alias("token")).toArrow()["token"]
        write_items(tmp, pa.chunked_array([[""], *items.cast(pa.string()).chunks], pa.string()), item_counts)
        write_users(tmp, work.frame("users").join(user_tokens, "u").orderBy("user_index").select(F.col("user").alias("token")).toArrow()["token"])
        write_metadata(tmp, meta)
    clock("vocabularies and metadata (driver)")
    return meta


def _split(kept: DataFrame, user_tokens: DataFrame, config: PrepareConfig, presplit: bool, sources: list[str],
           cached: list[DataFrame]) -> DataFrame:
    """The kept users: ``u``, ``user_index``, ``split``, ``rank`` (the place in the split) and ``shard``."""
    from pyspark.sql import functions as F

    users = kept.groupBy("u").agg(F.count("*").alias("length"), F.min("split").alias("low"), F.max("split").alias("high"))
    users = _rank(users, [F.asc("u")], "user_index", cached)
    if presplit:
        mixed = users.where(F.col("low") != F.col("high")).orderBy("u").select("u").first()
        if mixed is not None:
            raise mixed_split_user(user_tokens.where(F.col("u") == mixed.u).first().user, sources)
        users = users.withColumn("split", F.col("low"))
    else:
        num_train, num_valid = config.split_sizes(users.count())
        key = F.conv(F.substring(F.md5(F.concat(F.lit(f"{config.seed}:"), "user")), 1, 15), 16, 10).cast("long")
        users = _rank(users.join(user_tokens, "u").withColumn("key", key), [F.asc("key"), F.asc("user_index")], "order", cached)
        users = users.withColumn(
            "split", F.when(F.col("order") < num_train, 0).when(F.col("order") < num_train + num_valid, 1).otherwise(2)
        )
    users = _rank(users.select("u", "user_index", "split"), [F.asc("split"), F.asc("user_index")], "rank", cached)
    lows = [F.lit(x) for row in users.groupBy("split").agg(F.min("rank").alias("low")).collect() for x in row]
    return users.withColumn("rank", F.col("rank") - F.element_at(F.create_map(*lows), F.col("split"))).withColumn(
        "shard", (F.col("rank") / config.users_per_shard).cast("long")
    )


def _count(frame: DataFrame) -> dict[str, int]:
    return {"rows": frame.count()}


def _split_counts(users: DataFrame) -> dict[str, Any]:
    return {"rows": users.count(), "splits": [list(row) for row in users.groupBy("split").count().collect()]}


class _Work:
    """The work directory of one preparation: ``made_from.json`` (what it was made from) and each
    stored table ``NAME/`` (Parquet) beside ``NAME.json``, written once the table is complete and
    kept after the table is released, with the counts found on the table."""

    def __init__(self, spark: SparkSession, path: Path, made_from: dict[str, Any]) -> None:
        self.spark, self.path = spark, path
        made_from = json.loads(json.dumps(made_from, default=str))
        record = path / "made_from.json"
        if path.exists():
            reason = _other_origin(json.loads(record.read_text()) if record.is_file() else None, made_from)
            if reason:
                print(f"{path}: {reason}; starting afresh", file=sys.stderr, flush=True)
                shutil.rmtree(path)
        if not path.exists():
            path.mkdir(parents=True)
            atomic_write_text(record, json.dumps(made_from))

    def table(self, name: str, make: Callable[[], DataFrame], measure: Callable[[DataFrame], dict[str, Any]]) -> dict[str, Any]:
        """The counts ``measure`` found on table ``name``; the table is made and stored first unless
        a finished one is there."""
        marker = self.path / f"{name}.json"
        if marker.is_file():
            return json.loads(marker.read_text())
        shutil.rmtree(self.path / name, ignore_errors=True)
        make().write.option("compression", "zstd").parquet(str(self.path / name))  # smaller than snappy's
        counts = measure(self.frame(name))
        atomic_write_text(marker, json.dumps(counts))  # synced: a marker outlives a lost machine
        return counts

    def frame(self, name: str) -> DataFrame:
        return self.spark.read.parquet(str(self.path / name))

    def release(self, name: str) -> None:
        """Removes table ``name`` (its marker stays): no later phase reads it."""
        shutil.rmtree(self.path / name, ignore_errors=True)


def _other_origin(old: dict[str, Any] | None, new: dict[str, Any]) -> str | None:
    """Why a work directory made from ``old`` cannot go on for ``new``, or None."""
    if old is None:
        return "no record of what it was made from"
    if old.get("version") != new["version"]:
        return f"made by work directory version {old.get('version')}, this engine writes {new['version']}"
    if old.get("sources") != new["sources"]:
        changed = [entry[0] for entry in new["sources"] if entry not in old.get("sources", [])]
        return f"made from other input ({', '.join(changed) or 'other files'}: another size or time)"
    changed = {key for key in {*old["settings"], *new["settings"]} if old["settings"].get(key) != new["settings"].get(key)}
    if changed:
        return "made with other settings (" + ", ".join(
            f"{key}: {old['settings'].get(key)!r} -> {new['settings'].get(key)!r}" for key in sorted(changed)) + ")"
    return None


class _Clock:
    """Records the seconds since the previous call under each phase's name (and tells ``progress``)."""

    def __init__(self, timings: dict[str, float], progress: Callable[[str], None] | None = None) -> None:
        self.timings, self.progress, self.last = timings, progress, time.perf_counter()

    def __call__(self, phase: str) -> None:
        now = time.perf_counter()
        self.timings[phase] = round(now - self.last, 2)
        self.last = now
        if self.progress is not None:
            self.progress(f"{phase}: {self.timings[phase]:.1f} s")


def _numbered_log(spark: SparkSession, plan: LogPlan) -> DataFrame:
    """The log's rows as read: ``pos`` (position in the log), ``split`` (the file's index), the
    id and number columns, ``_problem`` (what is wrong with the row, or null) and, for bad rows
    only, the texts that name them."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    columns = plan.columns
    frames = []
    for index, path in enumerate(plan.paths):
        compression = compression_of(path)
        if compression is not None and not path.name.lower().endswith(SPARK_COMPRESSIONS.get(compression, "?")):
            allowed = ", ".join(f"{name} named *{ending}" for name, ending in SPARK_COMPRESSIONS.items())
            raise DataError(
                f"{path}: {compression}-compressed; --engine spark reads {allowed} "
                f"(Spark picks the codec by the ending; endings known to the numpy engine: "
                f"{', '.join(e for _, endings in COMPRESSIONS.values() for e in endings)})"
            )
        if plan.delimiter is None:
            frame = spark.read.parquet(str(path))
            missing = [name for name in columns.wanted if name not in frame.columns]
            if missing:
                raise DataError(f"{path}: missing column {', '.join(map(repr, missing))}; the file has: {', '.join(frame.columns)}")
            frame = frame.withColumn(_CORRUPT, F.lit(None).cast("string"))
            numbers = {name: _number(frame.schema[name].dataType, name, path) for name in columns.numeric}
            frame = frame.select(
                *(F.col(name).cast("string").alias(name) for name in (columns.user, columns.item)),
                *(number.alias(name) for name, number in numbers.items()), _CORRUPT,
            )
        else:
            names = plan.names(index)
            schema = T.StructType([T.StructField(name, T.StringType()) for name in [*names, _CORRUPT]])
            frame = spark.read.csv(
                str(path), schema=schema, sep=plan.delimiter, header=isinstance(plan.header, str),
                quote='"' if plan.quote else "", escape='"', encoding=plan.encoding,
                mode="PERMISSIVE", columnNameOfCorruptRecord=_CORRUPT,
            )
            frame = frame.select(
                *(F.col(name) for name in (columns.user, columns.item)),
                *(F.col(name).try_cast("double").alias(name) for name in columns.numeric),
                *(F.col(name).alias(f"_text_{name}") for name in columns.numeric), _CORRUPT,
            )
        frames.append(frame.withColumn("split", F.lit(index)))
    raw = frames[0]
    for frame in frames[1:]:
        raw = raw.unionByName(frame, allowMissingColumns=True)
    raw = raw.withColumn("pos", F.monotonically_increasing_id()).withColumn("_problem", _problem(plan))
    details = [_CORRUPT, *(name for name in raw.columns if name.startswith("_text_"))]  # kept for bad rows only
    return raw.select(
        "pos", "split", columns.user, columns.item, *columns.numeric, "_problem",
        *(F.when(F.col("_problem").isNotNull(), F.col(name)).alias(name) for name in details),
    )


def _rows(log: DataFrame, plan: LogPlan) -> DataFrame:
    """The checked log's ``pos``, ``user``, ``item``, ``time`` (the position without timestamps),
    ``split`` (the file's for a train/valid/test set, else 0) and ``rating`` when read."""
    from pyspark.sql import functions as F

    columns = plan.columns
    time = F.col(columns.time) if columns.time else F.col("pos").cast("double")
    split = (F.col("split") if plan.presplit else F.lit(0)).cast("byte")
    return log.select(
        "pos", F.col(columns.user).alias("user"), F.col(columns.item).alias("item"), time.alias("time"),
        split.alias("split"),
        *([F.col(columns.rating).alias("rating")] if columns.rating else []),
    )


def _number(data_type: Any, name: str, path: Path) -> Column:
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    if isinstance(data_type, T.TimestampType | T.TimestampNTZType):
        return F.unix_micros(F.col(name).cast("timestamp")).cast("double")
    if isinstance(data_type, T.DateType):
        return F.unix_date(F.col(name)).cast("double")
    if isinstance(data_type, T.NumericType):
        return F.col(name).cast("double")
    raise DataError(f"{path}: field {name!r} must be numeric or a timestamp, got type {data_type.simpleString()}")


def _problem(plan: LogPlan) -> Column:
    """What is wrong with a row, or null: a wrong field count, a null or empty id or one holding
    a line break, a number that is not a finite number."""
    from pyspark.sql import functions as F

    columns = plan.columns
    problems = [(F.col(_CORRUPT).isNotNull(), "wrong_fields")]
    for name in (columns.user, columns.item):
        value = F.col(name)
        problems.append((value.isNull() | (value == "") | value.contains("\n") | value.contains("\r"), f"id:{name}"))
    for name in columns.numeric:
        value = F.col(name)
        problems.append((value.isNull() | F.isnan(value) | (F.abs(value) == float("inf")), f"number:{name}"))
    return F.coalesce(*(F.when(condition, F.lit(label)) for condition, label in problems))


def _check_rows(raw: DataFrame, plan: LogPlan) -> int:
    """Refuses the first bad row (by position) and an empty file; the number of rows."""
    from pyspark.sql import functions as F

    files = raw.groupBy("split").agg(
        F.count("*").alias("rows"), F.min(F.when(F.col("_problem").isNotNull(), F.col("pos"))).alias("bad")
    ).collect()
    bad = [row.bad for row in files if row.bad is not None]
    if bad:
        raise _bad_row(raw.where(F.col("pos") == min(bad)).first().asDict(), plan)
    present = {row.split for row in files}
    for index, path in enumerate(plan.paths):
        if index not in present and (plan.presplit or len(plan.paths) == 1):
            raise DataError(f"{path}: empty file, no interactions")
    if not present:  # a log in parts: some may be empty, not all
        raise DataError(f"{plan.paths[0].parent}: {len(plan.paths)} empty files, no interactions")
    return sum(row.rows for row in files)


def _bad_row(row: dict[str, Any], plan: LogPlan) -> DataError:
    path = plan.paths[row["split"]]
    kind, _, name = row["_problem"].partition(":")
    if kind == "wrong_fields":
        names = plan.names(row["split"])
        return DataError(f"{path}, record {row[_CORRUPT]!r}: expected {len(names)} fields ({', '.join(names)})")
    record = f"{path}, record of {plan.columns.user} {row[plan.columns.user]!r}"
    if kind == "id":
        return DataError(f"{record}: field {name!r} must be a non-empty id without line breaks, got {row[name] or ''!r}")
    text = row.get(f"_text_{name}")
    if text is not None and row[name] is None:
        return DataError(f"{record}: field {name!r} must be a number, got {text!r}")
    if row[name] is None:
        return DataError(f"{path}, row of {plan.columns.user} {row[plan.columns.user]!r}: field {name!r} is null")
    return DataError(f"{record}: field {name!r} must be a finite number, got {text if text is not None else row[name]!r}")


def _frequency_filter(work: _Work, source: str, count: int, min_user: int, min_item: int, iterative: bool) -> tuple[str, int]:
    """The stored table (``kept-N``) of the rows of ``source`` whose user and item both have
    enough rows (counted on the same rows), repeated until nothing changes when ``iterative``;
    and how many rows it holds. Each pass releases the table it read."""
    number = 0
    while True:  # until a pass keeps every row, or once
        number += 1
        name, sets = f"kept-{number}", []
        kept = work.table(name, functools.partial(_filter_pass, work, source, min_user, min_item, sets), _count)["rows"]
        for frame in sets:
            frame.unpersist()
        work.release(source)
        if not iterative or kept == count:
            return name, kept
        source, count = name, kept


def _filter_pass(work: _Work, source: str, min_user: int, min_item: int, sets: list[DataFrame]) -> DataFrame:
    """The rows of ``source`` whose user and item both have enough rows in it."""
    from pyspark.sql import functions as F

    rows = work.frame(source)
    users = _small(rows.groupBy("u").count().where(F.col("count") >= min_user).select("u"), sets)
    items = _small(rows.groupBy("i").count().where(F.col("count") >= min_item).select("i"), sets)
    return rows.join(users, "u", "left_semi").join(items, "i", "left_semi")


def _rank(frame: DataFrame, order: list[Column], name: str, cached: list[DataFrame], *, offset: int = 0) -> DataFrame:
    """``frame`` with ``name``: each row's place in ``order`` (keys unique) plus ``offset``. The
    sorted rows are numbered in their range partition (``monotonically_increasing_id``: the
    partition in the upper 31 bits, the row in the lower 33), plus the sizes of the partitions before."""
    from pyspark.sql import functions as F

    ranked = _small(frame.orderBy(*order).withColumn("_id", F.monotonically_increasing_id()), cached)
    part = F.shiftright("_id", 33)
    sizes = sorted(tuple(row) for row in ranked.groupBy(part.alias("_part")).count().collect())
    starts, total = [], offset
    for index, size in sizes:
        starts += [F.lit(index), F.lit(total)]
        total += size
    start = F.element_at(F.create_map(*starts), part) if starts else F.lit(offset)
    return ranked.withColumn(name, start + F.col("_id") - F.shiftleft(part, 33)).drop("_id")


def _small(frame: DataFrame, cached: list[DataFrame]) -> DataFrame:
    """``frame`` (a table of users or items) computed once and cached (added to ``cached``, to
    release): its measured size lets Spark broadcast it to joins where it is small enough."""
    frame = frame.persist()
    cached.append(frame)
    frame.count()
    return frame


def _write_shards(sequences: DataFrame, directory: Path) -> dict[int, list[dict[str, Any]]]:
    """Each executor writes the shards of its (split, shard) groups; their entries, by split."""
    root = str(directory)

    def write(table: pa.Table) -> pa.Table:
        table = table.sort_by("rank")
        split, shard = table["split"][0].as_py(), table["shard"][0].as_py()
        items = table["items"].combine_chunks()
        entry = write_shard(
            Path(root) / SPLIT_NAMES[split] / shard_name(shard),
            table["user_index"].to_numpy(),
            pc.list_value_length(items).to_numpy().astype(np.int32),
            items.flatten().to_numpy().astype(np.int32),
        )
        return pa.table({"split": [split], "shard": [shard], "entry": [json.dumps(entry)]})

    rows = sequences.groupBy("split", "shard").applyInArrow(write, "split long, shard long, entry string").collect()
    entries: dict[int, list[dict[str, Any]]] = {}
    for row in sorted(rows, key=lambda row: (row.split, row.shard)):
        entries.setdefault(row.split, []).append(json.loads(row.entry))
    return entries
