"""Code-style rules that can be checked: no function over 60 lines and no class over 200 in
the package and apps; the package's subpackages import only those below them."""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_FUNCTION_LINES = 60
MAX_CLASS_LINES = 200
# What each part of the package may import (its own modules aside), from the ground up: the
# layering the package's __init__ docstring draws.
ALLOWED_IMPORTS = {
    "utils": set(),
    "networks": {"utils"},
    "views": {"utils"},
    "losses": {"utils"},
    "optimizers": set(),
    "training": {"utils"},
    "data": {"utils", "views"},
    "evaluation": {"utils", "views", "training"},
    "model": {"utils", "networks", "views", "losses", "training", "evaluation"},
    "distillation": {"utils", "views", "training", "evaluation"},
    "exchange": {"utils", "networks", "views", "losses", "training", "evaluation", "model"},
}


def long_definitions(directories, limit=MAX_FUNCTION_LINES, kinds=(ast.FunctionDef,
                                                                    ast.AsyncFunctionDef)):
    """[(path:line name, lines)] of the definitions of `kinds` (decorators and docstrings
    included) longer than `limit` lines in the .py files under `directories`."""
    found = []
    for directory in directories:
        for folder, _, files in os.walk(os.path.join(ROOT, directory)):
            for name in sorted(f for f in files if f.endswith(".py")):
                path = os.path.join(folder, name)
                with open(path) as f:
                    tree = ast.parse(f.read(), path)
                for node in ast.walk(tree):
                    if isinstance(node, kinds):
                        start = min([node.lineno] + [d.lineno for d in node.decorator_list])
                        lines = node.end_lineno - start + 1
                        if lines > limit:
                            found.append((f"{os.path.relpath(path, ROOT)}:{start} {node.name}",
                                          lines))
    return found


def test_no_function_is_over_60_lines():
    assert long_definitions(["keras_simclr", "apps"]) == []


def test_the_check_finds_a_long_function(tmp_path, monkeypatch):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "long.py").write_text(f"def short():\n    pass\n\n\ndef long():\n{body}\n")
    monkeypatch.setattr(os.path, "relpath", lambda path, start: os.path.basename(path))
    assert long_definitions([str(tmp_path)]) == [("long.py:5 long", MAX_FUNCTION_LINES + 1)]


def test_no_class_is_over_200_lines():
    assert long_definitions(["keras_simclr", "apps"], MAX_CLASS_LINES, (ast.ClassDef,)) == []


def part_of(module):
    """The layer of a module of the package: its subpackage or top-level module name."""
    return module.split(".")[1] if module.count(".") else None


def package_imports():
    """{(importing part, imported part)} over every import inside keras_simclr/."""
    found = set()
    package = os.path.join(ROOT, "keras_simclr")
    for folder, _, files in os.walk(package):
        for name in (f for f in files if f.endswith(".py")):
            path = os.path.join(folder, name)
            module = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".").removesuffix(".__init__")
            with open(path) as f:
                tree = ast.parse(f.read(), path)
            for node in ast.walk(tree):
                targets = []
                if isinstance(node, ast.ImportFrom) and node.module:
                    targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                elif isinstance(node, ast.Import):
                    targets = [a.name for a in node.names]
                for target in targets:
                    if target.startswith("keras_simclr.") and part_of(target) != part_of(module):
                        found.add((part_of(module), part_of(target)))
    return found


def test_no_part_of_the_package_imports_upward():
    upward = {(part, imported) for part, imported in package_imports()
              if part is not None and imported not in ALLOWED_IMPORTS[part]
              and imported in ALLOWED_IMPORTS}
    assert upward == set()
    unknown = {part for pair in package_imports() for part in pair} - set(ALLOWED_IMPORTS)
    assert unknown <= {None}, f"a new part of the package: add it to ALLOWED_IMPORTS {unknown}"
