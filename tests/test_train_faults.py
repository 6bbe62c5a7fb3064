"""Training with other people's models, and training that meets faults: a model written as
nanoGPT's is (``.view`` on the targets), nanoGPT checkpoints, kills, signals, a full disk, a
finished run resumed, stale temporary files."""
import errno
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from graphformer.models import GPT
from graphformer.train import CHECKPOINT_NAME, load_checkpoint, train
from test_train import _cfg, corpus  # noqa: F401  (the training set-up shared with test_train)

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- a model written as nanoGPT's
@dataclass
class NanoConfig:
    block_size: int = 16
    vocab_size: int = 30
    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 16
    dropout: float = 0.0
    bias: bool = True


class NanoBlock(nn.Module):
    def __init__(self, c: NanoConfig):
        super().__init__()
        self.n_head = c.n_head
        self.ln_1 = nn.LayerNorm(c.n_embd, bias=c.bias)
        self.attn = nn.Module()
        self.attn.c_attn = nn.Linear(c.n_embd, 3 * c.n_embd, bias=c.bias)
        self.attn.c_proj = nn.Linear(c.n_embd, c.n_embd, bias=c.bias)
        self.ln_2 = nn.LayerNorm(c.n_embd, bias=c.bias)
        self.mlp = nn.Module()
        self.mlp.c_fc = nn.Linear(c.n_embd, 4 * c.n_embd, bias=c.bias)
        self.mlp.c_proj = nn.Linear(4 * c.n_embd, c.n_embd, bias=c.bias)

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.attn.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.attn.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))
        return x + self.mlp.c_proj(F.gelu(self.mlp.c_fc(self.ln_2(x))))


class NanoLM(nn.Module):
    """nanoGPT's GPT as its ``model.py`` lays it out: the same parameter names, the same
    forward contract, and ``.view`` on inputs and targets (which fails on a
    non-contiguous batch)."""

    def __init__(self, config: NanoConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            h=nn.ModuleList(NanoBlock(config) for _ in range(config.n_layer)),
            ln_f=nn.LayerNorm(config.n_embd, bias=config.bias)))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight

    def forward(self, idx, targets=None):
        t = idx.size(1)
        x = self.transformer.wte(idx) + self.transformer.wpe(torch.arange(t))
        for block in self.transformer.h:
            x = block(x)
        logits = self.lm_head(self.transformer.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1),
                                   ignore_index=-1)
        return logits, loss



def test_train_runs_a_model_that_views_its_targets(tmp_path, corpus):
    x, y = corpus.get_batch("train", 4, 16, torch.Generator().manual_seed(0))
    assert x.is_contiguous() and y.is_contiguous()
    torch.manual_seed(0)
    model = NanoLM(NanoConfig(vocab_size=corpus.vocab_size))
    res = train(model, corpus, _cfg(tmp_path, max_iters=20, eval_interval=20))
    evals = [r["val_loss"] for r in res.history if r["event"] == "eval"]
    assert len(evals) == 2 and evals[1] < evals[0] - 0.3


@pytest.mark.parametrize("bias", [True, False])
def test_nanogpt_checkpoint_loads_in_one_line(tmp_path, bias):
    torch.manual_seed(0)
    nano = NanoLM(NanoConfig(bias=bias))
    args = dict(n_layer=2, n_head=2, n_embd=16, block_size=16, bias=bias, vocab_size=30,
                dropout=0.0)
    # as nanoGPT saves it, compiled: keys prefixed with _orig_mod.
    sd = {f"_orig_mod.{k}": v for k, v in nano.state_dict().items()}
    torch.save({"model": sd, "model_args": args, "iter_num": 5, "best_val_loss": 2.0,
                "config": {"dataset": "x"}}, tmp_path / "ckpt.pt")
    model = GPT.from_nanogpt(tmp_path / "ckpt.pt")
    assert model.config.bias is bias and model.config.activation == "gelu"
    idx = torch.randint(0, 30, (3, 16))
    ours, _ = model(idx, idx)
    theirs, _ = nano(idx, idx)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="not a nanoGPT checkpoint"):
        GPT.from_nanogpt({"model": sd})
    with pytest.raises(FileNotFoundError, match="no nanoGPT checkpoint"):
        GPT.from_nanogpt(tmp_path / "missing.pt")


