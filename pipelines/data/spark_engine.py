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
moves numbers, not tokens. Tables of the log's size are local checkpoints (computed once,
positions and partitions fixed, cut from their lineage); tables of users or items are cached,
so Spark knows their size and broadcasts them to joins where they are small. In ``local[N]``,
``local_settings`` sizes the session to the machine.

The shards are written by the executors with ``shards.write_shard`` into the output directory,
which every executor must be able to write (a local path under ``local[N]``, a shared file system
on a cluster); the driver writes the vocabularies (it holds the item and user tokens) and the
metadata. Reading checks every row and names the file and the record of the first bad one.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
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
from tfcroloss.pipelines.files import atomic_directory, check_writable

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

SPARK_COMPRESSIONS = {"gzip": ".gz", "bz2": ".bz2"}  # what Spark decompresses, found by the ending
_CORRUPT = "_corrupt_record"


def spark_session(master: str | None = None, conf: dict[str, str] | None = None) -> SparkSession:
    """The active ``SparkSession`` (under ``spark-submit``), or a new one on ``master``
    (``local[*]`` by default) with ``conf``; one line saying what to install without Java or pyspark."""
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
            settings = local_settings(master)
    for key, value in {**settings, **(conf or {})}.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def local_settings(master: str) -> dict[str, str]:
    """Settings for ``local[N]`` (one JVM holds the driver and the executors): half of the
    machine's memory as heap, a few shuffle partitions per core (adaptive execution merges small
    ones and broadcasts small join sides), Kryo, Arrow. ``--spark-conf`` overrides each."""
    threads = master.partition("[")[2].split(",")[0].rstrip("]")  # local, local[N], local[*], local[N,F]
    cores = 1 if "[" not in master else (os.cpu_count() or 1) if threads == "*" else int(threads)
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "spark.driver.memory": f"{max(1, memory // 2**31)}g",
        "spark.sql.shuffle.partitions": str(4 * cores),
        "spark.sql.adaptive.enabled": "true",
        "spark.sql.autoBroadcastJoinThreshold": "64m",
        "spark.serializer": "org.apache.spark.serializer.KryoSerializer",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.ui.showConsoleProgress": "false",
    }


def prepare_spark(
    spark: SparkSession,
    fmt: str,
    input_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    config: PrepareConfig | None = None,
    overwrite: bool = False,
    timings: dict[str, float] | None = None,
    **reader_options: Any,
) -> dict[str, Any]:
    """Prepare ``input_path`` (format ``fmt``) with ``spark`` into ``output``; returns the metadata.

    ``timings``, when given, receives the seconds of each phase (each ends with a Spark action);
    the tables it caches are released when it ends."""
    cached: list[DataFrame] = []
    try:
        return _prepare(spark, fmt, input_path, output, config or PrepareConfig(), overwrite,
                        _Clock(timings if timings is not None else {}), cached, reader_options)
    finally:
        for frame in cached:
            frame.unpersist()


