"""The record of a ``benchmarks/large_log_run.sh`` run, from the logs it leaves in its directory.

``python -m benchmarks.large_log_record --dir /work/large`` reads ``large_run.log`` (each
attempt's ``=== start`` line, its ``spark: PHASE: N s`` lines, its ``=== prepare rc`` line),
``du.log`` (scratch every minute) and ``mem.log`` (RSS of the prepare's processes every 30 s,
written by a sampler beside it), prints the record as JSON and stores it as mode ``large-spark``
in ``benchmarks/results/prepare.json``. A resumed attempt's line for a phase finished before is
the reading of its stored work, so each phase counts in the attempt that first finished it.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "prepare.json"
_START = re.compile(r"^=== start (\d\d:\d\d:\d\d) lines (\S+) load (\S+)(?: .* commit (\w+))?")
_PHASE = re.compile(r"^spark: (.+): ([\d.]+) s$")
_END = re.compile(r"^=== prepare rc (\d+) (\d+) s this run")


def attempts(log: Path) -> list[dict]:
    """Each attempt of the run: its start, commit (when logged), phases and exit."""
    found: list[dict] = []
    for line in log.read_text(errors="replace").splitlines():
        if match := _START.match(line):
            found.append({"start_utc": match[1], "lines": float(match[2]), "load_1m": float(match[3]),
                          "commit": match[4], "phases": []})
        elif found and (match := _PHASE.match(line)):
            found[-1]["phases"].append({"phase": match[1], "seconds": float(match[2])})
        elif found and (match := _END.match(line)):
            found[-1].update(exit_status=int(match[1]), seconds=int(match[2]))
    return found


def record(directory: Path) -> dict:
    runs = attempts(directory / "large_run.log")
    finished: dict[str, float] = {}
    for run in runs:
        for phase in run["phases"]:
            finished.setdefault(phase["phase"], phase["seconds"])  # later: the stored work read back
    scratch = [int(float(line.split()[2])) for line in (directory / "du.log").read_text().splitlines() if " scratch " in line]
    rss = [float(line.split()[2]) for line in (directory / "mem.log").read_text().splitlines() if " rss_gib " in line]
    output = directory / "prepared"
    metadata = json.loads((output / "metadata.json").read_text()) if (output / "metadata.json").exists() else None
    return {
        "benchmark": "prepare_spark_large",
        "log": str(directory / "log.txt.gz"),
        "log_bytes": (directory / "log.txt.gz").stat().st_size,
        "interactions": metadata["read"]["interactions"] if metadata else None,
        "complete": metadata is not None,
        "phase_seconds": finished,
        "seconds_of_finished_phases": round(sum(finished.values()), 1),
        "attempts": runs,
        "peak_scratch_gb": round(max(scratch, default=0) / 1e9, 2),
        "peak_rss_gb": round(max(rss, default=0.0), 2),
        "prepared_bytes": sum(p.stat().st_size for p in output.rglob("*") if p.is_file()) if metadata else None,
        "recorded_at_commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, required=True, help="the run's directory (large_log_run.sh's D)")
    args = parser.parse_args(argv)
    result = record(args.dir)
    print(json.dumps(result, indent=1))
    stored = json.loads(RESULTS.read_text())
    stored["large-spark"] = result
    RESULTS.write_text(json.dumps(stored, indent=1) + "\n")


if __name__ == "__main__":
    main()
