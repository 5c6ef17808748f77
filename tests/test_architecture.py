"""The package's layers: data flows one way (specs → graph and plan → cost → analytical → events →
explore → report → api, validate → cli), no import cycle, no file grown past a page or two.

docs/architecture.md describes the same layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "perfsim"

# layer of each top-level part of the package; a module may import its own layer or lower ones
LAYERS = {
    "errors": 0, "specs": 0,
    "graph": 1, "plan": 1,
    "cost": 2,
    "analytical": 3,
    "events": 4,
    "explore": 5,
    "report": 6,
    "api": 7, "validate": 7,
    "cli": 8,
    "__init__": 9, "__main__": 9,
}
TOP_LEVEL_MODULES = {"__init__", "__main__", "api", "cli", "errors", "validate"}
MAX_LINES = 520  # a module a newcomer reads in one sitting



def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(path: Path, name: str, modules: dict) -> set[str]:
    """perfsim modules ``path`` imports anywhere in it (function-level imports too)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t.split(".")[0] == "perfsim" and t != name)
    return found


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS["__init__" if len(parts) == 1 else parts[1]]


def test_every_part_of_the_package_has_a_layer():
    top = {path.relative_to(PACKAGE).parts[0].removesuffix(".py") for path in PACKAGE.rglob("*.py")}
    assert top <= set(LAYERS), top - set(LAYERS)
    loose = {p.stem for p in PACKAGE.glob("*.py")}
    assert loose <= TOP_LEVEL_MODULES, loose - TOP_LEVEL_MODULES


def test_imports_point_down_the_layers():
    modules = _modules()
    upward = []
    for name, path in modules.items():
        for target in _imports(path, name, modules):
            if target in modules and _layer(target) > _layer(name):
                upward.append(f"{name} imports {target}")
    assert not upward, upward


def test_no_import_cycle():
    modules = _modules()
    graph = {name: {t for t in _imports(path, name, modules) if t in modules and not name.startswith(t + ".")}
             for name, path in modules.items()}
    # a package's __init__ is its parent; importing a child from it is not a cycle back
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*stack[stack.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, cycles


def test_the_estimate_path_imports_no_heavy_library():
    """``perfsim estimate`` on the command line loads numpy, click and yaml, not pandas, matplotlib, scipy or dask."""
    import subprocess
    import sys

    code = ("import sys, perfsim.cli; heavy = [m for m in ('pandas', 'matplotlib', 'scipy', 'dask', 'pyarrow') "
            "if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", out.stdout


def test_no_module_is_too_long():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, long


def test_docs_name_every_module():
    """docs/architecture.md stays the map of the tree: every module is named in it."""
    doc = (PACKAGE.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    unnamed = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
               if p.name != "__init__.py" and p.name not in doc]
    assert not unnamed, unnamed


def test_the_reference_is_current():
    """docs/reference.md is what ``python -m perfsim.report.reference`` writes from the code."""
    from perfsim.report.reference import reference

    assert (PACKAGE.parent / "docs" / "reference.md").read_text(encoding="utf-8") == reference(), \
        "run: python -m perfsim.report.reference > docs/reference.md"
