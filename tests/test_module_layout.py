"""The package stays readable: its import graph has layers, no module past 600 lines, no function past
80 code lines, and no module reaching into another module's private names.

The import graph is read from the source with `ast`: every `import` and `from … import` of a vmmlib
module, at module level, inside functions (they run later, but they still depend) and under
`if TYPE_CHECKING:` (a type hint is a dependency too). On that graph:

- every module belongs to one layer of `LAYERS`, and imports only from its own layer or lower ones;
- no import cycle between modules;
- `FORBIDDEN`: a few imports that the layer order alone would allow, or that say the design.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "vmmlib"
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80

# Bottom to top. A module's layer is the one naming the longest prefix of its dotted name
# (`vmmlib` itself, the package root with only `__version__`, matches exactly).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    # files, record formats, the one door for untrusted input, and the smallest shared helpers
    ("io", ("vmmlib", "vmmlib.io", "vmmlib.options", "vmmlib.progress", "vmmlib.dryrun")),
    # official metrics: pure functions on arrays (their truth readers live in io/)
    ("metrics", ("vmmlib.metrics", "vmmlib.ranking")),
    # one reader per competition format, opened data folders, sample data
    ("data", ("vmmlib.data",)),
    # each competition's submission file: write, read, validate, score (no torch)
    ("submissions", ("vmmlib.submissions",)),
    # models and the objective terms that train them
    ("models", ("vmmlib.models", "vmmlib.objectives")),
    # the machinery every task shares: training, prediction, extraction, ensembles, run folders, plots
    (
        "library",
        (
            "vmmlib.train",
            "vmmlib.predict",
            "vmmlib.extract",
            "vmmlib.ensemble",
            "vmmlib.explore",
            "vmmlib.plots",
            "vmmlib.runs",
        ),
    ),
    # one module per competition behind the written contract: wiring only
    ("tasks", ("vmmlib.tasks",)),
    # the face: the `vmm` command, pipelines of notebooks, reports and the run index
    ("app", ("vmmlib.app",)),
]

# (importer prefix, imported prefix): never, whatever the layers allow
FORBIDDEN = [
    ("vmmlib.data", "vmmlib.metrics"),  # truth readers the metrics need live in io/, below both
    ("vmmlib.metrics", "vmmlib.data"),
    ("vmmlib.app", "vmmlib.data"),  # the face reaches a competition's data only through its task
]


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, int]]:
    """(vmmlib module, line) of every import in the file: module level, function-local and type-only."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found.append((base, node.lineno))
            found += [(f"{base}.{a.name}", node.lineno) for a in node.names]
    return [(m, line) for m, line in found if m in modules and m != name]


def _graph() -> tuple[dict[str, Path], dict[str, list[tuple[str, int]]]]:
    modules = _modules()
    return modules, {name: _imports(name, path, modules) for name, path in modules.items()}


def _under(module: str, prefix: str) -> bool:
    return module == prefix or (prefix != "vmmlib" and module.startswith(prefix + "."))


def _layer(module: str) -> int | None:
    best = None
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if _under(module, prefix) and (best is None or len(prefix) > best[1]):
                best = (rank, len(prefix))
    return None if best is None else best[0]


def _where(modules: dict[str, Path], name: str, line: int) -> str:
    return f"{modules[name].relative_to(PACKAGE.parent)}:{line}"


def test_every_module_has_a_layer():
    assert sorted(m for m in _modules() if _layer(m) is None) == [], "add these modules to LAYERS"


def test_no_module_imports_from_a_higher_layer():
    modules, graph = _graph()
    offenders = []
    for name, imports in sorted(graph.items()):
        for dep, line in imports:
            if None not in (_layer(name), _layer(dep)) and _layer(dep) > _layer(name):
                offenders.append(
                    f"{_where(modules, name, line)} imports {dep}: layer {LAYERS[_layer(name)][0]} "
                    f"may not import layer {LAYERS[_layer(dep)][0]}"
                )
    assert offenders == [], "\n".join(offenders)


def test_no_forbidden_import():
    modules, graph = _graph()
    offenders = [
        f"{_where(modules, name, line)} imports {dep} ({src} may not import {dst})"
        for name, imports in sorted(graph.items())
        for dep, line in imports
        for src, dst in FORBIDDEN
        if _under(name, src) and _under(dep, dst)
    ]
    assert offenders == [], "\n".join(offenders)


def test_no_import_cycle_between_vmmlib_modules():
    modules, graph = _graph()
    # a package importing its own submodules (re-exports) is not a cycle of concerns
    edges = {n: {m: line for m, line in deps if not m.startswith(n + ".")} for n, deps in graph.items()}
    state, stack, cycles = {}, [], []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for dep in sorted(edges[node]):
            if state.get(dep) == "open":
                loop = stack[stack.index(dep) :] + [dep]
                steps = [f"{a} ({_where(modules, a, edges[a][b])})" for a, b in zip(loop, loop[1:])]
                cycles.append(" -> ".join([*steps, dep]))
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert cycles == [], "\n".join(cycles)


def test_the_layer_test_sees_function_local_and_type_only_imports(tmp_path):
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from vmmlib.app import cli\n"
        "def f():\n"
        "    import vmmlib.tasks\n"
    )
    path = tmp_path / "probe.py"
    path.write_text(source)
    modules = {"vmmlib.app": path, "vmmlib.app.cli": path, "vmmlib.tasks": path, "vmmlib.io.probe": path}
    assert sorted(_imports("vmmlib.io.probe", path, modules)) == [
        ("vmmlib.app", 3),
        ("vmmlib.app.cli", 3),
        ("vmmlib.tasks", 5),
    ]


def _code_lines(node: ast.FunctionDef) -> int:
    """A function's lines without its docstring (a long Args section is no long function)."""
    total = node.end_lineno - node.lineno + 1
    first = node.body[0]
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        total -= first.end_lineno - first.lineno + 1
    return total


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_and_functions_stay_small(path):
    source = path.read_text()
    assert len(source.splitlines()) <= MAX_MODULE_LINES, f"{path.name}: over {MAX_MODULE_LINES} lines"
    long = [
        f"{node.name} at line {node.lineno} ({_code_lines(node)} code lines)"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and _code_lines(node) > MAX_FUNCTION_LINES
    ]
    assert long == [], f"over {MAX_FUNCTION_LINES} code lines"


def test_no_module_imports_another_modules_private_names():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vmmlib"):
                offenders += [
                    f"{path.name}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")
                ]
    assert offenders == []
