"""Benchmark: prepare a Taobao-sized synthetic log (85M interactions) with `tfcroloss prepare`.

Prints one JSON object per result and stores them in benchmarks/results/prepare.json under the
mode's name, with the commit that made them. Each preparation runs in a child process, so its
time and peak RSS (``wait4``) are its own; it includes the import of TensorFlow by the CLI.

Sides, interleaved round by round on the same log: the plain text log, the same log gzipped
(``gzip -1``), and optionally the plain log prepared by another checkout of tfcroloss
(``--baseline-src DIR``, e.g. ``git worktree add /tmp/base REV``) to show a change did not make
preparation slower or bigger (with ``--engine spark``, the baseline's Spark engine).

With ``--engine spark`` the sides are the NumPy engine and the Spark engine (``local[N]``, N =
the machine's cores) on the plain log, stored under ``MODE-spark``; peak memory is then the
largest sum of the RSS of the child and all its descendants (the JVM included), sampled every
0.2 s, for both sides, and the Spark side reports the seconds of each phase of its job and its
peak scratch disk: the largest sampled (``du``, every 2 s) size of its work directory
(``OUTPUT.spark-work``) plus its ``spark.local.dir`` (``OUTPUT.spark-local``).

    python -m benchmarks.bench_prepare --quick   # a tenth of Taobao (8.5M), about a minute
    python -m benchmarks.bench_prepare           # Taobao size (85M interactions)
    python -m benchmarks.bench_prepare --engine spark --rounds 1
    python -m benchmarks.bench_prepare --scale 100 --engine spark --baseline-src /tmp/base  # 0.86M lines

``--engine spark --spark-conf KEY=VALUE`` (repeatable) gives every Spark side that setting, e.g.
``spark.sql.autoBroadcastJoinThreshold=-1`` for the plans of a log whose token tables are too
large to broadcast; the mode's name lists the settings.

``--engine spark --gzip-parts K`` adds two Spark sides: the log gzipped as one file (which Spark
reads in one task) and as a directory of K gzip parts (one task each), stored under
``MODE-spark-gzip-parts``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gzip
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from tfcroloss.pipelines.data.synthetic import PRESETS, write_synthetic
from tfcroloss.pipelines.provenance import git_commit

RESULTS = Path(__file__).parent / "results" / "prepare.json"
SPARK_SCRATCH = (".spark-work", ".spark-local")  # beside the output: the engine's work directory, spark.local.dir
ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the Taobao size (--scale 10)")
    parser.add_argument("--scale", type=int, help="Taobao's users and items divided by this (a profile of a smaller log)")
    parser.add_argument("--workdir", help="where to write the log and data sets (default: a temp dir)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of every side")
    parser.add_argument("--baseline-src", type=Path, help="another tfcroloss checkout to compare with")
    parser.add_argument("--engine", choices=("numpy", "spark"), default="numpy",
                        help="spark: the NumPy engine against the Spark engine")
    parser.add_argument("--spark-memory", default="default",
                        help="the Spark driver's heap (local mode; default: the engine's, half the machine's memory)")
    parser.add_argument("--gzip-parts", type=int, metavar="K",
                        help="with --engine spark: also the log gzipped, as one file and as K parts")
    parser.add_argument("--spark-conf", action="append", default=[], metavar="KEY=VALUE",
                        help="with --engine spark: a Spark setting for every Spark side (named in the mode)")
    parser.add_argument("--spark-child", nargs=4, metavar=("LOG", "OUTPUT", "MEMORY", "SETTINGS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.spark_child:
        return _spark_child(*args.spark_child)
    # imported here, not by a child: a baseline's tree may not have it
    from tfcroloss.pipelines.cli.data import spark_setting

    try:
        settings = dict(spark_setting(entry) for entry in args.spark_conf)
    except argparse.ArgumentTypeError as error:
        parser.error(str(error))
    scale = args.scale or (10 if args.quick else 1)
    mode = {1: "full", 10: "quick"}.get(scale, f"scale-{scale}") + ("-spark" if args.engine == "spark" else "")
    if args.gzip_parts:
        if args.engine != "spark" or args.gzip_parts < 2:
            parser.error("--gzip-parts needs --engine spark and at least 2 parts")
        mode += "-gzip-parts"
    if settings and args.engine != "spark":
        parser.error("--spark-conf needs --engine spark")
    mode += "".join(f"-{key}={value}" for key, value in settings.items())
    config = PRESETS["taobao"]
    config = dataclasses.replace(config, num_users=config.num_users // scale, num_items=config.num_items // scale)
    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        workdir = Path(workdir)
        log = workdir / "taobao_synthetic.txt"
        start = time.perf_counter()
        count = write_synthetic(log, config, seed=args.seed)
        results = [_result("synthetic", mode, count, time.perf_counter() - start, None, log_bytes=log.stat().st_size)]
        print(json.dumps(results[-1]), flush=True)
        current = _source_env(ROOT, workdir, "current")
        if args.engine == "spark":
            spark = [sys.executable, "-m", "benchmarks.bench_prepare", "--spark-child"]
            sides = {"prepare": (log, current, None), "prepare_spark": (log, current, spark)}
            if args.gzip_parts:
                sides["prepare_spark_gzip"] = (_gzip(log), current, spark)
                sides["prepare_spark_gzip_parts"] = (_gzip_parts(log, args.gzip_parts), current, spark)
        else:
            compressed = _gzip(log)
            sides = {"prepare": (log, current, None), "prepare_gzip": (compressed, current, None)}
        if args.baseline_src:
            sides["prepare_baseline"] = (log, _source_env(args.baseline_src, workdir, "baseline"), spark if args.engine == "spark" else None)
        runs: dict[str, list[tuple[float, int, dict, int]]] = {name: [] for name in sides}
        for round_number in range(args.rounds):
            for name, (source, env, child) in sides.items():
                output = workdir / f"prepared-{name}-{round_number}"
                command = None if child is None else [*child, str(source), str(output), args.spark_memory, json.dumps(settings)]
                scratch = [] if child is None else [output.with_name(output.name + ending) for ending in SPARK_SCRATCH]
                runs[name].append(_prepare(source, output, env, command, tree=args.engine == "spark", scratch=scratch))
                for path in [output, *scratch]:
                    shutil.rmtree(path, ignore_errors=True)
        for name, measured in runs.items():
            seconds = statistics.median(s for s, _, _, _ in measured)
            extra = {"phases_each": [phases for _, _, phases, _ in measured]} if measured[0][2] else {}
            if sides[name][2] is not None:
                extra["peak_scratch_gb_each"] = [round(disk / 2**30, 2) for _, _, _, disk in measured]
                extra["peak_scratch_bytes_per_line"] = round(max(disk for _, _, _, disk in measured) / count, 1)
            results.append(_result(name, mode, count, seconds, max(peak for _, peak, _, _ in measured),
                                   input_bytes=_bytes(sides[name][0]),
                                   seconds_each=[round(s, 2) for s, _, _, _ in measured], **extra))
            print(json.dumps(results[-1]), flush=True)
        if args.engine == "spark":
            numpy_runs, spark_runs = runs["prepare"], runs["prepare_spark"]
            results.append({"benchmark": "spark_over_numpy", "mode": mode, "spark_memory": args.spark_memory,
                            "spark_conf": settings,
                            "time_ratio_each_round": [round(b[0] / a[0], 2) for a, b in zip(numpy_runs, spark_runs, strict=True)],
                            "peak_memory_ratio": round(max(r[1] for r in spark_runs) / max(r[1] for r in numpy_runs), 2)})
            print(json.dumps(results[-1]), flush=True)
            if args.baseline_src:
                results.append({"benchmark": "spark_over_baseline", "mode": mode,
                                "time_ratio_each_round": [round(a[0] / b[0], 2) for a, b in zip(spark_runs, runs["prepare_baseline"], strict=True)]})
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


def _gzip_parts(log: Path, parts: int) -> Path:
    """The log as a directory of ``parts`` gzip files (``part-00000.gz``, ...) of consecutive lines."""
    with open(log, "rb") as src:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: src.read(1 << 24), b""))
    target = log.with_name(log.name + ".parts")
    target.mkdir()
    per_part = -(-lines // parts)
    with open(log, "rb") as src:
        for index in range(parts):
            with gzip.open(target / f"part-{index:05d}.gz", "wb", compresslevel=1) as out:
                out.writelines(line for _, line in zip(range(per_part), src, strict=False))
    return target


def _bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir()) if path.is_dir() else path.stat().st_size


def _source_env(source: Path, workdir: Path, name: str) -> dict[str, str]:
    """An environment whose children (run in ``workdir``) import ``tfcroloss`` (with its models/
    and pipelines/) from the checkout ``source``, whatever checkout the environment installed,
    and this checkout's ``benchmarks``; checked by importing it once."""
    shim = workdir / f"{name}-path"
    package = shim / "tfcroloss"
    package.mkdir(parents=True)
    for entry in (source / "tfcroloss").iterdir():
        (package / entry.name).symlink_to(entry.resolve())
    (package / "models").symlink_to((source / "models").resolve())
    (package / "pipelines").symlink_to((source / "pipelines").resolve())
    (shim / "benchmarks").symlink_to(ROOT / "benchmarks")
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(shim)}
    probe = "import tfcroloss.pipelines.data.prepare as m, os; print(os.path.realpath(m.__file__))"
    found = subprocess.run([sys.executable, "-c", probe], env=env, cwd=workdir, capture_output=True, text=True, check=True).stdout.strip()
    if Path(found) != (source / "pipelines" / "data" / "prepare.py").resolve():
        raise RuntimeError(f"the {name} side imports {found}, not the checkout {source}")
    return env


