r"""Devices and the compiler: one place that turns ``--device`` and ``--compile`` into a
:class:`torch.device`, or into a clear error that says what this machine has.

Every command line (``benchmarks/lm.py``, ``benchmarks/oversquash.py``,
``benchmarks/speed.py``) and :func:`graphformer.train.train` read their device here::

    from graphformer.device import resolve_device
    device = resolve_device(args.device)   # "auto" = CUDA when present, else CPU

Asking for a device this machine does not have fails at once, before any work, with a
message like ``device 'cuda' was asked for, but CUDA is not available here (torch
2.13.0+cpu is a CPU-only build); this machine has: cpu. Use --device cpu or
--device auto.``
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Callable

import torch

__all__ = ["available_devices", "check_device_name", "resolve_device", "compile_problem",
           "check_compile", "peak_memory"]

#: The device types the package runs on.
DEVICE_TYPES = ("cpu", "cuda", "mps")


def available_devices() -> list[str]:
    r"""The devices of this machine, e.g. ``["cpu"]`` or
    ``["cpu", "cuda:0 (NVIDIA H200)"]``.

    Example:
        >>> from graphformer.device import available_devices
        >>> available_devices()[0]                             # the CPU is always there
        'cpu'
    """
    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i} ({torch.cuda.get_device_name(i)})"
                  for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    return found


def _why_no_cuda() -> str:
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build"
    return f"torch {torch.__version__} is built for CUDA {torch.version.cuda}, but no GPU " \
           f"or driver was found"


def check_device_name(device: str | torch.device) -> None:
    r"""Raise a :class:`ValueError` (or :class:`TypeError`) when :obj:`device` names no
    device graphformer runs on: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or
    ``"mps"``. Whether this machine has it is :func:`resolve_device`'s question.

    Example:
        >>> from graphformer.device import check_device_name
        >>> check_device_name("cuda:1")                        # a valid name, here or not
        >>> check_device_name("gpu")                           # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ValueError: unknown device 'gpu'; use auto, cpu, cuda, mps or cuda:N (this machine has: ...)
    """
    _parse(device)


def _parse(device: str | torch.device) -> torch.device | None:
    r"""The :class:`torch.device` that :obj:`device` names (``None`` for ``"auto"``)."""
    if isinstance(device, torch.device):
        dev = device
    elif isinstance(device, str):
        name = device.strip().lower()
        if name == "auto":
            return None
        try:
            dev = torch.device(name)
        except RuntimeError:
            dev = None
        if dev is None or dev.type not in DEVICE_TYPES:
            raise ValueError(f"unknown device {device!r}; use auto, "
                             f"{', '.join(DEVICE_TYPES)} or cuda:N (this machine has: "
                             f"{', '.join(available_devices())})")
    else:
        raise TypeError(f"device must be a string such as 'auto', 'cpu' or 'cuda', got "
                        f"{type(device).__name__}")
    if dev.type not in DEVICE_TYPES:
        raise ValueError(f"unsupported device type {dev.type!r}; use auto, "
                         f"{', '.join(DEVICE_TYPES)} or cuda:N")
    return dev


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    r"""The :class:`torch.device` that :obj:`device` names on this machine.

    Args:
        device (str or torch.device): ``"auto"`` (CUDA when present, else CPU), ``"cpu"``,
            ``"cuda"``, ``"cuda:N"`` or ``"mps"``.

    Raises:
        TypeError: :obj:`device` is neither a string nor a :class:`torch.device`.
        ValueError: the string names no device, or a device this machine lacks; the
            message lists the devices there are.

    Example:
        >>> from graphformer.device import resolve_device
        >>> resolve_device("cpu")
        device(type='cpu')
        >>> resolve_device("tpu")                              # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ValueError: unknown device 'tpu'; use auto, cpu, cuda, mps or cuda:N (this machine has: ...)
    """
    dev = _parse(device)
    if dev is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r} was asked for, but CUDA is not "
                             f"available here ({_why_no_cuda()}); this machine has: "
                             f"{', '.join(available_devices())}. Use --device cpu or "
                             f"--device auto.")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"device {str(device)!r} was asked for, but this machine has "
                             f"{count} CUDA device(s): {', '.join(available_devices())}")
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"device {str(device)!r} was asked for, but MPS is not "
                             f"available here; this machine has: "
                             f"{', '.join(available_devices())}")
    return dev


def compile_problem(device: str | torch.device = "cpu") -> str | None:
    r"""Why :func:`torch.compile` (its default backend, Inductor) cannot work on
    :obj:`device` with this torch, or ``None`` when nothing is missing.

    Cheap checks, no compilation: ``torch.compile`` exists and supports this Python;
    on CUDA, Triton is installed; on CPU, a C++ compiler is found (Inductor's own
    search, which honours ``CXX``)."""
    device = torch.device(device) if isinstance(device, str) else device
    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile (torch 2.0 or newer has)"
    try:
        from torch import _dynamo
        if not _dynamo.is_dynamo_supported():
            return (f"torch {torch.__version__} cannot compile on Python "
                    f"{sys.version.split()[0]}")
    except Exception as e:  # a broken install
        return f"torch.compile cannot be loaded ({type(e).__name__}: {e})"
    if device.type == "cuda":
        try:
            from torch.utils._triton import has_triton
            ok = has_triton()
        except Exception:  # older torch
            try:
                import triton  # noqa: F401
                ok = True
            except ImportError:
                ok = False
        if not ok:
            return ("Triton is not installed (torch.compile needs it on CUDA: "
                    "pip install triton, or the triton that comes with torch's CUDA wheels)")
    elif device.type == "cpu":
        try:
            from torch._inductor.cpp_builder import get_cpp_compiler
            get_cpp_compiler()
        except ImportError:
            pass  # an older torch: let torch.compile itself say
        except Exception as e:
            return (f"no working C++ compiler was found ({type(e).__name__}); torch.compile "
                    f"needs one on CPU (install g++ or clang++, or set CXX)")
    return None


def check_compile(device: str | torch.device = "cpu") -> None:
    r"""Raise a :class:`RuntimeError` that says what is missing when :func:`torch.compile`
    cannot work on :obj:`device` (see :func:`compile_problem`)."""
    problem = compile_problem(device)
    if problem is not None:
        raise RuntimeError(f"compile=True (--compile) cannot run on {device}: {problem}. "
                           f"Run without --compile.")


def peak_memory(step: Callable[[], object], device: torch.device) -> int:
    r"""The most bytes allocated at any moment of ``step()`` above what was allocated
    before it: ``torch.cuda.max_memory_allocated`` on CUDA; on CPU from the allocator
    events that ``torch.profiler`` records (``profile_memory=True``).

    Example:
        >>> import torch
        >>> from graphformer.device import peak_memory
        >>> peak_memory(lambda: torch.ones(1024, 256), torch.device("cpu"))  # 1 MiB of fp32
        1048576
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(path))
        events = json.loads(path.read_text())["traceEvents"]
    now = peak = 0
    mem = [e for e in events if e.get("name") == "[memory]"
           and e.get("args", {}).get("Device Type", 0) == 0]
    for e in sorted(mem, key=lambda e: e["ts"]):
        now += e["args"]["Bytes"]
        peak = max(peak, now)
    return peak
