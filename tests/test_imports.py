"""The arrows of the architecture, read off the source: no import circle among diffkit's modules (lazy
imports inside functions included), no private name imported from another module, and a core that
imports no modality, prints nothing and knows no CLI."""

import ast
import re
from pathlib import Path

import diffkit

ROOT = Path(diffkit.__file__).parent
MODALITIES = ("image", "audio", "text", "points")


def _modules() -> dict[str, ast.Module]:
    modules = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = ast.parse(path.read_text(), str(path))
    return modules


def _imports(modules: dict[str, ast.Module]) -> dict[str, set[tuple[str, str | None]]]:
    """Each module's imports of diffkit modules as (module, name imported from it or None)."""
    found = {}
    for name, tree in modules.items():
        found[name] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found[name] |= {(alias.name, None) for alias in node.names if alias.name.startswith("diffkit")}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("diffkit"):
                for alias in node.names:
                    submodule = f"{node.module}.{alias.name}"
                    found[name].add((submodule, None) if submodule in modules else (node.module, alias.name))
    return found


def _circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                circles.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return circles


def test_no_import_circle():
    imports = _imports(_modules())
    edges = {name: {module for module, _ in found if module in imports and module != name}
             for name, found in imports.items()}
    assert _circles(edges) == []


def test_the_circle_finder_finds_one():
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_private_name_is_imported_from_another_module():
    private = sorted(f"{name} imports {imported} from {module}"
                     for name, found in _imports(_modules()).items() for module, imported in found
                     if imported and imported.startswith("_") and not imported.startswith("__") and module != name)
    assert private == []


def test_the_core_imports_no_modality_no_cli_and_prints_nothing():
    for name, tree in _modules().items():
        if not name.startswith("diffkit.core"):
            continue
        imported = {module for module, _ in _imports({name: tree})[name]}
        outside = {m for m in imported if m.split(".")[1] in (*MODALITIES, "cli", "options", "runs", "console")}
        assert not outside, f"{name} imports {outside}"
        calls = [node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)]
        assert "print" not in calls, f"{name} prints"
        assert "import typer" not in ast.unparse(tree), f"{name} knows the CLI"


# The library: what a Python user calls. The CLI (cli.py, options.py, each modality's commands and the
# restore / evaluate / prepare command modules) is written over it.
LIBRARY = ("diffkit.core", "diffkit.runs", "diffkit.config", "diffkit.resume", "diffkit.tasks", "diffkit.reports",
           *(f"diffkit.{m}.{part}" for m in MODALITIES for part in ("pipeline", "config", "restoration", "evaluation")))


def test_the_library_imports_no_cli_and_prints_nothing_but_through_the_console():
    library = {name: tree for name, tree in _modules().items() if name.startswith(LIBRARY)}
    assert "diffkit.image.evaluation" in library and "diffkit.audio.restoration" in library
    cli = ("diffkit.cli", "diffkit.options", *(f"diffkit.{m}.{part}" for m in MODALITIES
                                               for part in ("commands", "restore", "evaluate", "prepare", "options")))
    for name, tree in library.items():
        imported = {module for module, _ in _imports({name: tree})[name]}
        assert not imported & set(cli), f"{name} imports {imported & set(cli)}"
        assert "import typer" not in ast.unparse(tree), f"{name} knows the CLI"
        calls = [node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)]
        assert "print" not in calls, f"{name} prints"


def test_the_library_names_no_flag():
    """The messages of the core, the run layer and the modalities' libraries are in their own words
    ("steps must be at least 1"); the CLI names the flag."""
    flag = re.compile(r"--[a-z]")
    for name, tree in _modules().items():
        if not name.startswith(LIBRARY):
            continue
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and node.body
                      and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
        said = [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)
                and id(node) not in docstrings and flag.search(node.value)]
        assert not said, f"{name}: {said}"
