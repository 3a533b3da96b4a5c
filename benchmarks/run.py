"""Runs every ``benchmarks/bench_*.py`` module in turn, each in its own process with a time limit.

    python -m benchmarks.run --quick [--timeout SECONDS] [--only NAME ...]

Each benchmark's JSON lines go to stdout as they come; after each, one line
``{"run": NAME, "returncode": ..., "seconds": ...}`` ("returncode": null when it hit the time
limit). Exits non-zero if any benchmark failed or timed out.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent


def benchmark_names() -> list[str]:
    """Names of the ``bench_*`` modules beside this file, sorted."""
    return sorted(path.stem for path in HERE.glob("bench_*.py"))


def run(name: str, quick: bool, timeout: float) -> int | None:
    """Runs ``benchmarks.<name>``, streaming its stdout; its exit code, or None on timeout."""
    command = [sys.executable, "-m", f"benchmarks.{name}"] + (["--quick"] if quick else [])
    start = time.perf_counter()
    try:
        returncode: int | None = subprocess.run(command, cwd=HERE.parent, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        returncode = None
    seconds = round(time.perf_counter() - start, 1)
    print(json.dumps({"run": name, "returncode": returncode, "seconds": seconds}), flush=True)
    return returncode


def main(argv: list[str] | None = None) -> int:
    names = benchmark_names()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="each benchmark's quick mode")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per benchmark")
    parser.add_argument("--only", nargs="+", choices=names, default=names, metavar="NAME",
                        help=f"benchmarks to run (default: all of {', '.join(names)})")
    args = parser.parse_args(argv)
    failed = [name for name in args.only if run(name, args.quick, args.timeout) != 0]
    if failed:
        print(json.dumps({"failed": failed}), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
