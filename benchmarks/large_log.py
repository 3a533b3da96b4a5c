"""Write a synthetic log of about ``--lines`` lines to one plain-text file (``comirec`` format).

The log is bench_prepare's synthetic Taobao profile with its users and items multiplied to reach
the number of lines (users of the same mean length, items in the same proportion), written by
``synthetic.write_synthetic`` chunk by chunk (50,000 users at a time), so memory stays bounded
at any size. One file, since several files would be a log already split (the ComiRec split
files). A log larger than the NumPy engine's memory, for ``prepare --engine spark``:

    python -m benchmarks.large_log --lines 1200000000 --output /data/large/log.txt   # ~29 GB
    nohup tfcroloss prepare --engine spark --format comirec --input /data/large/log.txt \\
        --output /data/large/prepared --spark-conf spark.driver.memory=11g \\
        --spark-conf spark.local.dir=/data/large/spark-local > /data/large/prepare.log 2>&1 &

Run the same ``prepare`` command again after a kill: it goes on from its last finished phase
(the work directory ``/data/large/prepared.spark-work``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

from tfcroloss.pipelines.data.synthetic import PRESETS, write_synthetic


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=float, required=True, help="about how many lines (e.g. 1.2e9)")
    parser.add_argument("--output", required=True, help="the log file to write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    base = PRESETS["taobao"]
    factor = args.lines / (base.num_users * base.mean_length)
    if factor <= 0:
        parser.error(f"--lines must be positive, got {args.lines:g}")
    config = dataclasses.replace(
        base, num_users=max(1, round(base.num_users * factor)), num_items=max(1, round(base.num_items * factor))
    )
    start = time.perf_counter()
    lines = write_synthetic(args.output, config, seed=args.seed)
    print(json.dumps({"output": args.output, "lines": lines, "users": config.num_users, "items": config.num_items,
                      "seconds": round(time.perf_counter() - start, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
