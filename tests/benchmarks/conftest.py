"""Importing the benchmark scripts, which import their helpers from beside them."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _import_benchmark(name: str) -> ModuleType:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.fixture(scope="session")
def import_benchmark() -> Callable[[str], ModuleType]:
    """``import_benchmark("throughput")`` imports ``benchmarks/throughput.py``."""
    return _import_benchmark