def _prepare(
    spark: SparkSession,
    fmt: str,
    input_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    config: PrepareConfig,
    overwrite: bool,
    clock: _Clock,
    cached: list[DataFrame],
    reader_options: dict[str, Any],
) -> dict[str, Any]:
    from pyspark.sql import functions as F

    output = Path(output)
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} already exists; choose another --output or --overwrite")
    check_writable(output)
    plan = plan_log(fmt, input_path, **reader_options)
    if config.min_rating is not None and plan.columns.rating is None:
        raise DataError(NO_RATING_COLUMN)
    sources = [str(path) for path in plan.paths]
    presplit = len(plan.paths) > 1
    min_user, min_item = config.min_counts(presplit)
    raw, count = _read(spark, plan)
    # tokens become codes (their first position) once; every later step shuffles numbers only
    user_tokens = _small(raw.groupBy("user").agg(F.min("pos").alias("u")), cached)
    item_tokens = _small(raw.groupBy("item").agg(F.min("pos").alias("i")), cached)
    read = {"interactions": count, "users": user_tokens.count(), "items": item_tokens.count()}
    clock("read, check and number the rows; first positions")
    dropped = {}
    rows = raw
    if config.min_rating is not None:
        rows = rows.where(F.col("rating") >= config.min_rating)
        dropped["below_min_rating"] = count - rows.count()
        count -= dropped["below_min_rating"]
    rows = rows.join(user_tokens, "user").join(item_tokens, "item").select("pos", "u", "i", "time", "split")
    if config.drop_duplicates:  # the first position's file is the smallest: positions grow with the file
        rows = rows.groupBy("u", "i", "time").agg(F.min("pos").alias("pos"), F.min("split").alias("split"))
    rows = rows.localCheckpoint()
    dropped["duplicates"] = count - rows.count()
    clock("rating filter and duplicates")
    kept, count = _frequency_filter(rows, count - dropped["duplicates"], min_user, min_item, config.iterative_filter)
    dropped["filtered_interactions"] = read["interactions"] - sum(dropped.values()) - count
    clock("user and item filter")
    if count == 0:
        raise no_user_left(read["interactions"], sources, config, presplit)

    items = _rank(kept.groupBy("i").count(), [F.desc("count"), F.asc("i")], "item_id", cached, offset=1)
    users = kept.groupBy("u").agg(F.count("*").alias("length"), F.min("split").alias("low"), F.max("split").alias("high"))
    users = _rank(users, [F.asc("u")], "user_index", cached)
    num_users = users.count()
    clock("item ids and user indexes")
    if presplit:
        mixed = users.where(F.col("low") != F.col("high")).orderBy("u").select("u").first()
        if mixed is not None:
            raise mixed_split_user(user_tokens.where(F.col("u") == mixed.u).first().user, sources)
        users = users.withColumn("split", F.col("low"))
    else:
        num_train, num_valid = config.split_sizes(num_users)
        key = F.conv(F.substring(F.md5(F.concat(F.lit(f"{config.seed}:"), "user")), 1, 15), 16, 10).cast("long")
        users = _rank(users.join(user_tokens, "u").withColumn("key", key), [F.asc("key"), F.asc("user_index")], "order", cached)
        users = users.withColumn(
            "split", F.when(F.col("order") < num_train, 0).when(F.col("order") < num_train + num_valid, 1).otherwise(2)
        )
    users = _rank(users.select("u", "user_index", "split"), [F.asc("split"), F.asc("user_index")], "rank", cached)
    split_users = {
        row.split: (row.users, row.low)
        for row in users.groupBy("split").agg(F.count("*").alias("users"), F.min("rank").alias("low")).collect()
    }
    clock("split")
    if split_users.get(0, (0, 0))[0] == 0:
        raise no_training_user(num_users, config)
    users = users.withColumn(
        "rank", F.col("rank") - F.element_at(F.create_map(*[F.lit(x) for s, (_, low) in split_users.items() for x in (s, low)]), F.col("split"))
    ).withColumn("shard", (F.col("rank") / config.users_per_shard).cast("long"))

    ordered = F.array_sort(F.collect_list(F.struct("time", "pos", "item_id")))
    sequences = (
        kept.select("u", "i", "time", "pos").repartition("u").join(items.select("i", "item_id"), "i")
        .join(users.select("u", "user_index", "split", "rank", "shard"), "u")
        .groupBy("u", "user_index", "split", "rank", "shard")
        .agg(F.transform(ordered, lambda row: row.item_id).alias("items"))
        .localCheckpoint()
    )
    interactions = dict(sequences.groupBy("split").agg(F.sum(F.size("items"))).collect())
    item_counts = np.zeros(int(items.count()) + 1, np.int64)
    train_counts = sequences.where(F.col("split") == 0).select(F.explode("items").alias("item_id")).groupBy("item_id").count()
    counts = train_counts.toArrow()
    item_counts[counts["item_id"].to_numpy()] = counts["count"].to_numpy()
    short = sequences.where((F.col("split") == 0) & (F.size("items") < config.min_cut + 1)).count()
    clock("sequences and counts")
    meta = metadata(
        read=read,
        splits={name: (split_users.get(code, (0, 0))[0], int(interactions.get(code, 0))) for code, name in enumerate(SPLIT_NAMES)},
        num_items=item_counts.size - 1,
        num_users=num_users,
        dropped=dropped,
        train_users_without_cut=short,
        settings=settings(config, {"format": fmt, **reader_options}, presplit),
        sources=sources,
    )
    with atomic_directory(output, overwrite=overwrite) as tmp:
        for name in SPLIT_NAMES:
            (tmp / name).mkdir()
        entries = _write_shards(sequences, tmp)
        clock("shards (executors)")
        for code, name in enumerate(SPLIT_NAMES):
            write_index(tmp / name, entries.get(code, []))
        item_vocabulary = items.join(item_tokens, "i").orderBy("item_id").select(F.col("item").alias("token")).toArrow()["token"]
        write_items(tmp, pa.chunked_array([[""], *item_vocabulary.cast(pa.string()).chunks], pa.string()), item_counts)
        write_users(tmp, users.join(user_tokens, "u").orderBy("user_index").select(F.col("user").alias("token")).toArrow()["token"])
        write_metadata(tmp, meta)
    clock("vocabularies and metadata (driver)")
    return meta


