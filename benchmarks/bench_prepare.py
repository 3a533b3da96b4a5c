"""Benchmark: prepare a Taobao-sized synthetic log (85M interactions) with `tfcroloss prepare`.

Prints one JSON object per result and stores them in benchmarks/results/prepare.json under the
mode's name, with the commit that made them. Each preparation runs in a child process, so its
time and peak RSS (``wait4``) are its own; it includes the import of TensorFlow by the CLI.

Sides, interleaved round by round on the same log: the plain text log, the same log gzipped
(``gzip -1``), and optionally the plain log prepared by another checkout of tfcroloss
(``--baseline-src DIR``, e.g. ``git worktree add /tmp/base REV``) to show a change did not make
preparation slower or bigger.

    python -m benchmarks.bench_prepare --quick   # a tenth of Taobao (8.5M), about a minute
    python -m benchmarks.bench_prepare           # Taobao size (85M interactions)
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tfcroloss.pipelines.data.synthetic import PRESETS, write_synthetic
from tfcroloss.pipelines.provenance import git_commit

RESULTS = Path(__file__).parent / "results" / "prepare.json"
ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the Taobao size")
    parser.add_argument("--workdir", help="where to write the log and data sets (default: a temp dir)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of every side")
    parser.add_argument("--baseline-src", type=Path, help="another tfcroloss checkout to compare with")
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    config = PRESETS["taobao"]
    if args.quick:
        config = dataclasses.replace(config, num_users=config.num_users // 10, num_items=config.num_items // 10)
    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        workdir = Path(workdir)
        log = workdir / "taobao_synthetic.txt"
        start = time.perf_counter()
        count = write_synthetic(log, config, seed=args.seed)
        results = [_result("synthetic", mode, count, time.perf_counter() - start, None, log_bytes=log.stat().st_size)]
        print(json.dumps(results[-1]), flush=True)
        compressed = _gzip(log)
        sides = {"prepare": (log, _current_env()), "prepare_gzip": (compressed, _current_env())}
        if args.baseline_src:
            sides["prepare_baseline"] = (log, _baseline_env(args.baseline_src, workdir))
        runs: dict[str, list[tuple[float, int]]] = {name: [] for name in sides}
        for round_number in range(args.rounds):
            for name, (source, env) in sides.items():
                output = workdir / f"prepared-{name}-{round_number}"
                runs[name].append(_prepare(source, output, env))
                shutil.rmtree(output)
        for name, measured in runs.items():
            seconds = statistics.median(s for s, _ in measured)
            results.append(_result(name, mode, count, seconds, max(peak for _, peak in measured),
                                   input_bytes=sides[name][0].stat().st_size,
                                   seconds_each=[round(s, 2) for s, _ in measured]))
            print(json.dumps(results[-1]), flush=True)
    _store(mode, results, baseline=git_commit(args.baseline_src) if args.baseline_src else None)
    return 0


def _gzip(log: Path) -> Path:
    target = log.with_name(log.name + ".gz")
    if shutil.which("gzip"):
        with open(target, "wb") as out:
            subprocess.run(["gzip", "-1", "-c", str(log)], stdout=out, check=True)
    else:
        with open(log, "rb") as src, gzip.open(target, "wb", compresslevel=1) as out:
            shutil.copyfileobj(src, out, 1 << 20)
    return target


def _current_env() -> dict[str, str]:
    return {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}


def _baseline_env(source: Path, workdir: Path) -> dict[str, str]:
    """An environment importing ``tfcroloss`` (with its models/ and pipelines/) from ``source``."""
    shim = workdir / "baseline-path"
    package = shim / "tfcroloss"
    package.mkdir(parents=True)
    for entry in (source / "tfcroloss").iterdir():
        (package / entry.name).symlink_to(entry.resolve())
    (package / "models").symlink_to((source / "models").resolve())
    (package / "pipelines").symlink_to((source / "pipelines").resolve())
    return {**_current_env(), "PYTHONPATH": str(shim)}


def _prepare(source: Path, output: Path, env: dict[str, str]) -> tuple[float, int]:
    """Seconds and peak RSS (bytes) of one ``tfcroloss prepare`` child process."""
    command = [sys.executable, "-m", "tfcroloss.pipelines.cli", "prepare", "--format", "comirec",
               "--input", str(source), "--output", str(output)]
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, cwd=output.parent, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed with status {process.returncode}")
    return seconds, usage.ru_maxrss * 1024


def _result(name: str, mode: str, count: int, seconds: float, peak_bytes: int | None, **extra) -> dict:
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


def _store(mode: str, results: list[dict], *, baseline: str | None) -> None:
    stored = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    stored[mode] = {"commit": git_commit(), "baseline_commit": baseline, "results": results}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(stored, indent=2) + "\n")
    os.replace(tmp, RESULTS)


if __name__ == "__main__":
    sys.exit(main())
