"""The featurizer layer's import graph: every module imports on its own, in a fresh interpreter, and no two import
each other (directly or through others), late imports inside functions included."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The featurizers and their backends (fastral.kernels is the installed name of the top-level kernels/ folder).
FILES = {
    "fastral": ["__init__.py", "_arrays.py", "_validate.py", "backends.py"],
    "fastral.ops": sorted(p.name for p in (ROOT / "fastral" / "ops").glob("*.py")),
    "fastral.kernels": sorted(p.name for p in (ROOT / "kernels").glob("*.py")),
}


def _modules() -> dict[str, Path]:
    folders = {
        "fastral": ROOT / "fastral",
        "fastral.ops": ROOT / "fastral" / "ops",
        "fastral.kernels": ROOT / "kernels",
    }
    out = {}
    for package, names in FILES.items():
        for name in names:
            out[package if name == "__init__.py" else f"{package}.{name[:-3]}"] = folders[package] / name
    return out


MODULES = _modules()


def _imports(module: str, path: Path) -> set[str]:
    """The modules of MODULES that ``module`` imports anywhere in its source (a package counts as its __init__)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            # Importing a.b.c runs a/__init__ and a.b/__init__ first.
            parts = name.split(".")
            found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return (found & set(MODULES)) - {module}


def test_the_featurizer_layer_has_no_import_cycles():
    graph = {module: _imports(module, path) for module, path in MODULES.items()}
    state: dict[str, str] = {}

    def visit(module: str, chain: list[str]) -> None:
        state[module] = "open"
        for dep in sorted(graph[module]):
            # A package's own submodules legitimately import their package (it runs first): not a cycle back.
            if module.startswith(dep + "."):
                continue
            if state.get(dep) == "open":
                raise AssertionError("import cycle: " + " -> ".join([*chain[chain.index(dep) :], dep]))
            if dep not in state:
                visit(dep, [*chain, dep])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


@pytest.mark.parametrize("module", sorted(MODULES))
def test_each_module_imports_first_in_a_fresh_interpreter(module):
    if module.startswith("fastral.kernels"):
        pytest.importorskip("triton")
    code = f"import importlib; importlib.import_module({module!r})"
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "TRITON_INTERPRET": "1"}
    )
    assert run.returncode == 0, run.stderr