# ---------------------------------------------------------------- faults
def test_disk_full_is_named_and_the_last_checkpoint_kept(tmp_path, corpus, monkeypatch):
    import graphformer.train.checkpoint as ckpt_module
    real_save, calls = torch.save, []

    def save_on_a_full_disk(obj, f):
        calls.append(1)
        if len(calls) == 2:  # the second checkpoint: torch's writer fails half-way
            f.write(b"partial")
            try:
                raise OSError(errno.ENOSPC, "No space left on device")
            except OSError as e:
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected "
                                   "pos 64 vs 0") from e
        real_save(obj, f)

    monkeypatch.setattr(ckpt_module.torch, "save", save_on_a_full_disk)
    torch.manual_seed(0)
    model = NanoLM(NanoConfig(vocab_size=corpus.vocab_size))
    with pytest.raises(OSError, match=r"No space left on device while writing .*ckpt\.pt") as e:
        train(model, corpus, _cfg(tmp_path))
    assert e.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / CHECKPOINT_NAME)["iter_num"] == 4
    assert not list(tmp_path.glob(".*.tmp"))


def test_disk_full_while_logging_names_the_log(tmp_path, monkeypatch):
    import graphformer.io as io_module
    from graphformer.train.log import Log

    log = Log(tmp_path / "log.jsonl", None)
    log(iter=1, loss=2.0)

    class FullDisk:
        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io_module, "open", FullDisk, raising=False)
    with pytest.raises(OSError, match=r"No space left on device while writing .*log\.jsonl") as e:
        log(iter=2, loss=1.0)
    assert e.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert [json.loads(line)["iter"] for line in
            (tmp_path / "log.jsonl").read_text().splitlines()] == [1]


def test_stale_temp_files_are_removed_at_start(tmp_path, corpus):
    torch.manual_seed(0)
    train(NanoLM(NanoConfig(vocab_size=corpus.vocab_size)), corpus, _cfg(tmp_path, max_iters=4))
    stale = [tmp_path / ".ckpt.pt.x1y2.tmp", tmp_path / ".log.jsonl.abc.tmp"]
    for p in stale:
        p.write_bytes(b"torn")
    mine = tmp_path / "notes.tmp"  # not the run's: left alone
    mine.write_text("keep")
    train(NanoLM(NanoConfig(vocab_size=corpus.vocab_size)), corpus, _cfg(tmp_path, max_iters=8),
          resume=True)
    assert not any(p.exists() for p in stale) and mine.exists()


