"""The `tfcroloss` command: parses arguments and hands over to the pipelines.

Each group of commands lives in its own module (``data``, ``training``, ``serving``, ``demo``),
which exposes ``register(subparsers)`` adding sub-commands whose ``func(args) -> int`` does the
work. The CLI is the one place that may import every phase; choices come from the registries.

A user error is one line on stderr and exit status 2, never a traceback. TensorFlow's and XLA's
start-up and runtime log lines are kept out of the output unless ``--verbose`` is given.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import re
import sys
import threading
import warnings
from collections.abc import Callable, Iterator

# Modules that register sub-commands, in the order they appear in --help.
COMMAND_MODULES = ("data", "training", "serving", "demo")
# C++ log lines of TensorFlow, XLA and absl (``E1123 20:17:30.80 123 file.cc:51] ...``,
# ``2026-11-23 20:17:30.807180: E file.cc:51] ...``) and absl's note about them.
NATIVE_LOG_LINE = re.compile(
    rb"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\]"
    rb"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] \S+:\d+\]"
    # the second line of TensorFlow's CPU-feature notice, which has no log header of its own
    rb"|To enable the following instructions: .*rebuild TensorFlow with the appropriate compiler flags)"
)


class CommandError(Exception):
    """A user error: printed as one line, exit status 2, no traceback."""


def int_in(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in ``[low, high]`` (no upper bound when ``high`` is None)."""
    wanted = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {value}")
        return value

    return parse


positive_int = int_in(1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tfcroloss", description="CROLoss retrieval toolkit: data, training, evaluation, serving."
    )
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's and XLA's own log lines and warnings")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"tfcroloss.pipelines.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs one command; ``argv`` defaults to the command line (then native logs are filtered)."""
    args = build_parser().parse_args(argv)
    quiet = not args.verbose and argv is None
    with _native_logs_hidden() if quiet else contextlib.nullcontext():
        if not args.verbose:
            _quiet_python_logs()
        try:
            return int(args.func(args) or 0)
        except (CommandError, ValueError, OSError) as error:
            print(f"tfcroloss {args.command}: error: {_one_line(error)}", file=sys.stderr)
            return 2


def _one_line(error: BaseException) -> str:
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        return f"{error.filename}: {error.strerror}"
    return str(error).strip().replace("\n", " ")


def _quiet_python_logs() -> None:
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)
    for module in ("tensorflow", "tf_keras", "keras", "tensorflow_recommenders", "absl", "scann"):
        warnings.filterwarnings("ignore", module=module)


@contextlib.contextmanager
def _native_logs_hidden() -> Iterator[None]:
    """Passes stderr (file descriptor 2, which C++ code writes to) through a filter that drops
    ``NATIVE_LOG_LINE`` lines; everything else, Python's output included, goes through."""
    sys.stderr.flush()
    saved = os.dup(2)
    read_end, write_end = os.pipe()
    terminal = os.dup(saved)  # the pump's own copy: ``saved`` is closed when the block ends
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump() -> None:
        with os.fdopen(read_end, "rb") as pipe, os.fdopen(terminal, "wb", buffering=0) as out:
            for line in pipe:
                if not NATIVE_LOG_LINE.match(line):
                    out.write(line)

    thread = threading.Thread(target=pump, name="native-log-filter", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last writer: the pump drains it and stops
        os.close(saved)
        thread.join(timeout=5)
