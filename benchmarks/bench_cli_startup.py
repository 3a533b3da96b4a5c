"""Benchmark: how long `tfcroloss --help` and `tfcroloss train --help` take, against `import tensorflow`.

Target (issue 24): each `--help` under 1 s wall clock. Every command runs in a fresh process; the
three are interleaved round by round, so the ratio to importing TensorFlow (what every `--help`
cost before the CLI was made light) holds across machines. Prints one JSON object and stores it in
benchmarks/results/cli_startup.json (quick: cli_startup-quick.json) with the commit that made it.

    python -m benchmarks.bench_cli_startup --quick   # 3 rounds
    python -m benchmarks.bench_cli_startup           # 10 rounds
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from tfcroloss.pipelines.provenance import git_commit

RESULTS = Path(__file__).parent / "results"
TARGET_SECONDS = 1.0
COMMANDS = {
    "tfcroloss --help": [sys.executable, "-m", "tfcroloss.pipelines.cli", "--help"],
    "tfcroloss train --help": [sys.executable, "-m", "tfcroloss.pipelines.cli", "train", "--help"],
    "import tensorflow": [sys.executable, "-c", "import tensorflow"],
}


def seconds(command: list[str]) -> float:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    start = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds instead of 10")
    args = parser.parse_args(argv)
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(3 if args.quick else 10):
        for name, command in COMMANDS.items():
            times[name].append(round(seconds(command), 3))
    medians = {name: statistics.median(values) for name, values in times.items()}
    result = {
        "git_commit": git_commit(),
        "cpu_count": os.cpu_count(),
        "load_average_after": [round(value, 2) for value in os.getloadavg()],
        "seconds": times,
        "median_seconds": medians,
        "help_over_import_tensorflow": {
            name: round(medians[name] / medians["import tensorflow"], 3) for name in COMMANDS if "help" in name
        },
        "target_seconds": TARGET_SECONDS,
        "met": all(max(values) < TARGET_SECONDS for name, values in times.items() if "help" in name),
    }
    print(json.dumps(result), flush=True)
    path = RESULTS / ("cli_startup-quick.json" if args.quick else "cli_startup.json")
    path.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
