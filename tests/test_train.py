import json
import math
import os
import socket
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from graphformer.datasets import TextCorpus, generate_stories
from graphformer.train import (
    CHECKPOINT_NAME,
    LOG_NAME,
    VOCAB_NAME,
    TrainConfig,
    configure_optimizer,
    get_lr,
    load_checkpoint,
    train,
)


@dataclass
class TinyConfig:
    vocab_size: int
    block_size: int = 16
    n_embd: int = 16
    dropout: float = 0.0


class TinyLM(nn.Module):
    """A stand-in language model: embeddings, one causal mean-mixing layer with a learned
    'dynamics' step size, a linear head. nanoGPT's interface."""

    def __init__(self, config: TinyConfig):
        super().__init__()
        self.config = config
        d = config.n_embd
        self.wte = nn.Embedding(config.vocab_size, d)
        self.wpe = nn.Embedding(config.block_size, d)
        self.ln = nn.LayerNorm(d)
        self.mix = nn.Linear(d, d)
        self.drop = nn.Dropout(config.dropout)
        self.dynamics = nn.Module()
        self.dynamics.gamma_raw = nn.Parameter(torch.zeros(1))
        self.head = nn.Linear(d, config.vocab_size)
        self.fail_after = None  # simulate a kill: raise at this training forward call
        self.calls = 0

    def forward(self, idx, targets=None):
        if self.training:
            self.calls += 1
            if self.fail_after is not None and self.calls >= self.fail_after:
                raise KeyboardInterrupt("simulated kill")
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        mean = x.cumsum(1) / torch.arange(1, T + 1, device=idx.device)[:, None]
        x = x + F.softplus(self.dynamics.gamma_raw) * self.drop(torch.relu(self.mix(self.ln(mean))))
        logits = self.head(x)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None):
        for _ in range(max_new_tokens):
            logits, _ = self(idx[:, -self.config.block_size:])
            probs = torch.softmax(logits[:, -1] / temperature, -1)
            idx = torch.cat([idx, torch.multinomial(probs, 1)], 1)
        return idx


@pytest.fixture(scope="module")
def corpus():
    return TextCorpus(generate_stories(20_000, seed=0))


def _model(corpus, seed=0, **kw):
    torch.manual_seed(seed)
    return TinyLM(TinyConfig(vocab_size=corpus.vocab_size, **kw))


def _cfg(tmp_path, **kw):
    base = dict(max_iters=8, batch_size=4, block_size=16, learning_rate=1e-2, warmup_iters=2,
                eval_interval=4, eval_iters=2, log_interval=1, progress=False,
                out_dir=str(tmp_path), device="cpu", seed=3)
    base.update(kw)
    return TrainConfig(**base)


def test_param_groups_and_schedule():
    torch.manual_seed(0)
    model = TinyLM(TinyConfig(vocab_size=10))
    cfg = TrainConfig(learning_rate=1e-3, scalar_lr=5e-2, weight_decay=0.1, warmup_iters=10,
                      max_iters=100)
    opt = configure_optimizer(model, cfg)
    names = {id(p): n for n, p in model.named_parameters()}
    groups = {g["name"]: g for g in opt.param_groups}
    assert {names[id(p)] for p in groups["dynamics"]["params"]} == {"dynamics.gamma_raw"}
    assert groups["dynamics"]["weight_decay"] == 0 and groups["dynamics"]["peak_lr"] == 5e-2
    assert {names[id(p)] for p in groups["no_decay"]["params"]} == {
        "ln.weight", "ln.bias", "mix.bias", "head.bias"}
    assert {names[id(p)] for p in groups["decay"]["params"]} == {
        "wte.weight", "wpe.weight", "mix.weight", "head.weight"}
    assert groups["decay"]["weight_decay"] == 0.1
    lrs = [get_lr(i, cfg) for i in range(101)]
    assert all(a < b for a, b in zip(lrs[:9], lrs[1:10]))  # warmup rises
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == lrs[10] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # then decays
    assert lrs[100] == pytest.approx(1e-4)
    assert lrs[55] == pytest.approx(1e-4 + 0.5 * 0.9e-3)  # half way down the cosine


def test_a_few_steps_lower_the_loss(tmp_path, corpus):
    cfg = _cfg(tmp_path, max_iters=30, eval_interval=30, eval_iters=4, sample_interval=30,
               sample_tokens=20, log_interval=10)
    res = train(_model(corpus), corpus, cfg)
    evals = [r for r in res.history if r["event"] == "eval"]
    assert [r["iter"] for r in evals] == [0, 30]
    assert evals[1]["val_loss"] < evals[0]["val_loss"] - 0.3
    assert res.best_val_loss == evals[1]["val_loss"] and res.iters == 30
    assert res.tokens_per_sec > 0 and res.num_params > 0
    # the log, the vocabulary and the checkpoint are in out_dir
    lines = [json.loads(s) for s in (tmp_path / LOG_NAME).read_text().splitlines()]
    assert lines == res.history
    assert {r["event"] for r in lines} == {"start", "train", "eval", "sample"}
    sample = next(r["text"] for r in lines if r["event"] == "sample")
    assert len(sample) == 21
    assert json.loads((tmp_path / VOCAB_NAME).read_text())["chars"] == "".join(
        corpus.tokenizer.chars)
    ck = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert ck["iter_num"] == 30 and ck["model_config"]["n_embd"] == 16
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_kill_and_resume_equals_uninterrupted(tmp_path, corpus):
    # dropout > 0 and gradient accumulation: the RNG states and data position must carry over
    kw = dict(grad_accum=2, checkpoint_interval=4, sample_interval=4, sample_tokens=5)
    full = train(_model(corpus, dropout=0.1), corpus, _cfg(tmp_path / "a", **kw))

    killed = _model(corpus, dropout=0.1)
    killed.fail_after = 2 * 5 + 1  # during step 6, after the checkpoint at step 4
    with pytest.raises(KeyboardInterrupt):
        train(killed, corpus, _cfg(tmp_path / "b", **kw))
    assert load_checkpoint(tmp_path / "b" / CHECKPOINT_NAME)["iter_num"] == 4

    fresh = _model(corpus, seed=123, dropout=0.1)  # other weights: all must come from the ckpt
    resumed = train(fresh, corpus, _cfg(tmp_path / "b", **kw), resume=True)
    a = _model(corpus, dropout=0.1)
    a.load_state_dict(load_checkpoint(tmp_path / "a" / CHECKPOINT_NAME)["model"])
    for (name, p), q in zip(a.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(p, q), name

    def losses(history):
        return [(r["event"], r["iter"], r.get("loss", r.get("val_loss", r.get("text"))))
                for r in history if r["event"] in ("train", "eval", "sample")]

    assert losses(resumed.history) == losses(full.history)
    assert resumed.best_val_loss == full.best_val_loss
    ca = load_checkpoint(tmp_path / "a" / CHECKPOINT_NAME)
    cb = load_checkpoint(tmp_path / "b" / CHECKPOINT_NAME)
    assert torch.equal(ca["rng"][0]["data"], cb["rng"][0]["data"])
    for sa, sb in zip(ca["optimizer"]["state"].values(), cb["optimizer"]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_bad_resume_never_overwrites(tmp_path, corpus):
    train(_model(corpus), corpus, _cfg(tmp_path, max_iters=4))
    path = tmp_path / CHECKPOINT_NAME
    before = path.read_bytes()
    log_before = (tmp_path / LOG_NAME).read_bytes()
    with pytest.raises(ValueError, match="already exists"):
        train(_model(corpus), corpus, _cfg(tmp_path, max_iters=4))
    with pytest.raises(ValueError, match=r"another architecture: n_embd=16 in the checkpoint, "
                                         r"32 in this run"):
        train(_model(corpus, n_embd=32), corpus, _cfg(tmp_path, max_iters=8), resume=True)
    other = TextCorpus(generate_stories(20_000, seed=0) + "#")
    with pytest.raises(ValueError, match="vocabulary differs"):
        train(TinyLM(TinyConfig(other.vocab_size)), other, _cfg(tmp_path, max_iters=8),
              resume=True)
    same_size = TextCorpus(generate_stories(20_000, seed=0).replace("Z", "#"))
    assert same_size.vocab_size == corpus.vocab_size
    with pytest.raises(ValueError, match=r"vocabulary differs from the checkpoint's .*'#'"):
        train(_model(same_size), same_size, _cfg(tmp_path, max_iters=8), resume=True)

    class OtherLM(TinyLM):
        pass

    torch.manual_seed(0)
    with pytest.raises(ValueError, match="holds a TinyLM model, this run builds a .*OtherLM"):
        train(OtherLM(TinyConfig(corpus.vocab_size)), corpus, _cfg(tmp_path, max_iters=8),
              resume=True)
    with pytest.raises(ValueError, match="larger than the val split"):
        train(_model(corpus, block_size=4096), corpus,
              _cfg(tmp_path, max_iters=8, block_size=4096), resume=True)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(_model(corpus), corpus, _cfg(tmp_path / "empty"), resume=True)
    assert path.read_bytes() == before and (tmp_path / LOG_NAME).read_bytes() == log_before


class PoisonedLM(TinyLM):
    """Diverges at a chosen training forward call: its weights become NaN."""

    poison_at = None

    def forward(self, idx, targets=None):
        if self.training and self.poison_at is not None and self.calls + 1 >= self.poison_at:
            with torch.no_grad():
                self.mix.weight.fill_(float("nan"))
        return super().forward(idx, targets)


def test_divergence_never_overwrites_the_checkpoint(tmp_path, corpus):
    # the loss is logged at steps 5 and 10 only, so the NaN of step 7 meets the checkpoint
    # of step 8 first: the one of step 4 must stay
    torch.manual_seed(0)
    model = PoisonedLM(TinyConfig(vocab_size=corpus.vocab_size))
    model.poison_at = 7
    with pytest.raises(FloatingPointError,
                       match=r"parameter \S+ is not finite at step 8 .*the last one is kept"):
        train(model, corpus, _cfg(tmp_path, max_iters=12, log_interval=5))
    ck = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert ck["iter_num"] == 4
    assert all(torch.isfinite(v).all() for v in ck["model"].values())


def test_resume_of_a_finished_run_reports_the_whole_run(tmp_path, corpus):
    first = train(_model(corpus), corpus, _cfg(tmp_path))
    ck = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    again = train(_model(corpus, seed=5), corpus, _cfg(tmp_path), resume=True)
    assert again.iters == first.iters == 8 and again.best_val_loss == first.best_val_loss
    assert again.train_time == ck["train_time"] == first.train_time
    assert again.wall_time >= ck["wall_time"] > 0
    assert again.tokens_per_sec == pytest.approx(8 * 4 * 16 / first.train_time)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world_size, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      GLOO_SOCKET_IFNAME="lo")
    torch.set_num_threads(1)
    corpus = TextCorpus(generate_stories(20_000, seed=0))
    res = train(_model(corpus), corpus, _cfg(out_dir, max_iters=3, checkpoint_interval=3,
                                            grad_accum=2))
    if rank == 1:  # every process reports the same losses
        with open(os.path.join(out_dir, "rank1.json"), "w") as f:
            json.dump({"val": res.val_loss, "train": res.train_loss}, f)


def test_ddp_two_gloo_processes_equal_one(tmp_path, corpus):
    import multiprocessing as mp

    # forked children start at once (a spawned one re-imports torch and the package)
    ctx = mp.get_context("fork")
    port = _free_port()
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, port, str(tmp_path / "ddp")))
             for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    for p in procs:
        if p.is_alive():
            p.kill()
    assert [p.exitcode for p in procs] == [0, 0]
    one = train(_model(corpus), corpus, _cfg(tmp_path / "one", max_iters=3,
                                             checkpoint_interval=3, grad_accum=2))
    two = [json.loads(s) for s in (tmp_path / "ddp" / LOG_NAME).read_text().splitlines()]
    assert [r["world_size"] for r in two if r["event"] == "start"] == [2]
    pairs = [(a, b) for a, b in zip(one.history, two) if a["event"] in ("train", "eval")]
    assert len(pairs) == 5
    for a, b in pairs:
        key = "loss" if a["event"] == "train" else "val_loss"
        assert a["iter"] == b["iter"] and math.isclose(a[key], b[key], abs_tol=1e-6), (a, b)
    rank1 = json.loads((tmp_path / "ddp" / "rank1.json").read_text())
    assert math.isclose(rank1["val"], one.val_loss, abs_tol=1e-6)
    p1 = load_checkpoint(tmp_path / "one" / CHECKPOINT_NAME)["model"]
    p2 = load_checkpoint(tmp_path / "ddp" / CHECKPOINT_NAME)["model"]
    for k in p1:
        torch.testing.assert_close(p1[k], p2[k], atol=1e-5, rtol=1e-5)


