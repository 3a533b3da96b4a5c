"""Probe: `tfcroloss prepare` on real-world logs and real mistakes, counted by outcome.

Each case is a small file (or a wrong argument) that users meet: encodings, compression, odd
bytes, bad values, wrong paths. The probe runs the CLI in process on each and sorts the outcome:
``read`` (prepared), ``refused_with_line`` (one error line naming file and line),
``refused`` (one error line, no line number: a whole-file or argument problem), or
``traceback`` (anything else: the target is 0). Prints one JSON object per case, then a summary.

    python -m benchmarks.probe_prepare_inputs
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import json
import lzma
import os
import re
import sys
import tempfile
import traceback
from collections import Counter
from pathlib import Path

import pyarrow as pa

from tfcroloss.pipelines import cli

HEADER = "user_id,item_id,timestamp\n"
ROWS = "".join(f"u{u},i{(u * 3 + k) % 7},{1000 * u + k}\n" for u in range(12) for k in range(6))
GOOD = HEADER + ROWS


def _zstd(data: bytes) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, "zstd") as out:
        out.write(data)
    return sink.getvalue().to_pybytes()


# name: (file name, bytes or None for "no file", extra CLI arguments, expected: read/refused)
CASES: dict[str, tuple[str, bytes | None, list[str], str]] = {
    "plain csv": ("a.csv", GOOD.encode(), [], "read"),
    "utf-8 BOM (Excel)": ("a.csv", b"\xef\xbb\xbf" + GOOD.encode(), [], "read"),
    "CRLF line ends": ("a.csv", GOOD.replace("\n", "\r\n").encode(), [], "read"),
    "gzip": ("a.csv.gz", gzip.compress(GOOD.encode()), [], "read"),
    "bzip2": ("a.csv.bz2", bz2.compress(GOOD.encode()), [], "read"),
    "xz": ("a.csv.xz", lzma.compress(GOOD.encode()), [], "read"),
    "zstd": ("a.csv.zst", _zstd(GOOD.encode()), [], "read"),
    "gzip named .csv": ("a.csv", gzip.compress(GOOD.encode()), [], "read"),
    "tab-separated named .csv": ("a.csv", GOOD.replace(",", "\t").encode(), [], "read"),
    "tsv.gz": ("a.tsv.gz", gzip.compress(GOOD.replace(",", "\t").encode()), [], "read"),
    "latin-1 with --encoding": ("a.csv", (HEADER + ROWS.replace("i1", "caf\u00e9")).encode("latin-1"),
                                ["--encoding", "latin-1"], "read"),
    "no timestamps, --time-column none": ("a.csv", re.sub(r",\d+\n", "\n", GOOD).replace(",timestamp", "").encode(),
                                          ["--time-column", "none"], "read"),
    "blank lines": ("a.csv", GOOD.replace("\n", "\n\n", 5).encode(), [], "read"),
    "quoted ids with commas": ("a.csv", (HEADER + ROWS.replace("u1,", '"u,1",')).encode(), [], "read"),
    "latin-1 without --encoding": ("a.csv", (HEADER + ROWS.replace("i1", "caf\u00e9")).encode("latin-1"), [], "refused"),
    "no timestamp column": ("a.csv", re.sub(r",\d+\n", "\n", GOOD).replace(",timestamp", "").encode(), [], "refused"),
    "nan timestamp": ("a.csv", (GOOD + "u1,i1,nan\n").encode(), [], "refused"),
    "inf timestamp": ("a.csv", (GOOD + "u1,i1,inf\n").encode(), [], "refused"),
    "-inf timestamp": ("a.csv", (GOOD + "u1,i1,-inf\n").encode(), [], "refused"),
    "word timestamp": ("a.csv", (GOOD + "u1,i1,yesterday\n").encode(), [], "refused"),
    "empty timestamp": ("a.csv", (GOOD + "u1,i1,\n").encode(), [], "refused"),
    "empty item id": ("a.csv", (GOOD + "u1,,5\n").encode(), [], "refused"),
    'quoted empty id ""': ("a.csv", (GOOD + 'u1,"",5\n').encode(), [], "refused"),
    "empty user id": ("a.csv", (GOOD + ",i1,5\n").encode(), [], "refused"),
    "id with a line break": ("a.csv", (GOOD + 'u1,"i\n1",5\n').encode(), [], "refused"),
    "too many fields": ("a.csv", (GOOD + "u1,i1,5,9\n").encode(), [], "refused"),
    "too few fields": ("a.csv", (GOOD + "u1,i1\n").encode(), [], "refused"),
    "invalid utf-8 byte": ("a.csv", GOOD.encode() + b"u1,\xffi,5\n", [], "refused"),
    "10 MB line": ("a.csv", (GOOD + "u1," + "x" * 10_000_000 + ",5\n").encode(), [], "refused"),
    "truncated gzip": ("a.csv.gz", gzip.compress((HEADER + ROWS * 40).encode())[:300], [], "refused"),
    "binary file": ("a.csv", bytes(range(256)) * 40, [], "refused"),
    "empty file": ("a.csv", b"", [], "refused"),
    "header only": ("a.csv", HEADER.encode(), [], "refused"),
    "missing file": ("missing.csv", None, [], "refused"),
    "directory as input": ("", None, [], "refused"),
    "unknown encoding": ("a.csv", GOOD.encode(), ["--encoding", "klingon"], "refused"),
    "output parent is a file": ("a.csv", GOOD.encode(), ["@output-under-a-file"], "refused"),
}


def run_case(workdir: Path, name: str, file_name: str, data: bytes | None, extra: list[str]) -> dict:
    case_dir = workdir / re.sub(r"\W+", "_", name)
    case_dir.mkdir()
    path = case_dir / file_name if file_name else case_dir
    if data is not None:
        path.write_bytes(data)
    output = case_dir / "out"
    if "@output-under-a-file" in extra:
        (case_dir / "blocker").write_text("")
        output = case_dir / "blocker" / "out"
        extra = [arg for arg in extra if arg != "@output-under-a-file"]
    argv = ["prepare", "--format", "csv", "--input", str(path), "--output", str(output),
            "--min-user-count", "1", "--min-item-count", "1", *extra]
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            status = cli.main(argv)
    except BaseException:  # noqa: BLE001 - the probe counts it
        return {"case": name, "outcome": "traceback", "detail": traceback.format_exc(limit=2)[-400:]}
    message = err.getvalue().strip()
    if status == 0:
        outcome = "read"
    elif status == 2 and message.count("\n") == 0:
        outcome = "refused_with_line" if re.search(r", (line|row) \d+:", message) else "refused"
    else:
        outcome = "traceback"
    return {"case": name, "outcome": outcome, "exit_status": status, "message": message[:300]}


def main(argv: list[str] | None = None) -> int:
    del argv
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for name, (file_name, data, extra, expected) in CASES.items():
            result = run_case(Path(workdir), name, file_name, data, extra)
            result["expected"] = expected
            result["as_expected"] = result["outcome"].startswith(expected)
            results.append(result)
            print(json.dumps(result), flush=True)
    counts = Counter(result["outcome"] for result in results)
    summary = {
        "cases": len(results),
        **{outcome: counts.get(outcome, 0) for outcome in ("read", "refused_with_line", "refused", "traceback")},
        "not_as_expected": [result["case"] for result in results if not result["as_expected"]],
        "machine": f"{os.cpu_count()} cpus",
    }
    print(json.dumps(summary), flush=True)
    return 0 if not summary["not_as_expected"] and not counts.get("traceback") else 1


if __name__ == "__main__":
    sys.exit(main())
