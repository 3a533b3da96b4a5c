"""The `tfcroloss` command: parses arguments and hands over to the pipelines.

Each group of commands lives in its own module (``data``, ``training``, ``serving``, ``demo``),
which exposes ``register(subparsers)`` adding sub-commands whose ``func(args) -> int`` does the
work. The CLI is the one place that may import every phase; choices come from the registries.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules that register sub-commands, in the order they appear in --help.
COMMAND_MODULES = ("data", "training", "serving", "demo")


class CommandError(Exception):
    """A user error: printed as one line, exit status 2, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tfcroloss", description="CROLoss retrieval toolkit: data, training, evaluation, serving."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"tfcroloss.pipelines.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (CommandError, ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"tfcroloss {args.command}: error: {error}", file=sys.stderr)
        return 2
