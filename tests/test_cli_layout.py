"""How the command line is put together: each command names its handler, none is guessed
from the options it happens to have, and no function in it is long."""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

from analyzer.cli import build_parser

CLI = Path(__file__).resolve().parents[1] / "analyzer" / "cli"


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                nested = _commands(sub)
                found.update({f"{name} {k}": v for k, v in nested.items()} if nested
                             else {name: sub})
    return found


def test_every_command_names_its_handler():
    commands = _commands(build_parser())
    assert {"score", "train", "demo", "report", "watch", "ship", "retention",
            "models promote"} <= set(commands)
    for name, parser in commands.items():
        assert callable(parser.get_default("func")), name


def test_no_command_is_guessed_from_the_options_it_has():
    for path in CLI.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "hasattr":
                assert not (node.args and getattr(node.args[0], "id", "") == "args"), \
                    f"{path.name}:{node.lineno}: hasattr(args, ...)"


def test_no_function_in_the_command_line_is_over_80_lines():
    for path in CLI.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                assert length <= 80, f"{path.name}: {node.name} is {length} lines"
