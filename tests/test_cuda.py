r"""The CUDA paths, on a GPU (``pytest -m cuda``; every test here is skipped without CUDA,
so the CPU suite is unchanged):

* every attention kernel (auto, edge, SDPA, FlexAttention compiled) equals the edge-wise
  reference on CUDA: outputs and gradients to 1e-5 in float32; under bf16 autocast within
  ``BF16_TOL`` of the float32 reference;
* FlexAttention's backward equals SDPA's (float32, 1e-5);
* ``GPT`` under ``torch.compile`` is one graph on CUDA (``fullgraph=True``) and gives the
  eager loss and gradients;
* a one-process nccl run of the training loop (the DDP path: gradient all-reduce, gathered
  RNG states) gives the losses of the plain run.

The graphs and helpers are the CPU tests' (``tests/test_attention.py``), so both suites hold
the kernels to the same cases.
"""
import math

import pytest
import torch
import torch.distributed as dist

from graphformer.datasets import TextCorpus, generate_stories
from graphformer.graph import CausalGraph
from graphformer.models import GPT, GPTConfig
from graphformer.nn import AttentionConv, kernels
from graphformer.train import TrainConfig, train

from test_attention import KINDS, make_graph, reference, run

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

ATOL = 1e-5
#: bf16 (8 significant bits, relative rounding 2**-9) against the float32 reference: the
#: projections, scores and weighted sums are each rounded once, on values of order 1.
BF16_TOL = dict(atol=5e-2, rtol=5e-2)
CUDA_KERNELS = ("auto", "edge", "sdpa", "flex")
LENGTHS = [5, 9, 2, 7]


@pytest.fixture(autouse=True)
def exact_float32():
    r"""True float32 matmuls (the training loop turns TF32 on for speed; a test that ran
    it must not loosen the next one's arithmetic)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _layer_and_input(kind: str, seed: int = 0):
    torch.manual_seed(seed)
    graph = make_graph(kind, LENGTHS, seed).to("cuda")
    conv = AttentionConv(6, 4, heads=2, rotary=True).cuda()
    x = torch.randn(graph.num_nodes, 6, device="cuda")
    return graph, conv, x


def _assert_close(got, want, **tol):
    out, gx, gw = got[:3]
    rout, rgx, rgw = want[:3]
    torch.testing.assert_close(out.float(), rout, **tol, msg=lambda m: f"output: {m}")
    torch.testing.assert_close(gx.float(), rgx, **tol, msg=lambda m: f"grad x: {m}")
    assert gw.keys() == rgw.keys()
    for name in gw:
        torch.testing.assert_close(gw[name].float(), rgw[name], **tol,
                                   msg=lambda m, n=name: f"grad {n}: {m}")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("kernel", CUDA_KERNELS)
def test_kernel_equals_reference_float32(kind, kernel):
    graph, conv, x = _layer_and_input(kind)
    got = run(conv, x, graph, kernel)
    want = reference(conv, x, graph, got[3])
    _assert_close(got, want, atol=ATOL, rtol=0)
    assert torch.isfinite(got[0]).all()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("kernel", CUDA_KERNELS)
def test_kernel_under_bf16_autocast_is_close_to_float32_reference(kind, kernel):
    graph, conv, x = _layer_and_input(kind)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        got = run(conv, x, graph, kernel)
    assert got[0].dtype == torch.bfloat16
    want = reference(conv, x, graph, got[3].float())
    _assert_close(got, want, **BF16_TOL)


def test_auto_picks_flex_for_long_structured_sequences():
    T = kernels.FLEX_MIN_LENGTH
    dense = CausalGraph.from_lengths([T]).to("cuda")
    window = dense.with_window(T // 2)  # density about 3/8: far above the edge threshold
    cuda = torch.device("cuda")
    assert kernels.choose_kernel(window, cuda, needs_grad=True) == "flex"
    assert kernels.choose_kernel(dense, cuda, needs_grad=True) == "sdpa"
    short = CausalGraph.from_lengths([T - 1]).with_window(T // 2).to("cuda")
    assert kernels.choose_kernel(short, cuda, needs_grad=True) == "sdpa"


@pytest.mark.parametrize("kind", KINDS)
def test_flex_backward_equals_sdpa(kind):
    graph, conv, x = _layer_and_input(kind, seed=1)
    sdpa = run(conv, x, graph, "sdpa")
    flex = run(conv, x, graph, "flex", grad_out=sdpa[3])
    _assert_close(flex, sdpa[:3], atol=ATOL, rtol=0)


def _tiny_gpt(**kw) -> GPT:
    cfg = dict(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=16)
    cfg.update(kw)
    return GPT(GPTConfig(**cfg)).cuda()


@pytest.mark.parametrize("kw", [dict(), dict(method="nesterov"), dict(attention="diff"),
                                dict(pause_every=4), dict(scheme="strang")])
def test_gpt_compiles_to_one_graph_on_cuda(kw):
    torch.manual_seed(0)
    model = _tiny_gpt(**kw)
    idx = torch.randint(0, 40, (2, 16), device="cuda")
    with torch.no_grad():
        model(idx, idx)  # caches the graph and the pause layout, as test_gpt.py does
    torch._dynamo.reset()
    # fullgraph=True raises at the first graph break; bf16 autocast as in training
    compiled = torch.compile(model, fullgraph=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        _, loss = compiled(idx, idx)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        _, eager = model(idx, idx)
    eager.backward()
    torch.testing.assert_close(loss.float(), eager.float(), **BF16_TOL)
    for n, p in model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(grads[n].float(), p.grad.float(), **BF16_TOL, msg=n)
    explained = torch._dynamo.explain(model)(idx, idx)
    assert explained.graph_break_count == 0, explained.break_reasons
    torch._dynamo.reset()


def _train_run(out_dir, corpus) -> list:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=corpus.vocab_size, block_size=16, n_layer=2, n_head=2,
                          n_embd=16, dropout=0.0))
    cfg = TrainConfig(max_iters=6, batch_size=4, block_size=16, grad_accum=2,
                      learning_rate=1e-2, warmup_iters=2, eval_interval=3, eval_iters=2,
                      log_interval=1, progress=False, out_dir=str(out_dir), device="cuda",
                      dtype="float32", seed=3)
    res = train(model, corpus, cfg)
    return [(r["event"], r["iter"], r.get("loss", r.get("val_loss")), r.get("world_size"))
            for r in res.history if r["event"] in ("start", "train", "eval")]


@pytest.mark.skipif(not dist.is_available() or not dist.is_nccl_available(),
                    reason="torch without nccl")
def test_one_process_nccl_run_equals_plain_run(tmp_path):
    corpus = TextCorpus(generate_stories(20_000, seed=0))
    plain = _train_run(tmp_path / "plain", corpus)
    dist.init_process_group("nccl", store=dist.HashStore(), rank=0, world_size=1)
    try:
        ddp = _train_run(tmp_path / "nccl", corpus)
    finally:
        dist.destroy_process_group()
    assert [r[:2] for r in ddp] == [r[:2] for r in plain]
    assert plain[0][3] == ddp[0][3] == 1
    # the same arithmetic but for the order of CUDA's atomic adds (embedding backward)
    for a, b in zip(plain[1:], ddp[1:]):
        assert math.isclose(a[2], b[2], rel_tol=1e-4, abs_tol=1e-5), (a, b)
