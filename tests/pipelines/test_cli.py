"""The command line's front door: parsing and every ``--help`` import no framework."""

import os
import subprocess
import sys

from tfcroloss.pipelines.cli import build_parser

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
