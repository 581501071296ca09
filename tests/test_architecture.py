"""The house keeps its plan: no import cycle in ``analyzer``, and every import goes from a
later stage to an earlier one (or within a stage).

The stage order is :data:`STAGES`, here and only here; ``docs/architecture.md`` ("Stages")
describes it, and a test below checks that the two name the same stages in the same order.
The graph is read from the source (``ast``), not by importing: every ``import`` statement
counts, at module level, inside functions, and under ``if TYPE_CHECKING:`` alike, since a
function-level import is still a dependency, only a later one.

How packages count: an import of ``analyzer.pkg.mod`` is an edge to that module only (Python
also runs ``analyzer/pkg/__init__.py`` first, but a package that re-exports its own
submodules would otherwise make each of them a cycle). ``from analyzer import NAME`` is an
edge to the package's ``__init__`` for the names it defines itself (``__version__``), to the
submodule for a submodule, and to the module a lazily resolved public name comes from
(``analyzer._LAZY``) otherwise, so that no module reaches a later stage through the public face.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "analyzer"

#: The stages, earliest first: ``(stage, modules)``. A module belongs to the stage of the
#: longest name here that is it or a package containing it (``analyzer.sinks.sqlite`` before
#: ``analyzer.sinks``). Each stage may import from its own and earlier stages only.
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("base", ("analyzer.errors", "analyzer.events", "analyzer.files", "analyzer.series",
              "analyzer.durations", "analyzer.crypto", "analyzer.integrity")),
    # The package's public face is imported with every submodule, so it holds at import only
    # what the logger side needs; its other names resolve on first use.
    ("logger", ("analyzer", "analyzer.logger")),
    ("trail wing", ("analyzer.follow", "analyzer.sinks", "analyzer.retention",
                    "analyzer.trail")),
    ("sources", ("analyzer.sources",)),
    ("features", ("analyzer.features", "analyzer.streaming")),
    ("model", ("analyzer.reasons", "analyzer.detector", "analyzer.model",
               "analyzer.persistence")),
    ("judgement", ("analyzer.alerts", "analyzer.feedback", "analyzer.suppression",
                   "analyzer.registry", "analyzer.drift", "analyzer.evaluation")),
    # The SQL destinations write the store's table: they are the store's writers.
    ("query and store", ("analyzer.query", "analyzer.store", "analyzer.sql", "analyzer.export",
                         "analyzer.sinks.sqlite", "analyzer.sinks.postgres")),
    # One entry point that reads, scores and writes back, shared by the CLI, demo, watch,
    # notebooks and the report's own reading.
    # Where the pipeline runs besides this process: a Dask cluster (partitions of the inputs).
    ("engine", ("analyzer.engine",)),
    ("pipeline", ("analyzer.pipeline",)),
    ("report", ("analyzer.report",)),
    ("live", ("analyzer.watch", "analyzer.metrics", "analyzer.chain_monitor")),
    ("synth", ("analyzer.synth",)),
    ("cli", ("analyzer.cli", "analyzer.__main__")),
)


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _lazy_names() -> dict[str, str]:
    tree = ast.parse((PACKAGE / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "_LAZY" for t in targets):
                return ast.literal_eval(node.value)
    return {}


LAZY = _lazy_names()


def _target(module: str, name: str | None) -> str:
    """The module an import of ``name`` from ``module`` depends on."""
    if name is not None:
        if f"{module}.{name}" in MODULES:
            return f"{module}.{name}"
        if module == "analyzer" and name in LAZY:
            return LAZY[name]
    while module not in MODULES:  # an attribute path: analyzer.x.y.Name
        module = module.rpartition(".")[0]
    return module


def _imports(name: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {_target(a.name, None) for a in node.names
                      if a.name.split(".")[0] == "analyzer"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] == "analyzer":
                found |= {_target(module, a.name) for a in node.names}
    found.discard(name)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def stage_of(module: str) -> int:
    best, stage = -1, -1
    for index, (_, members) in enumerate(STAGES):
        for member in members:
            if (module == member or module.startswith(member + ".")) and len(member) > best:
                best, stage = len(member), index
    return stage


def _cycle() -> list[str] | None:
    """One import cycle, as the modules around it, or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(GRAPH.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(GRAPH):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_the_graph_is_read_from_the_whole_package() -> None:
    # guards the reader itself: edges it must see, whatever the style of the import
    assert "analyzer.integrity" in GRAPH["analyzer.logger._writer"]  # module level
    assert "analyzer.crypto" in GRAPH["analyzer.logger._writer"]  # inside a method
    assert "analyzer.logger" in GRAPH["analyzer.sinks.shipper"]
    assert "analyzer.report" in GRAPH["analyzer.cli.analysis"]  # from analyzer import report
    assert len(MODULES) > 70


def test_every_module_has_a_stage() -> None:
    missing = sorted(m for m in MODULES if stage_of(m) < 0)
    assert not missing, f"place these modules in a stage (tests/test_architecture.py): {missing}"


def test_there_is_no_import_cycle() -> None:
    cycle = _cycle()
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_every_import_goes_to_an_earlier_stage() -> None:
    wrong = sorted(
        f"{module} ({STAGES[stage_of(module)][0]}) imports {target} "
        f"({STAGES[stage_of(target)][0]})"
        for module, targets in GRAPH.items() for target in targets
        if stage_of(target) > stage_of(module))
    assert not wrong, "imports from a later stage:\n" + "\n".join(wrong)


def test_the_logger_imports_nothing_that_acts_on_its_files() -> None:
    # the cycle this guard was written for: the logger started shippers and retention
    reached = set()
    todo = [m for m in MODULES if m == "analyzer.logger" or m.startswith("analyzer.logger.")]
    while todo:
        module = todo.pop()
        for target in GRAPH[module] - reached:
            reached.add(target)
            todo.append(target)
    assert not {m for m in reached if stage_of(m) > stage_of("analyzer.logger")}


def test_the_architecture_document_names_the_same_stages() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = doc.split("## Stages", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\d+\. \*\*([^*]+)\*\*", section, re.MULTILINE)
    assert listed == [name for name, _ in STAGES]


@pytest.mark.parametrize(("module", "target"), [
    ("analyzer.logger._writer", "analyzer.sinks.background"),
    ("analyzer.logger._writer", "analyzer.retention"),
    ("analyzer.events", "analyzer.logger"),
    ("analyzer.sources.jsonl", "analyzer.query"),
])
def test_the_order_refuses_the_edges_it_is_meant_to(module, target) -> None:
    assert stage_of(target) > stage_of(module)


#: The longest a function may be, in lines of its body (see :func:`_function_lengths`).
MAX_FUNCTION_LINES = 80

#: Functions allowed over :data:`MAX_FUNCTION_LINES`, ``"module:qualname"``: reason. An entry
#: must still be over the limit, so that the list shrinks as they are split.
LONG_FUNCTIONS: dict[str, str] = {
    "analyzer.synth._world:_World._build_roster":
        "generated scenario: draws the synthetic organisation's roster (roles, teams, "
        "offices, habits) in one pass over one random generator, whose order of draws fixes "
        "every seeded organisation and its golden figures",
}


def _function_lengths() -> dict[str, int]:
    """Every function and method of ``analyzer`` (nested ones too) -> its length.

    The length counts the body from its first statement after the docstring to the
    function's last line, comments and blank lines inside included: the signature and the
    docstring are not counted, since a keyword-rich signature or a full docstring (as in
    ``AuditLogger.log``) is documentation, not logic a reader has to hold.
    """
    lengths: dict[str, int] = {}

    def visit(node: ast.AST, module: str, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                body = child.body
                docstring = (isinstance(body[0], ast.Expr)
                             and isinstance(body[0].value, ast.Constant)
                             and isinstance(body[0].value.value, str))
                first = body[1] if docstring and len(body) > 1 else body[0]
                name = prefix + child.name
                lengths[f"{module}:{name}"] = (child.end_lineno or first.lineno) - first.lineno + 1
                visit(child, module, name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, module, prefix + child.name + ".")
            else:
                visit(child, module, prefix)

    for module, path in MODULES.items():
        visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)), module, "")
    return lengths


def test_no_function_is_longer_than_the_limit() -> None:
    lengths = _function_lengths()
    assert "analyzer.logger._writer:AuditLogger.log" in lengths  # the reader sees methods
    long = {name: n for name, n in lengths.items() if n > MAX_FUNCTION_LINES}
    unexpected = sorted(f"{name} ({n} lines)" for name, n in long.items()
                        if name not in LONG_FUNCTIONS)
    assert not unexpected, (
        f"functions over {MAX_FUNCTION_LINES} lines: split them along their seams "
        "(or, for a generated scenario, add them to LONG_FUNCTIONS with a reason):\n"
        + "\n".join(unexpected))
    stale = sorted(name for name in LONG_FUNCTIONS if name not in long)
    assert not stale, f"no longer over the limit (or gone): remove from LONG_FUNCTIONS: {stale}"
