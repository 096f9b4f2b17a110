"""Import a script of recipes/ as a module, for benchmarks and tests that call its functions in-process."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from llm_recipes.run_info import REPO_ROOT


def load_recipe(name: str) -> ModuleType:
    """recipes/<name>.py as module `recipe_<name>` (recipes are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", REPO_ROOT / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(module)
    return module
