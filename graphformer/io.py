r"""Atomic file writes: a temporary file in the same folder, flushed and fsynced, then
renamed over the target, so a crash leaves the old file or the new one, never a torn one."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO, Callable, Union

__all__ = ["atomic_write", "write_text_atomic"]


def atomic_write(path: Union[str, os.PathLike], write: Callable[[IO], None],
                 binary: bool = False) -> None:
    r"""Calls ``write(f)`` on a temporary file beside ``path`` and renames it to
    ``path`` once it is on disk (the folder is fsynced too, so the rename is durable)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    if hasattr(os, "O_DIRECTORY"):
        dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def write_text_atomic(path: Union[str, os.PathLike], text: str) -> None:
    r"""Writes ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda f: f.write(text))