def _prepare(
    source: Path, output: Path, env: dict[str, str], command: list[str] | None, *, tree: bool, scratch: list[Path]
) -> tuple[float, int, dict, int]:
    """Seconds, peak memory (bytes), phase timings (Spark) and peak disk use of ``scratch``
    (bytes) of one preparation in a child process: ``tfcroloss prepare``, or ``command``. Peak
    memory is the child's peak RSS, or with ``tree`` the largest sampled sum over the child and
    its descendants."""
    command = command or [sys.executable, "-m", "tfcroloss.pipelines.cli", "prepare", "--format", "comirec",
                          "--input", str(source), "--output", str(output)]
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, cwd=output.parent, stdout=subprocess.PIPE, text=True)
    sampler = _Peak(functools.partial(_tree_rss, process.pid), 0.2) if tree else None
    disk = _Peak(functools.partial(_disk, scratch), 2.0)
    stdout = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed with status {process.returncode}")
    peak = sampler.stop() if sampler else usage.ru_maxrss * 1024
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    return seconds, peak, json.loads(lines[-1]) if lines else {}, disk.stop()


class _Peak:
    """The largest value of ``sample()``, called every ``interval`` seconds in a thread."""

    def __init__(self, sample: Callable[[], int], interval: float) -> None:
        self.sample, self.interval, self.peak, self.running = sample, interval, 0, True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.sample())
            time.sleep(self.interval)

    def stop(self) -> int:
        self.running = False
        self.thread.join()
        return self.peak


