r"""A results file that survives interruption: every finished run is written at once,
atomically, and a later run with the same file skips what is already there."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Iterable, List, Optional

from graphformer.io import write_text_atomic


def write_atomic(path: Path, text: str) -> None:
    r"""Writes ``text`` to ``path`` atomically (see :func:`graphformer.io.atomic_write`)."""
    write_text_atomic(path, text)


class ResultsCorrupted(ValueError):
    r"""The results file exists but cannot be read back."""


class ResultStore:
    r"""Rows keyed by a string, kept in ``results.json`` under ``out``.

    Args:
        out (path): the output folder (created; must be writable).
        meta (dict): settings that must match to resume (e.g. the budget); a file
            written with other settings is refused rather than silently mixed.
        restart (bool): move an existing file aside (``results.json.bak``) and start over.

    Example:
        >>> import tempfile
        >>> from graphformer.studies.store import ResultStore
        >>> out = tempfile.mkdtemp()
        >>> ResultStore(out, {"budget": "fast"}).add("tree/gcn/2/plain/0", {"train_acc": 1.0})
        >>> again = ResultStore(out, {"budget": "fast"})                 # a resumed sweep
        >>> "tree/gcn/2/plain/0" in again, again.values()
        (True, [{'train_acc': 1.0}])
        >>> ResultStore(out, {"budget": "full"})                         # doctest: +ELLIPSIS
        Traceback (most recent call last):
        graphformer.studies.store.ResultsCorrupted: .../results.json was written with other settings (budget differ); ...
    """

    def __init__(self, out: Path, meta: Dict, restart: bool = False) -> None:
        self.out = Path(out)
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            probe = self.out / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as e:
            raise ValueError(f"--out {self.out} cannot be written: {e.strerror or e}") from None
        self.path = self.out / "results.json"
        self.meta = meta
        self.rows: Dict[str, Dict] = {}
        if self.path.exists():
            if restart:
                backup = self.path.with_suffix(".json.bak")
                os.replace(self.path, backup)
                print(f"--restart: moved the earlier results to {backup}")
            else:
                self._load()

    def _load(self) -> None:
        try:
            saved = json.loads(self.path.read_text())
            rows = saved["rows"]
            meta = saved["meta"]
            if not isinstance(rows, dict) or not isinstance(meta, dict):
                raise TypeError("rows or meta is not a mapping")
        except (ValueError, KeyError, TypeError) as e:
            raise ResultsCorrupted(
                f"{self.path} is corrupted ({type(e).__name__}: {e}); it was left as it is. "
                "Repair it, or pass --restart to move it aside to results.json.bak and "
                "start over.") from None
        if "layout" in self.meta and meta.get("layout") != self.meta["layout"]:
            raise ResultsCorrupted(
                f"{self.path} was written by an older version of this study (results layout "
                f"{meta.get('layout', 1)}, rows keyed by 'size'; this version writes layout "
                f"{self.meta['layout']}, with depth, distance or length): it cannot be "
                "resumed. Use another --out, or --restart (keeps a .bak copy).")
        if meta != self.meta:
            changed = sorted(k for k in set(meta) | set(self.meta) if meta.get(k) != self.meta.get(k))
            raise ResultsCorrupted(
                f"{self.path} was written with other settings ({', '.join(changed)} differ); "
                "use another --out, the same settings, or --restart (keeps a .bak copy).")
        self.rows = rows

    def __contains__(self, key: str) -> bool:
        return key in self.rows

    def add(self, key: str, row: Dict) -> None:
        self.rows[key] = row
        write_atomic(self.path, json.dumps({"meta": self.meta, "rows": self.rows}, indent=1))

    def values(self, keys: Optional[Iterable[str]] = None) -> List[Dict]:
        if keys is None:
            return list(self.rows.values())
        return [self.rows[k] for k in keys if k in self.rows]
