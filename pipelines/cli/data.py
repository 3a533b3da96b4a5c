"""CLI: ``tfcroloss prepare`` and ``tfcroloss data {synthetic,download,info}``."""

from __future__ import annotations

import argparse
import json

from tfcroloss.pipelines.cli import positive_int
from tfcroloss.pipelines.data import ENGINES, FORMATS, SYNTHETIC_FORMATS
from tfcroloss.pipelines.data.download import MANUAL_SOURCES, SOURCES, download
from tfcroloss.pipelines.data.synthetic_presets import PRESETS


def spark_setting(entry: str) -> tuple[str, str]:
    """A ``--spark-conf`` entry, ``KEY=VALUE``, as ``(key, value)``."""
    key, equals, value = entry.partition("=")
    if not equals or not key.strip():
        raise argparse.ArgumentTypeError(f"--spark-conf takes KEY=VALUE, got {entry!r}")
    return key.strip(), value


def file_system_path(entry: str) -> str:
    """A path of a file system (``file:///path`` is ``/path``), refused in one line when it is
    another URL (``gs://``, ``s3a://``, ``hdfs://``): read as a path it would be a local folder
    named after the scheme."""
    scheme, separator, rest = entry.partition("://")
    if separator and scheme == "file":
        return rest
    if separator and scheme.isalnum() and len(scheme) > 1:
        raise argparse.ArgumentTypeError(
            f"{entry}: a URL ({scheme}://); prepare reads and writes paths of a file system that this process, and "
            "under Spark every executor, sees: mount the bucket or HDFS there (gcsfuse, s3fs, an HDFS NFS gateway) or copy the log")
    return entry


def register(subparsers: argparse._SubParsersAction) -> None:
    prepare = subparsers.add_parser(
        "prepare",
        help="prepare a raw interaction log with the ComiRec protocol",
        description="Filter, index and split an interaction log into a prepared data set.",
    )
    prepare.add_argument("--format", required=True, choices=FORMATS, dest="fmt")
    prepare.add_argument(
        "--input",
        required=True,
        type=file_system_path,
        help="log file (may be .gz/.bz2/.xz/.zst), or a directory holding a train/valid/test set "
        "(kept as the split), the format's files, or one log in parts (Spark's part-* files, read in name order)",
    )
    prepare.add_argument("--output", required=True, type=file_system_path, help="directory of the prepared data set")
    prepare.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    engine = prepare.add_argument_group("engine (both write the same prepared data set)")
    engine.add_argument(
        "--engine", choices=ENGINES, default="numpy",
        help="numpy: in this process, the log in memory; spark: a Spark job (needs Java and pyspark)",
    )
    engine.add_argument(
        "--spark-master",
        help="Spark master URL (default: local[*], or spark-submit's master when run by spark-submit)",
    )
    engine.add_argument(
        "--spark-conf", action="append", default=[], metavar="KEY=VALUE", type=spark_setting,
        help="a Spark setting, e.g. spark.driver.memory=8g (repeatable)",
    )
    prepare.add_argument(
        "--users-per-shard", type=positive_int,
        help="users per Parquet shard of a split (default 65536); training gives each input worker its own shards",
    )
    columns = prepare.add_argument_group("columns (csv and recbole formats)")
    columns.add_argument("--user-column", help="default: user_id")
    columns.add_argument("--item-column", help="default: item_id")
    columns.add_argument(
        "--time-column",
        help="default: timestamp; 'none' for a log without timestamps (the order of the lines is "
        "then the order of events)",
    )
    columns.add_argument("--rating-column", help="read ratings from this column")
    columns.add_argument(
        "--delimiter",
        help="default: tab for .tsv/.tab files, else sniffed from the header (',', tab, ';', '|'); "
        "'tab' or '\\t' for a tab",
    )
    prepare.add_argument(
        "--encoding", help="text encoding of the input (default utf-8; e.g. latin-1, cp1252)"
    )
    protocol = prepare.add_argument_group("protocol (defaults as the paper)")
    protocol.add_argument("--min-rating", type=float, help="keep rating >= this (default: all)")
    protocol.add_argument(
        "--min-user-count",
        type=int,
        help="drop users with fewer interactions (default: 5; 0 for ComiRec split files)",
    )
    protocol.add_argument(
        "--min-item-count",
        type=int,
        help="drop items with fewer interactions (default: 5; 0 for ComiRec split files)",
    )
    protocol.add_argument(
        "--iterative-filter", action="store_true", help="repeat the filter until nothing changes"
    )
    protocol.add_argument(
        "--keep-duplicates",
        action="store_true",
        help="keep repeated (user, item, timestamp) rows (default: keep the first only)",
    )
    protocol.add_argument("--train-fraction", type=float, default=0.8)
    protocol.add_argument("--valid-fraction", type=float, default=0.1)
    protocol.add_argument("--seed", type=int, help="seed of the user split (default: the authors' seed, 1230)")
    prepare.set_defaults(func=run_prepare)

    data = subparsers.add_parser("data", help="synthetic logs, downloads, data set info")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    synthetic = data_commands.add_parser("synthetic", help="write a synthetic interaction log")
    synthetic.add_argument("--preset", default="demo", choices=list(PRESETS))
    synthetic.add_argument("--output", required=True, help="file to write")
    synthetic.add_argument("--seed", type=int, default=0)
    synthetic.add_argument("--format", default="comirec", choices=SYNTHETIC_FORMATS, dest="fmt")
    synthetic.set_defaults(func=run_synthetic)

    fetch = data_commands.add_parser("download", help="download a public data set")
    fetch.add_argument("name", choices=[*SOURCES, *MANUAL_SOURCES])
    fetch.add_argument("--output", required=True, help="directory to download into")
    fetch.add_argument("--url", help="alternative address, e.g. file:///path/ml-1m.zip")
    fetch.set_defaults(func=run_download)

    info = data_commands.add_parser("info", help="print a prepared data set's metadata")
    info.add_argument("path")
    info.set_defaults(func=run_info)


