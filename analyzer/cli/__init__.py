"""The ``audit-analyzer`` command line: parses, calls the library, chooses the exit code.

This package is the only place that prints, reads the environment or exits. Each command
lives in a small module that registers its sub-parser; :func:`main` turns any
:class:`~analyzer.errors.AnalyzerError` (and a few OS errors) into one line on stderr.

Exit codes: 0 success, 1 a finding the user must act on (a broken chain, alerts with
``--fail-on-alert``), 2 bad usage or bad input.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from analyzer.errors import AnalyzerError
from analyzer.events import printable

__all__ = ["EXIT_FINDING", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]

EXIT_OK = 0
EXIT_FINDING = 1
EXIT_USAGE = 2

#: Modules that each register one or more subcommands, in the order --help lists them.
_COMMAND_MODULES = (
    "analyzer.cli.trail",      # log, ingest, verify
    "analyzer.cli.export",     # export
    "analyzer.cli.analysis",   # demo, train, score
    "analyzer.cli.realtime",   # ship, watch, retention
    "analyzer.cli.reporting",  # report
    "analyzer.cli.query",      # query
    "analyzer.cli.lifecycle",  # evaluate, feedback, models
)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="audit-analyzer",
        description="Tamper-evident audit trail for AI systems, and an analyzer that reads it.",
        formatter_class=_Formatter,
        epilog="Run 'audit-analyzer COMMAND --help' for a command's options and an example.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more diagnostics on stderr (repeat for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (the console script exits with it)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="audit-analyzer: %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args))
    except AnalyzerError as exc:
        # an error message can quote the input (a path, a field): keep it one safe line
        print(f"audit-analyzer {args.command}: error: {printable(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except FileNotFoundError as exc:
        print(f"audit-analyzer {args.command}: error: {exc.filename}: no such file",
              file=sys.stderr)
        return EXIT_USAGE
    except PermissionError as exc:
        print(f"audit-analyzer {args.command}: error: {exc.filename}: permission denied",
              file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"audit-analyzer {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK


