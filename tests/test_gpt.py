import networkx as nx
import pytest
import torch
from torch_geometric.utils import from_networkx

from graphformer import CausalGraph
from graphformer.models import GPT, GPTConfig, GraphModel, HybridModel
from graphformer.nn import AttentionConv, DiffAttentionConv

transformers = pytest.importorskip("transformers")


def tiny(**kw):
    cfg = dict(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=16)
    cfg.update(kw)
    return GPT(GPTConfig(**cfg))


def small_gpt2(activation="gelu_new", **kw):
    r"""A small randomly initialised Hugging Face GPT-2 (no download)."""
    torch.manual_seed(0)
    cfg = dict(vocab_size=50, n_positions=32, n_embd=32, n_layer=2, n_head=4,
               activation_function=activation, resid_pdrop=0.0, embd_pdrop=0.0,
               attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    cfg.update(kw)
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(**cfg)).eval()


def assert_same_logits(ours, hf):
    ours.eval()
    idx = torch.randint(0, hf.config.vocab_size, (3, 21))
    with torch.no_grad():
        ref = hf(idx, labels=idx)
        logits, loss = ours(idx[:, :-1], idx[:, 1:])
    torch.testing.assert_close(logits, ref.logits[:, :-1], atol=1e-5, rtol=0)
    torch.testing.assert_close(loss, ref.loss, atol=1e-5, rtol=0)


@pytest.mark.parametrize("activation", ["gelu_new", "gelu"])
def test_gpt_equals_huggingface_gpt2(activation):
    hf = small_gpt2(activation)
    ours = GPT.from_gpt2_state_dict(hf.state_dict(), n_head=4,
                                    activation="gelu_tanh" if activation == "gelu_new" else "gelu")
    assert_same_logits(ours, hf)


@pytest.mark.parametrize("activation", ["gelu_new", "gelu", "relu"])
@pytest.mark.parametrize("form", ["model", "config"])
def test_gpt_from_gpt2_model_or_config_reads_heads_and_activation(activation, form):
    r"""``n_head`` and the activation come from the ``GPT2LMHeadModel`` (or its
    ``GPT2Config``): nothing by hand."""
    hf = small_gpt2(activation, n_head=8, n_layer=3)
    ours = (GPT.from_gpt2_state_dict(hf) if form == "model"
            else GPT.from_gpt2_state_dict(hf.state_dict(), hf.config))
    assert ours.config.n_head == 8 and ours.config.n_layer == 3
    assert_same_logits(ours, hf)


def test_gpt_from_gpt2_without_biases_and_with_overrides():
    hf = small_gpt2()
    sd = {k: v for k, v in hf.state_dict().items() if not k.endswith(".bias")}
    with torch.no_grad():  # zero biases are what a bias-free model computes
        for name, p in hf.named_parameters():
            if name.endswith(".bias"):
                p.zero_()
    ours = GPT.from_gpt2_state_dict(sd, hf.config, dropout=0.1, kernel="edge")
    assert ours.config.bias is False and ours.config.dropout == 0.1
    assert_same_logits(ours, hf)


def test_velocity_embedding_is_the_only_extra_parameter_set():
    gd = tiny(method="gd")
    nz = tiny(method="nesterov", v0="zero")
    ne = tiny(method="nesterov", v0="embedding")
    extra_scalars = sum(p.numel() for n, p in nz.named_parameters() if ".dynamics." in n)
    assert nz.get_num_params() == gd.get_num_params() + extra_scalars
    assert ne.get_num_params(False) - nz.get_num_params(False) == 40 * 16 + 16 * 16


@pytest.mark.parametrize("kw", [dict(method="heavyball", scheme="strang"),
                                dict(method="nesterov", scheme="euler", attention="diff"),
                                dict(pause_every=3)])