def test_gpt_dynamics_scalars_get_their_own_group():
    from graphformer.models import GPT, GPTConfig
    model = GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=2, n_head=2, n_embd=8,
                          method="nesterov"))
    opt = configure_optimizer(model, TrainConfig(scalar_lr=5e-2))
    names = {id(p): n for n, p in model.named_parameters()}
    groups = {g["name"]: g for g in opt.param_groups}
    scalars = {names[id(p)] for p in groups["dynamics"]["params"]}
    assert len(scalars) == 2 * 3 and all(n.endswith(("mu_raw", "beta_raw", "gamma_raw"))
                                         for n in scalars)
    velocity_norms = {n for n in names.values() if "velocity_norms" in n}
    assert velocity_norms and velocity_norms <= {names[id(p)] for p in groups["no_decay"]["params"]}


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize("field,value,error,match", [
    ("min_lr", -1e-3, ValueError, "min_lr must be a non-negative finite number, got -0.001"),
    ("min_lr", 2e-2, ValueError, r"min_lr \(0.02\) is larger than the peak learning_rate"),
    ("learning_rate", float("nan"), ValueError, "learning_rate must be a positive finite"),
    ("learning_rate", 0, ValueError, "learning_rate must be a positive finite"),
    ("scalar_lr", float("inf"), ValueError, "scalar_lr must be a non-negative finite"),
    ("weight_decay", -0.1, ValueError, "weight_decay must be a non-negative"),
    ("grad_clip", "1", TypeError, "grad_clip must be a number"),
    ("beta1", 1.0, ValueError, r"beta1 must be in \[0, 1\)"),
    ("beta2", -0.5, ValueError, "beta2 must be a non-negative"),
    ("max_iters", 0, ValueError, "max_iters must be a positive int, got 0"),
    ("batch_size", 2.5, TypeError, "batch_size must be a positive int, got 2.5"),
    ("grad_accum", True, TypeError, "grad_accum must be a positive int, got True"),
    ("warmup_iters", -1, ValueError, "warmup_iters must be an int >= 0"),
    ("lr_decay_iters", -5, ValueError, "lr_decay_iters must be an int >= 0"),
    ("checkpoint_interval", 0, ValueError, "checkpoint_interval must be a positive int"),
    ("sample_tokens", "many", TypeError, "sample_tokens must be an int"),
    ("seed", -1, ValueError, r"seed must be an int in \[0, "),
    ("peak_flops", 0.0, ValueError, "peak_flops must be a positive finite"),
    ("compile", "yes", TypeError, "compile must be True or False"),
    ("progress", 1, TypeError, "progress must be True or False"),
    ("sample_prompt", 3, TypeError, "sample_prompt must be a string"),
    ("dtype", "fp16", ValueError, "dtype must be 'auto', 'float32' or 'bfloat16'"),
    ("device", "gpu", ValueError, r"unknown device 'gpu'; use auto, cpu, cuda, mps or cuda:N "
                                  r"\(this machine has: cpu"),
    ("device", 0, TypeError, "device must be a string"),
    ("out_dir", 5, TypeError, "out_dir must be a path or None"),
])
def test_bad_config_values_are_refused(field, value, error, match):
    with pytest.raises(error, match=match):
        TrainConfig(**{field: value})


