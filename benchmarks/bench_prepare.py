"""Benchmark: prepare a Taobao-sized synthetic log (85M interactions) with `tfcroloss prepare`.

Prints one JSON object per result (synthetic generation, then preparation) and stores them in
benchmarks/results/prepare.json under the mode's name. Preparation runs in a child process so its
peak RSS is measured alone; it includes the import of TensorFlow by the CLI.

    python -m benchmarks.bench_prepare --quick   # a tenth of Taobao (8.5M), well under a minute
    python -m benchmarks.bench_prepare           # Taobao size (85M interactions)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tfcroloss.pipelines.data.synthetic import PRESETS, write_synthetic

RESULTS = Path(__file__).parent / "results" / "prepare.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the Taobao size")
    parser.add_argument(
        "--workdir", help="where to write the log and data set (default: a temp dir)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    config = PRESETS["taobao"]
    if args.quick:
        config = dataclasses.replace(
            config, num_users=config.num_users // 10, num_items=config.num_items // 10
        )
    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        log = Path(workdir) / "taobao_synthetic.txt"
        start = time.perf_counter()
        count = write_synthetic(log, config, seed=args.seed)
        seconds = time.perf_counter() - start
        results = [_result("synthetic", mode, count, seconds, None, log_bytes=log.stat().st_size)]
        print(json.dumps(results[-1]), flush=True)

        command = [
            sys.executable,
            "-m",
            "tfcroloss.pipelines.cli",
            "prepare",
            "--format",
            "comirec",
        ]
        command += ["--input", str(log), "--output", str(Path(workdir) / "prepared")]
        env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
        start = time.perf_counter()
        subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        results.append(_result("prepare", mode, count, seconds, peak_kib * 1024))
        print(json.dumps(results[-1]), flush=True)
    _store(mode, results)
    return 0


def _result(
    name: str, mode: str, count: int, seconds: float, peak_bytes: int | None, **extra: int
) -> dict:
    result = {
        "benchmark": name,
        "mode": mode,
        "interactions": count,
        "seconds": round(seconds, 2),
        "interactions_per_second": round(count / seconds),
        **extra,
    }
    if peak_bytes is not None:
        result["peak_rss_gb"] = round(peak_bytes / 2**30, 2)
    result["machine"] = f"{platform.machine()}, {os.cpu_count()} cpus"
    result["load_average_1m"] = round(os.getloadavg()[0], 1)  # other work sharing the machine
    return result


def _store(mode: str, results: list[dict]) -> None:
    stored = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    stored[mode] = results
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(stored, indent=2) + "\n")
    os.replace(tmp, RESULTS)


if __name__ == "__main__":
    sys.exit(main())
