"""The command line's front door: parsing and every ``--help`` import no framework."""

import os
import subprocess
import sys

from tfcroloss.pipelines.cli import NATIVE_LOG_LINE, build_parser

HEAVY = ("tensorflow", "tf_keras", "keras", "tensorflow_recommenders", "scann", "fastapi", "uvicorn")


def test_help_of_every_command_imports_no_framework():
    commands = [[]] + [
        [name] for name in build_parser()._subparsers._group_actions[0].choices
    ]
    code = (
        "import contextlib, io, sys\n"
        "from tfcroloss.pipelines.cli import main\n"
        f"for command in {commands!r}:\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "        main([*command, '--help'])\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"--help imported {result.stdout.strip()}"
    assert len(commands) > 10


def test_native_log_lines_are_recognised_and_errors_are_not():
    native = [
        b"2026-12-06 16:26:14.027780: E external/local_xla/xla/stream_executor/cuda/cuda_platform.cc:51] "
        b"failed call to cuInit: INTERNAL: CUDA error",
        b"I0000 00:00:1796575234.782787   21078 partitioner_factory_base.cc:58] Size of sampled dataset",
        b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        b"To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the "
        b"appropriate compiler flags.",
    ]
    assert all(NATIVE_LOG_LINE.match(line) for line in native)
    assert not NATIVE_LOG_LINE.match(b"tfcroloss experiment: error: c.yaml: unknown key 'data'")
