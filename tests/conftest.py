"""Test-wide settings: one intra-op thread. The tests use small tensors, for which
OpenMP's thread start-up and spinning cost more than they save; on a loaded 2-core
machine two threads made single tests up to 100x slower (measured: 108 s vs 1.2 s)."""
import importlib.util
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="session")
def load_benchmark():
    """Imports a command line of ``benchmarks/`` (not a package) as a module."""
    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"{name}_benchmark", BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load