def run_prepare(args: argparse.Namespace) -> int:
    from tfcroloss.pipelines.data.prepare import PrepareConfig, prepare_file

    seed = {} if args.seed is None else {"seed": args.seed}
    if args.users_per_shard is not None:
        seed["users_per_shard"] = args.users_per_shard
    config = PrepareConfig(
        min_user_count=args.min_user_count,
        min_item_count=args.min_item_count,
        iterative_filter=args.iterative_filter,
        min_rating=args.min_rating,
        drop_duplicates=not args.keep_duplicates,
        train_fraction=args.train_fraction,
        valid_fraction=args.valid_fraction,
        **seed,
    )
    options = {
        "user_column": args.user_column,
        "item_column": args.item_column,
        "time_column": args.time_column,
        "rating_column": args.rating_column,
        "delimiter": args.delimiter,
        "encoding": args.encoding,
    }
    options = {key: value for key, value in options.items() if value is not None}  # given ones only
    if options.get("delimiter") in ("tab", "\\t"):
        options["delimiter"] = "\t"
    if options.get("time_column", "").lower() == "none":
        options["time_column"] = None
    if args.engine == "spark":
        from tfcroloss.pipelines.data.spark_engine import log_bytes, prepare_spark, spark_session

        spark = spark_session(args.spark_master, dict(args.spark_conf), input_bytes=log_bytes(args.input))
        meta = prepare_spark(spark, args.fmt, args.input, args.output, config=config, overwrite=args.overwrite,
                             progress=lambda line: print(f"spark: {line}", flush=True), **options)
    else:
        meta = prepare_file(args.fmt, args.input, args.output, config=config, overwrite=args.overwrite, **options).metadata
    read, dropped = meta["read"], meta["dropped"]
    print(f"prepared {args.output}")
    print(
        f"  users:        {meta['num_users']:>12,} kept {dropped['users']:>12,} dropped "
        f"(of {read['users']:,})"
    )
    print(
        f"  items:        {meta['num_items']:>12,} kept {dropped['items']:>12,} dropped "
        f"(of {read['items']:,})"
    )
    dropped_rows = sum(v for k, v in dropped.items() if k not in ("users", "items"))
    details = ", ".join(f"{k} {v:,}" for k, v in dropped.items() if k not in ("users", "items"))
    print(
        f"  interactions: {meta['num_interactions']:>12,} kept {dropped_rows:>12,} dropped "
        f"(of {read['interactions']:,}: {details})"
    )
    for name, counts in meta["splits"].items():
        print(
            f"  {name + ':':<13} {counts['users']:>12,} users {counts['interactions']:>12,} interactions"
        )
    return 0


def run_synthetic(args: argparse.Namespace) -> int:
    from tfcroloss.pipelines.data.synthetic import write_synthetic

    count = write_synthetic(args.output, args.preset, seed=args.seed, fmt=args.fmt)
    print(f"wrote {count:,} interactions ({args.preset}, seed {args.seed}) to {args.output}")
    return 0


def run_download(args: argparse.Namespace) -> int:
    path, fmt = download(args.name, args.output, url=args.url)
    print(f"{path}\nnext: tfcroloss prepare --format {fmt} --input {path} --output DIR")
    return 0


def run_info(args: argparse.Namespace) -> int:
    from tfcroloss.pipelines.data.dataset import read_metadata

    print(json.dumps(read_metadata(args.path), indent=2))
    return 0
