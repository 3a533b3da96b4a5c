"""`tfcroloss export`, `tfcroloss index`, `tfcroloss recommend` and `tfcroloss serve`."""

from __future__ import annotations

import argparse
import json
import socket
from pathlib import Path

from tfcroloss.pipelines.cli import CommandError, int_in, positive_int
from tfcroloss.pipelines.retrieval.scann import SCORINGS
from tfcroloss.pipelines.serving import INDEX_CHOICES
from tfcroloss.pipelines.serving.limits import Limits


def _export(args: argparse.Namespace) -> int:
    from tfcroloss.pipelines.publish import export_run

    print(export_run(args.run, args.output, version=args.version))
    return 0


def _index(args: argparse.Namespace) -> int:
    from tfcroloss.pipelines.serving.index import build_version_index

    overrides = {
        "num_leaves": args.num_leaves,
        "num_leaves_to_search": args.leaves_to_search,
        "reorder": args.reorder,
        "partition": args.partition,
        "scoring": args.scoring,
    }
    record = build_version_index(
        args.model,
        k=args.k,
        sample_queries=args.sample_queries,
        overwrite=args.overwrite,
        **{key: value for key, value in overrides.items() if value is not None},
    )
    print(json.dumps(record, indent=2))
    return 0


def _recommend(args: argparse.Namespace) -> int:
    from tfcroloss.pipelines.serving.retriever import Retriever

    history = [token.strip() for token in args.history.split(",") if token.strip()]
    retriever = Retriever.load(args.model, index=args.index)
    result = retriever.recommend(history, k=args.k, exclude_history=not args.include_history)
    print(json.dumps({
        "model_version": retriever.version,
        "items": [{"id": i, "score": round(s, 6)} for i, s in zip(result.item_ids, result.scores, strict=True)],
        "unknown_ids": result.unknown_ids,
    }, indent=2))
    return 0


def _check_address(host: str, port: int) -> None:
    """Refuses an address the service could not listen on (a port in use, a host not of this
    machine) before anything is loaded; port 0 takes a free port, which uvicorn's log names."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as error:
            raise CommandError(
                f"cannot listen on {host} port {port}: {error.strerror}; choose another --port or --host"
            ) from None


def _serve(args: argparse.Namespace) -> int:
    _check_address(args.host, args.port)
    import tensorflow as tf
    import uvicorn

    # Lookups are batches of a few histories: one TensorFlow thread runs the user tower faster
    # than a pool. At least two inter-op threads, though: loading a new version runs long kernels
    # (its id table's initialisation) that, on a single inter-op thread, held up every lookup of
    # the version served (docs/serving.md, "How lookups run").
    try:
        tf.config.threading.set_intra_op_parallelism_threads(args.tf_threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.tf_threads and max(2, args.tf_threads))
    except RuntimeError:  # TensorFlow already started in this process: its pools stay
        pass
    from tfcroloss.pipelines.serving.app import create_app

    limits = Limits(
        max_history=args.max_history,
        max_batch=args.max_batch,
        max_id_length=args.max_id_length,
        max_body_bytes=args.max_body_bytes,
        max_queue=args.max_queue,
        batch_rows=args.batch_rows,
        batch_delay_ms=args.batch_delay_ms,
    )
    app = create_app(args.model, poll_seconds=args.poll_seconds, model_name=args.model_name, limits=limits)
    # "auto" takes uvloop and httptools when installed (setup.cfg installs them).
    uvicorn.run(
        app, host=args.host, port=args.port, log_level=args.log_level, access_log=args.access_log,
        loop="auto", http="auto", backlog=4096,
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    export = subparsers.add_parser("export", help="export a trained run as a versioned SavedModel for serving")
    export.add_argument("--run", required=True, type=Path, help="run directory written by `tfcroloss train`")
    export.add_argument("--output", required=True, type=Path, help="model directory, e.g. saved_models/NAME")
    export.add_argument("--version", type=int, help="version number (default: latest + 1)")
    export.set_defaults(func=_export)

    index = subparsers.add_parser("index", help="build the ScaNN index of an exported version")
    index.add_argument("--model", required=True, type=Path, help="version directory, saved_models/NAME/<version>")
    index.add_argument("-k", type=positive_int, help="the k the index is tuned and checked for, within the catalog "
                       "(default: 100, or the catalog size if smaller)")
    index.add_argument("--num-leaves", type=positive_int, help="partitions of the tree (default ~sqrt(items))")
    index.add_argument("--leaves-to-search", type=positive_int, help="partitions searched per query")
    index.add_argument("--reorder", type=positive_int, help="candidates re-scored exactly")
    index.add_argument("--partition", action=argparse.BooleanOptionalAction, default=None,
                       help="search a partitioning tree (default: on large catalogs)")
    index.add_argument("--scoring", choices=SCORINGS, help="how candidates are scored")
    index.add_argument("--sample-queries", type=positive_int, default=1000,
                       help="queries for the agreement check (an index that agrees with exact top-k "
                       "less than the floor in docs/serving.md is refused)")
    index.add_argument("--overwrite", action="store_true", help="replace an existing index")
    index.set_defaults(func=_index)

    recommend = subparsers.add_parser("recommend", help="recommend items for one history")
    recommend.add_argument("--model", required=True, type=Path, help="saved_models/NAME (latest) or a version")
    recommend.add_argument("--history", required=True, help="raw item ids, oldest first: ID,ID,...")
    recommend.add_argument("-k", type=positive_int, default=10)
    recommend.add_argument("--include-history", action="store_true", help="allow items of the history")
    recommend.add_argument("--index", choices=INDEX_CHOICES, default="auto",
                           help="auto: the version's ScaNN index if built, else exact")
    recommend.set_defaults(func=_recommend)

    serve = subparsers.add_parser("serve", help="serve recommendations over HTTP (FastAPI)")
    serve.add_argument("--model", required=True, type=Path, help="saved_models/NAME; newer versions are picked up")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    serve.add_argument("--port", type=int_in(0, 65535), default=8000)
    serve.add_argument("--poll-seconds", type=float, default=10.0, help="how often to look for a new version")
    serve.add_argument("--model-name", help="NAME in TF Serving's /v1/models/NAME (default: the --model directory's name)")
    serve.add_argument("--max-history", type=int, default=Limits.max_history, help="most item ids accepted per history")
    serve.add_argument("--max-batch", type=int, default=Limits.max_batch, help="most histories per request")
    serve.add_argument("--max-id-length", type=int, default=Limits.max_id_length, help="most characters per item id")
    serve.add_argument("--max-body-bytes", type=int, default=Limits.max_body_bytes,
                       help="largest request body; larger ones get 413 before they are read")
    serve.add_argument("--max-queue", type=int, default=Limits.max_queue,
                       help="most histories waiting for a lookup; beyond, 503 with Retry-After")
    serve.add_argument("--batch-rows", type=int, default=Limits.batch_rows,
                       help="most histories per user-tower call and index search")
    serve.add_argument("--batch-delay-ms", type=float, default=Limits.batch_delay_ms,
                       help="how long a lookup waits for others to share its batch")
    serve.add_argument("--tf-threads", type=int_in(0), default=1,
                       help="TensorFlow intra-op threads, and inter-op threads (at least 2) (0: one per core)")
    serve.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=False,
                       help="log every request (off: /metrics counts them)")
    serve.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    serve.set_defaults(func=_serve)
