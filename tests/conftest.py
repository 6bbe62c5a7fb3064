"""Test-wide settings.

* One intra-op thread. The tests use small tensors, for which OpenMP's thread start-up
  and spinning cost more than they save; on a loaded 2-core machine two threads made
  single tests up to 100x slower (measured: 108 s vs 1.2 s).
* Ray stays on loopback: its single-machine mode (every Ray process on 127.0.0.1) is read
  once, when Ray is imported, so it is set here, before any test imports it; and Ray's
  usage statistics are off. One local Ray instance serves every test that runs a sweep
  (the ``ray_local`` fixture): its start-up (about 8 s here) is paid once.
* Hypothesis profiles. ``ci`` (the default) is derandomised: the examples are drawn from
  a fixed seed, so every run (a developer's, CI's) tries the same inputs and a red build
  is always reproducible, never a lucky draw; ``max_examples`` is modest to keep the
  suite fast, and the properties add ``@example``\\ s for the known hard cases. ``dev``
  is random with more examples, to search for new counterexamples locally:
  ``HYPOTHESIS_PROFILE=dev pytest tests/test_properties.py``. No deadline in either: the
  first example of a test pays for PyTorch's lazy initialisation.
"""
import importlib.util
import os
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

torch.set_num_threads(1)
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

settings.register_profile("ci", derandomize=True, max_examples=15, deadline=None,
                          print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=200, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


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


@pytest.fixture
def one_thread():
    r"""Restores torch's thread count after a test whose command line sets it."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def eager_flex(monkeypatch):
    r"""FlexAttention without ``torch.compile``: the same mask semantics (BlockMask +
    ``mask_mod``) in PyTorch's unfused implementation, fast on tiny CPU graphs (compiling
    it takes 5-35 s per shape on CPU). The compiled kernel is checked once in
    ``test_attention.py::test_flex_compiled`` (slow)."""
    from graphformer.nn import kernels
    from torch.nn.attention.flex_attention import flex_attention
    monkeypatch.setattr(kernels, "_compiled_flex", flex_attention)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.fixture(scope="session")
def ray_local():
    """The local Ray instance (loopback, 2 CPUs) that the sweeps of the whole session share:
    a sweep run while this process is connected uses that connection and leaves it open."""
    from graphformer.studies.executor import RayExecutor
    ray, started = RayExecutor(workers=2).connect()
    yield ray
    if started:
        ray.shutdown()
