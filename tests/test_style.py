"""Code-style rules that can be checked: no function over 60 lines in the package and apps."""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_FUNCTION_LINES = 60


def long_functions(directories, limit=MAX_FUNCTION_LINES):
    """[(path:line name, lines)] of the functions (decorators and docstrings included)
    longer than `limit` lines in the .py files under `directories`."""
    found = []
    for directory in directories:
        for folder, _, files in os.walk(os.path.join(ROOT, directory)):
            for name in sorted(f for f in files if f.endswith(".py")):
                path = os.path.join(folder, name)
                with open(path) as f:
                    tree = ast.parse(f.read(), path)
                for node in ast.walk(tree):
                    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        start = min([node.lineno] + [d.lineno for d in node.decorator_list])
                        lines = node.end_lineno - start + 1
                        if lines > limit:
                            found.append((f"{os.path.relpath(path, ROOT)}:{start} {node.name}",
                                          lines))
    return found


def test_no_function_is_over_60_lines():
    assert long_functions(["keras_simclr", "apps"]) == []


def test_the_check_finds_a_long_function(tmp_path, monkeypatch):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "long.py").write_text(f"def short():\n    pass\n\n\ndef long():\n{body}\n")
    monkeypatch.setattr(os.path, "relpath", lambda path, start: os.path.basename(path))
    assert long_functions([str(tmp_path)]) == [("long.py:5 long", MAX_FUNCTION_LINES + 1)]