class _Clock:
    """Records the seconds since the previous call under each phase's name."""

    def __init__(self, timings: dict[str, float]) -> None:
        self.timings, self.last = timings, time.perf_counter()

    def __call__(self, phase: str) -> None:
        now = time.perf_counter()
        self.timings[phase] = round(now - self.last, 2)
        self.last = now


def _read(spark: SparkSession, plan: LogPlan) -> tuple[DataFrame, int]:
    """The log's rows: ``pos`` (position in the log), ``user``, ``item``, ``time``, ``split`` (the
    file's index) and ``rating`` when read, and their number; the first bad row is refused with
    its file and record."""
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
        frames.append(frame.withColumn("split", F.lit(index).cast("byte")))
    raw = frames[0]
    for frame in frames[1:]:
        raw = raw.unionByName(frame, allowMissingColumns=True)
    raw = raw.withColumn("pos", F.monotonically_increasing_id()).withColumn("_problem", _problem(plan))
    details = [_CORRUPT, *(name for name in raw.columns if name.startswith("_text_"))]  # kept for bad rows only
    raw = raw.select(
        "pos", "split", columns.user, columns.item, *columns.numeric, "_problem",
        *(F.when(F.col("_problem").isNotNull(), F.col(name)).alias(name) for name in details),
    ).localCheckpoint()  # positions fixed once
    count = _check_rows(raw, plan)
    time = F.col(columns.time) if columns.time else F.col("pos").cast("double")
    rows = raw.select(
        "pos", F.col(columns.user).alias("user"), F.col(columns.item).alias("item"), time.alias("time"), "split",
        *([F.col(columns.rating).alias("rating")] if columns.rating else []),
    )
    return rows, count


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
        if index not in present:
            raise DataError(f"{path}: empty file, no interactions")
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


def _frequency_filter(rows: DataFrame, count: int, min_user: int, min_item: int, iterative: bool) -> tuple[DataFrame, int]:
    """The rows whose user and item both have enough rows (counted on the same rows), repeated
    until nothing changes when ``iterative``; and how many are left."""
    from pyspark.sql import functions as F

    while True:
        sets: list[DataFrame] = []
        users = _small(rows.groupBy("u").count().where(F.col("count") >= min_user).select("u"), sets)
        items = _small(rows.groupBy("i").count().where(F.col("count") >= min_item).select("i"), sets)
        kept = rows.join(users, "u", "left_semi").join(items, "i", "left_semi").localCheckpoint()
        kept_count = kept.count()
        for frame in sets:
            frame.unpersist()
        if not iterative or kept_count == count:
            return kept, kept_count
        rows, count = kept, kept_count


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
