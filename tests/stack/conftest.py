"""Loads scripts/stack.py (a standalone script, not a package) for its tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

STACK_PATH = Path(__file__).resolve().parents[2] / "scripts" / "stack.py"


def load_stack() -> ModuleType:
    name = "ballast_stack_script"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, STACK_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def stack() -> ModuleType:
    return load_stack()
