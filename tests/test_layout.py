"""The layout the house rules promise. The arrows point one way: recipes/ and data_prep/ build on llm_recipes/, never
the reverse, and data_prep/ (a pipeline of its own) never imports a recipe; read from the source, so a lazy import
inside a function counts too. A recipe stays thin (dataclasses -> library calls -> save, about 200 lines): what is
not its own lives once in llm_recipes/."""

import ast

import pytest

from testkit import REPO_ROOT

# package -> the top-level packages it must not import
FORBIDDEN = {"llm_recipes": {"data_prep", "recipes", "benchmarks"}, "data_prep": {"recipes", "benchmarks"}}


def imported_packages(path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((alias.name.split(".")[0], node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module.split(".")[0], node.lineno


@pytest.mark.parametrize("package", list(FORBIDDEN))
def test_no_import_runs_back_up(package):
    upward = [f"{path.relative_to(REPO_ROOT)}:{line} imports {name}"
              for path in sorted((REPO_ROOT / package).rglob("*.py"))
              for name, line in imported_packages(path) if name in FORBIDDEN[package]]
    assert upward == []


RECIPE_LINES = 200


def test_recipes_stay_thin():
    long = {p.name: n for p in sorted((REPO_ROOT / "recipes").glob("*.py"))
            if (n := len(p.read_text().splitlines())) > RECIPE_LINES}
    assert long == {}, f"over {RECIPE_LINES} lines: move what is not the recipe's own into llm_recipes/"