def _disk(paths: list[Path]) -> int:
    """The disk used under those of ``paths`` that exist (``du``)."""
    present = [str(path) for path in paths if path.exists()]
    if not present:
        return 0
    lines = subprocess.run(["du", "-s", "-c", "-B1", *present], capture_output=True, text=True).stdout.splitlines()
    return int(lines[-1].split()[0]) if lines else 0


def _tree_rss(pid: int) -> int:
    """The summed RSS of process ``pid`` and its descendants (from /proc)."""
    page = os.sysconf("SC_PAGE_SIZE")
    parents, rss = {}, {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                rss[int(entry)] = int(Path(f"/proc/{entry}/statm").read_text().split()[1]) * page
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(int(fields[1]), []).append(int(entry))
    tree, todo = 0, [pid]
    while todo:
        pid = todo.pop()
        tree += rss.get(pid, 0)
        todo += parents.get(pid, [])
    return tree


def _spark_child(log: str, output: str, memory: str, settings: str) -> int:
    """The Spark side: ``prepare --engine spark`` on ``local[cores]`` with ``settings`` (JSON)
    added, printing its phases."""
    from tfcroloss.pipelines.data.spark_engine import log_bytes, prepare_spark, spark_session

    start = time.perf_counter()
    conf = {"spark.ui.enabled": "false", "spark.local.dir": output + SPARK_SCRATCH[1], **json.loads(settings)}
    if memory != "default":
        conf["spark.driver.memory"] = memory
    spark = spark_session(f"local[{os.cpu_count()}]", conf, input_bytes=log_bytes(log))  # as the command sizes it
    timings = {"start Spark": round(time.perf_counter() - start, 2)}
    prepare_spark(spark, "comirec", log, output, timings=timings)
    print(json.dumps(timings), flush=True)
    return 0


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


def _packages() -> dict[str, str | None]:
    versions = {}
    for name in ("numpy", "pyarrow", "pyspark", "tensorflow"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    java = subprocess.run(["java", "-version"], capture_output=True, text=True) if shutil.which("java") else None
    versions["java"] = java.stderr.splitlines()[0] if java and java.stderr else None
    return versions


def _store(mode: str, results: list[dict], *, baseline: str | None) -> None:
    stored = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    stored[mode] = {"commit": git_commit(ROOT), "baseline_commit": baseline, "packages": _packages(), "results": results}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(stored, indent=2) + "\n")
    os.replace(tmp, RESULTS)


if __name__ == "__main__":
    sys.exit(main())
