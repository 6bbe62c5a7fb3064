r"""Files a run writes: atomically (a temporary file in the same folder, flushed and
fsynced, then renamed over the target, so a crash leaves the old file or the new one, never
a torn one), as valid JSON (no bare ``NaN``), with a full disk reported as such."""
from __future__ import annotations

import errno
import json
import math
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Union

__all__ = ["atomic_write", "write_text_atomic", "append_text", "write_json_atomic",
           "json_safe", "remove_stale_temps", "check_writable_dir"]

PathLike = Union[str, os.PathLike]


def _disk_full(error: BaseException) -> bool:
    r"""Whether :obj:`error` or an exception in its chain is a full disk (torch's writer
    reports it as ``RuntimeError: ... unexpected pos``, with the ``OSError`` as context)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def atomic_write(path: PathLike, write: Callable[[IO], None], binary: bool = False) -> None:
    r"""Calls ``write(f)`` on a temporary file beside ``path`` and renames it to
    ``path`` once it is on disk (the folder is fsynced too, so the rename is durable).
    A full disk raises ``OSError(ENOSPC)`` naming ``path``; the file there before is
    unchanged and the temporary file is removed.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from graphformer.io import atomic_write
        >>> path = Path(tempfile.mkdtemp()) / "out" / "notes.txt"   # folders made as needed
        >>> atomic_write(path, lambda f: f.write("all or nothing"))
        >>> path.read_text()
        'all or nothing'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, Exception) and _disk_full(e):
            raise OSError(errno.ENOSPC, f"No space left on device while writing {path}; the "
                                        f"file there before (if any) is unchanged",
                          str(path)) from e
        raise
    if hasattr(os, "O_DIRECTORY"):
        dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def write_text_atomic(path: PathLike, text: str) -> None:
    r"""Writes ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda f: f.write(text))


def append_text(path: PathLike, text: str) -> None:
    r"""Appends ``text`` to ``path``: the one file a run does not rewrite whole, its JSONL
    log (a line torn by a kill is skipped on reading, and a resumed run rewrites the log
    atomically up to its checkpoint). A full disk raises ``OSError(ENOSPC)`` naming
    ``path``."""
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        if _disk_full(e):
            raise OSError(errno.ENOSPC, f"No space left on device while writing {path}",
                          str(path)) from e
        raise


def json_safe(obj: Any) -> Any:
    r""":obj:`obj` with every non-finite float (``nan``, ``inf``) replaced by ``None``, so
    that it is valid JSON (a bare ``NaN`` is not).

    Example:
        >>> from graphformer.io import json_safe
        >>> json_safe({"loss": float("nan"), "xs": (1.0, float("inf"))})
        {'loss': None, 'xs': [1.0, None]}
    """
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def write_json_atomic(path: PathLike, obj: Any, indent: int | None = 1) -> None:
    r"""Writes :obj:`obj` as JSON (non-finite numbers as ``null``) atomically.

    Example:
        >>> import json, tempfile
        >>> from pathlib import Path
        >>> from graphformer.io import write_json_atomic
        >>> path = Path(tempfile.mkdtemp()) / "results.json"
        >>> write_json_atomic(path, {"acc": 0.5, "loss": float("nan")})
        >>> json.loads(path.read_text())
        {'acc': 0.5, 'loss': None}
    """
    write_text_atomic(path, json.dumps(json_safe(obj), indent=indent, allow_nan=False) + "\n")


def remove_stale_temps(folder: PathLike, names: list[str]) -> list[Path]:
    r"""Removes the temporary files that :func:`atomic_write` leaves when a process is
    killed while writing one of ``names`` in :obj:`folder` (``.NAME.*.tmp``); returns
    them."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for name in names:
        for tmp in folder.glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def check_writable_dir(path: PathLike, what: str = "output folder") -> Path:
    r"""Checks, without creating anything, that the folder :obj:`path` exists and can be
    written, or can be created (its nearest existing ancestor is a writable folder); raises
    a :class:`ValueError` naming the path and the reason otherwise."""
    path = Path(path)
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        where = "is a file" if probe == path else f"is under {str(probe)!r}, a file"
        raise ValueError(f"{what} {str(path)!r} cannot be written: it {where}, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        where = "" if probe == path else f" (its folder {str(probe)!r} is not writable)"
        raise ValueError(f"{what} {str(path)!r} cannot be written: permission denied{where}")
    return path