def test_good_config_values_are_kept():
    cfg = TrainConfig(min_lr=0.0, scalar_lr=0.0, grad_clip=0, weight_decay=0, beta1=0.0,
                      warmup_iters=0, lr_decay_iters=0, seed=0, device="CPU",
                      out_dir=None, peak_flops=1e12)
    assert cfg.resolved().min_lr == 0.0 and cfg.device == "CPU"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
def test_cuda_without_cuda_names_the_device_there(tmp_path, corpus):
    with pytest.raises(ValueError, match=r"device 'cuda' was asked for, but CUDA is not "
                                         r"available here .*this machine has: cpu"):
        train(_model(corpus), corpus, _cfg(tmp_path, device="cuda"))
    assert not tmp_path.joinpath(CHECKPOINT_NAME).exists()


def test_compile_without_a_compiler_says_so(tmp_path, corpus, monkeypatch):
    import torch._inductor.config as inductor_config
    monkeypatch.setattr(inductor_config.cpp, "cxx", ("/nonexistent/c++",))
    with pytest.raises(RuntimeError, match=r"compile=True \(--compile\) cannot run on cpu: no "
                                           r"working C\+\+ compiler .*Run without --compile"):
        train(_model(corpus), corpus, _cfg(tmp_path, compile=True))
    assert not list(tmp_path.iterdir())  # refused before a byte was written


def test_progress_bar_shows_no_nan(tmp_path, corpus, capsys):
    # evaluations at steps 0 and 2 come before the first training loss (step 4)
    train(_model(corpus), corpus, _cfg(tmp_path, max_iters=4, eval_interval=2,
                                       log_interval=4, progress=True))
    err = capsys.readouterr().err
    assert "val=" in err and "loss=" in err and "tok_s=" in err
    assert "nan" not in err