def test_variants_train_and_generate(kw):
    torch.manual_seed(0)
    model = tiny(**kw)
    idx = torch.randint(0, 40, (4, 16))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(15):
        _, loss = model(idx[:, :-1], idx[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < first
    out = model.generate(idx[:, :4], 14, top_k=5)
    assert out.shape == (4, 18)


def test_pause_positions_are_not_predicted_and_inputs_causal():
    model = tiny(pause_every=2).eval()
    idx = torch.randint(0, 40, (2, 9))
    logits, _ = model(idx, idx)
    assert logits.shape == (2, 9, 40)
    # changing a later token never changes an earlier prediction (causality with pauses)
    idx2 = idx.clone()
    idx2[:, 6] = (idx2[:, 6] + 1) % 40
    logits2, _ = model(idx2, idx2)
    torch.testing.assert_close(logits[:, :6], logits2[:, :6])
    assert not torch.allclose(logits[:, 6:], logits2[:, 6:])


def test_diff_attention_with_zero_lambda_equals_attention():
    torch.manual_seed(0)
    g = CausalGraph.from_lengths([5, 8])
    x = torch.randn(13, 12)
    diff = DiffAttentionConv(12, 4, heads=3, lambda_init=0.0, head_norm=False)
    with torch.no_grad():
        for p in (diff.lambda_q1, diff.lambda_k1, diff.lambda_q2, diff.lambda_k2):
            p.zero_()
    assert float(diff.lambda_()) == 0.0
    attn = AttentionConv(12, 4, heads=3)
    sd = attn.state_dict()
    for name in ("lin_query", "lin_key"):
        sd[f"{name}.weight"] = diff.state_dict()[f"{name}.weight"][:12]
        sd[f"{name}.bias"] = diff.state_dict()[f"{name}.bias"][:12]
    for name in ("lin_value", "lin_skip"):
        for t in ("weight", "bias"):
            sd[f"{name}.{t}"] = diff.state_dict()[f"{name}.{t}"]
    attn.load_state_dict(sd)
    for kernel in ("edge", "sdpa"):
        torch.testing.assert_close(diff(x, g, kernel=kernel), attn(x, g, kernel=kernel),
                                   atol=1e-6, rtol=0)


def test_diff_attention_kernels_agree():
    torch.manual_seed(0)
    g = CausalGraph.from_lengths([6, 3]).with_window(3)
    x = torch.randn(9, 8, requires_grad=True)
    conv = DiffAttentionConv(8, 4, heads=2, layer=2)
    a = conv(x, g, kernel="edge")
    b = conv(x, g, kernel="sdpa")
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_bad_config_and_input():
    with pytest.raises(ValueError, match="divisible by n_head"):
        GPTConfig(n_embd=10, n_head=3)
    with pytest.raises(ValueError, match="valid methods"):
        GPTConfig(method="adam")
    with pytest.raises(ValueError, match="valid schemes"):
        GPTConfig(scheme="leapfrog")
    model = tiny()
    with pytest.raises(ValueError, match="block_size is only 16"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match="token id 40 is outside the vocabulary"):
        model(torch.full((1, 4), 40))
    other = tiny(n_layer=3)
    with pytest.raises(ValueError, match="state dict has 3 layers but this GPT has n_layer=2"):
        model.load_state_dict(other.state_dict())
    nest = tiny(method="nesterov")
    with pytest.raises(ValueError, match="unexpected"):
        model.load_state_dict(nest.state_dict())
    model.load_state_dict(tiny().state_dict())  # same config round-trips


def test_graph_model_and_hybrid_on_networkx_graph():
    torch.manual_seed(0)
    data = from_networkx(nx.karate_club_graph())
    x = torch.randn(data.num_nodes, 8)
    for conv in ("gcn", "gin", "gat", "ggnn", "attention", "deepsets"):
        model = GraphModel.build(conv, 8, 16, 2, num_layers=2, method="nesterov",
                                 **({"heads": 2} if conv in ("gat", "attention") else {}))
        out, states = model(x, data.edge_index, return_states=True)
        assert out.shape == (34, 2) and len(states) == 3
    model = GraphModel.build("gin", [5, 7], 16, 3, num_layers=2, readout="mean")
    assert model(torch.randint(0, 5, (34, 2)), data.edge_index).shape == (1, 3)
    hybrid = HybridModel(8, 16, 2, num_layers=2, local="gcn", heads=4, scheme="euler")
    assert hybrid(x, data.edge_index).shape == (34, 2)


@pytest.mark.parametrize("kw", [dict(), dict(method="nesterov"), dict(attention="diff"),
                                dict(pause_every=4), dict(scheme="strang")])
def test_gpt_forward_is_one_graph_under_torch_compile(kw):
    """Once its graph and pause layout are cached (the first call), the forward has no
    graph break: no data-dependent shape and no host sync (what --compile relies on)."""
    model = tiny(**kw)
    idx = torch.randint(0, 40, (2, 16))
    model(idx, idx)
    explained = torch._dynamo.explain(model)(idx, idx)
    assert explained.graph_break_count == 0, explained.break_reasons
    torch._dynamo.reset()