def _files(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _strict_json(text: str):
    def refuse(name):
        raise ValueError(f"bare {name} in JSON")
    return json.loads(text, parse_constant=refuse)


def test_finished_run_resumed_changes_nothing(tmp_path, load_benchmark):
    lm = load_benchmark("lm")
    # log every 3 steps, so the last step (4) has its own training loss only in the checkpoint
    flags = ["--n_layer", "1", "--n_head", "2", "--n_embd", "16", "--block_size", "16",
             "--batch_size", "4", "--max_iters", "4", "--warmup", "1", "--eval_interval", "2",
             "--eval_iters", "2", "--log_interval", "3", "--sample_tokens", "10",
             "--num_chars", "20000", "--device", "cpu", "--quiet", "--out", str(tmp_path)]
    lm.main(flags + ["--compare", "gpt", "--seeds", "0"])
    run = tmp_path / "gpt-s0"
    before, compare_before = _files(run), _files(tmp_path)
    ck = load_checkpoint(run / CHECKPOINT_NAME)
    assert math.isfinite(ck["train_loss"])
    result = _strict_json((run / "result.json").read_text())
    assert result["train_loss"] == ck["train_loss"]
    lm.main(flags + ["--compare", "gpt", "--seeds", "0", "--resume"])
    assert _files(run) == before
    after = _files(tmp_path)
    for name in ("compare.json", "compare.csv", "compare.md"):
        assert after[name] == compare_before[name], name
    for path in [run / "result.json", run / "log.jsonl", tmp_path / "compare.json"]:
        for line in ([path.read_text()] if path.suffix == ".json"
                     else path.read_text().splitlines()):
            _strict_json(line)


CHILD_FLAGS = ["--n_layer", "1", "--n_head", "2", "--n_embd", "16", "--block_size", "16",
               "--batch_size", "4", "--max_iters", "120", "--warmup", "2", "--eval_interval",
               "20", "--eval_iters", "2", "--log_interval", "5", "--num_chars", "20000",
               "--device", "cpu", "--quiet", "--dropout", "0.1"]


def _lm(out: Path, *extra: str, wait: bool = True):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(ROOT / "benchmarks" / "lm.py"), *CHILD_FLAGS, "--out", str(out),
           *extra]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    if wait:
        out_, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
    return proc


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    _lm(out)
    return load_checkpoint(out / "gpt-s0" / CHECKPOINT_NAME)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_killed_at_a_checkpoint_then_resumed_is_bitwise_the_same(tmp_path, uninterrupted, sig):
    proc = _lm(tmp_path, wait=False)
    ckpt = tmp_path / "gpt-s0" / CHECKPOINT_NAME
    deadline = time.time() + 120
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None, "the run ended before its first checkpoint"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    else:  # SIGTERM as Ctrl-C: one line on how to resume, no traceback
        name = signal.Signals(sig).name
        assert proc.returncode == (143 if sig == signal.SIGTERM else 130), err
        assert "Traceback" not in err
        last = err.strip().splitlines()[-1]
        assert re_search(rf"stopped by {name} after step \d+: .*ckpt\.pt \(step \d+\) is "
                         r"kept; resume=True \(benchmarks/lm\.py --resume\)", last), err
    stopped = load_checkpoint(ckpt)["iter_num"]
    assert 0 < stopped < 120
    _lm(tmp_path, "--resume")
    final = load_checkpoint(ckpt)
    assert final["iter_num"] == 120
    for k, v in uninterrupted["model"].items():
        assert torch.equal(v, final["model"][k]), k
    assert final["best_val_loss"] == uninterrupted["best_val_loss"]
    assert final["train_loss"] == uninterrupted["train_loss"]


def re_search(pattern, text):
    import re
    return re.search(pattern, text)


def test_unwritable_out_and_a_string_vocab_size_are_named(tmp_path, load_benchmark, capsys):
    lm = load_benchmark("lm")
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(SystemExit) as e:
        lm.main(["--out", str(blocker / "runs"), "--device", "cpu"])
    assert e.value.code == 2
    assert re_search(r"--out: output folder '.*a_file/runs' cannot be written: it is under "
                     r"'.*a_file', a file", capsys.readouterr().err)
    speed = load_benchmark("speed")
    with pytest.raises(SystemExit):
        speed.main(["--out", str(blocker / "speed"), "--device", "cpu"])
    assert "cannot be written" in capsys.readouterr().err

    import numpy as np
    from graphformer.datasets import BinCorpus
    for split in ("train", "val"):
        np.arange(100, dtype=np.uint16).tofile(tmp_path / f"{split}.bin")
    (tmp_path / "meta.json").write_text(json.dumps({"vocab_size": "ten"}))
    with pytest.raises(ValueError, match=r"meta file's vocab_size must be an integer, got "
                                         r"'ten' \(str\)"):
        BinCorpus(tmp_path)


def test_checkpoint_from_before_a_new_config_field_resumes(tmp_path, corpus):
    from graphformer.models import GPTConfig
    cfg = _cfg(tmp_path, max_iters=4)
    model = GPT(GPTConfig(vocab_size=corpus.vocab_size, block_size=16, n_layer=1, n_head=2,
                          n_embd=16))
    train(model, corpus, cfg)
    ck = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    for name in ("rotary", "window"):  # as written before these fields existed
        del ck["model_config"][name]
    torch.save(ck, tmp_path / CHECKPOINT_NAME)
    res = train(GPT(model.config), corpus, _cfg(tmp_path, max_iters=6), resume=True)
    assert res.iters == 6
    with pytest.raises(ValueError, match="rotary=False in the checkpoint, True in this run"):
        train(GPT(GPTConfig(vocab_size=corpus.vocab_size, block_size=16, n_layer=1, n_head=2,
                            n_embd=16, rotary=True)), corpus, _cfg(tmp_path, max_iters=8),
              resume=True)
