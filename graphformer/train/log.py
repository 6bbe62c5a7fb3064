r"""What a run reports: the JSONL log (valid JSON on every line: no bare ``NaN``), the
figures of the progress bar, and the FLOPs per token for the model FLOPs utilisation."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from graphformer.io import append_text, json_safe, write_text_atomic

__all__ = ["LOG_NAME", "Log", "read_log", "show", "flops_per_token", "model_flops_per_token"]

LOG_NAME = "log.jsonl"


def read_log(path: Path, until: int) -> list[dict]:
    r"""The records of the log at :obj:`path` up to step :obj:`until` (lines torn by a
    kill are skipped)."""
    records = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if rec.get("iter", 0) <= until:
                records.append(rec)
    return records


class Log:
    r"""The JSONL log of a run (process 0 only). Resuming at step ``keep_until`` drops
    what a killed session logged after its last checkpoint."""

    def __init__(self, path: Path | None, keep_until: int | None):
        self.path = path
        self.records: list[dict] = []
        if path is None:
            return
        if keep_until is not None:
            self.records = read_log(path, keep_until)
        write_text_atomic(path, "".join(self._line(r) for r in self.records))

    @staticmethod
    def _line(rec: dict) -> str:
        return json.dumps(json_safe(rec), allow_nan=False) + "\n"

    def __call__(self, **rec: Any) -> dict:
        self.records.append(rec)
        if self.path is not None:
            append_text(self.path, self._line(rec))
        return rec


def show(bar: Any, train_loss: float, val_loss: float,
         tokens_per_sec: float | None = None) -> None:
    r"""The progress bar's figures: only those that have a value yet (no ``loss=nan``
    before the first training loss is averaged)."""
    shown = {"loss": train_loss, "val": val_loss}
    postfix = {k: f"{v:.4f}" for k, v in shown.items() if math.isfinite(v)}
    if tokens_per_sec is not None:
        postfix["tok_s"] = f"{tokens_per_sec:,.0f}"
    bar.set_postfix(postfix)


def flops_per_token(num_params: int, n_layer: int, n_head: int, n_embd: int,
                    block_size: int) -> float:
    r"""Training FLOPs per token of a GPT (PaLM appendix B, as nanoGPT's ``estimate_mfu``):
    :math:`6N + 12 L H Q T` with :math:`Q = d / H`.

    Example:
        >>> from graphformer.train import flops_per_token
        >>> flops_per_token(800_000, n_layer=4, n_head=4, n_embd=128, block_size=64)
        5193216
    """
    return 6 * num_params + 12 * n_layer * n_head * (n_embd // n_head) * block_size


def model_flops_per_token(model: Any, block_size: int) -> float | None:
    r""":func:`flops_per_token` of a model whose ``config`` has ``n_layer``, ``n_head`` and
    ``n_embd`` (``None`` otherwise), with nanoGPT's parameter count (``get_num_params``)
    where the model has one."""
    mcfg = getattr(model, "config", None)
    if not all(hasattr(mcfg, k) for k in ("n_layer", "n_head", "n_embd")):
        return None
    n = (model.get_num_params() if hasattr(model, "get_num_params")
         else sum(p.numel() for p in model.parameters()))
    return flops_per_token(n, mcfg.n_layer, mcfg.n_head, mcfg.n_embd, block_size)
