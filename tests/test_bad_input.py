r"""Bad input gets a clear ``ValueError``/``TypeError`` that names the problem (or the
behaviour users expect), never a silent wrong answer or a crash deep inside torch: the
token DAG, the transforms, ``GPT`` (inputs, sampling, loading), datasets and
diagnostics. Loading is all or nothing: a failed load leaves the model as it was."""
import pytest
import torch
from torch_geometric.data import Data

from graphformer import CausalGraph
from graphformer.models import GPT, GPTConfig
from graphformer.transforms import AddPauseTokens, FullyAdjacentLastLayer, fully_adjacent_edges, pause_layout


def tiny(**kw):
    cfg = dict(vocab_size=40, block_size=16, n_layer=1, n_head=2, n_embd=16)
    cfg.update(kw)
    return GPT(GPTConfig(**cfg))


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_unchanged(model, before):
    after = model.state_dict()
    assert after.keys() == before.keys()
    for k in before:
        assert torch.equal(after[k], before[k]), f"{k} changed by a failed load"


# ---------------------------------------------------------------------- the shared check
def test_check_int_refuses_bools_and_floats_and_checks_bounds():
    import numpy as np

    from graphformer.checks import check_int
    from graphformer.datasets.base import check_int as reexported
    assert reexported is check_int  # the data sets' old public name still imports
    for bad in (True, False, 2.0, 2.5, "3", None):
        with pytest.raises(TypeError, match=f"n must be an int, got {bad!r}"):
            check_int("n", bad)
    with pytest.raises(ValueError, match="n must be a positive int, got True"):
        check_int("n", True, 1, error=ValueError)  # sites that raise one ValueError
    for good in (3, np.int64(3), np.uint8(3)):
        out = check_int("n", good, 1, 3)
        assert out == 3 and type(out) is int
    with pytest.raises(ValueError, match="n must be a positive int, got 0"):
        check_int("n", 0, 1)
    with pytest.raises(ValueError, match=r"n must be an int >= 2, got 1$"):
        check_int("n", np.int64(1), 2, error=TypeError)  # out of range: ValueError always
    with pytest.raises(ValueError, match=r"n must be an int in \[0, 20\], got 21"):
        check_int("n", 21, 0, 20)
    with pytest.raises(ValueError, match=r"n must be an int <= 5, got 6; hint$"):
        check_int("n", 6, high=5, hint="; hint")
    assert check_int("n", -7) == -7  # no bounds: any int
    # the call sites take numpy ints now, as Python ints
    assert type(CausalGraph.from_lengths([4], window=np.int64(2)).window) is int


# ---------------------------------------------------------------------- CausalGraph
def test_window_must_be_a_positive_int_not_a_bool():
    with pytest.raises(ValueError, match="window must be a positive int.*True"):
        CausalGraph.from_lengths([4], window=True)
    with pytest.raises(ValueError, match="window must be a positive int"):
        CausalGraph.from_lengths([4]).with_window(False)
    with pytest.raises(ValueError, match="window must be a positive int"):
        CausalGraph.from_batch(torch.zeros(3, dtype=torch.long), window=2.0)
    with pytest.raises(TypeError, match="causal must be True or False"):
        CausalGraph.from_lengths([4], causal="no")


def test_from_edge_index_names_the_batch():
    with pytest.raises(ValueError, match="edge_index has node 3 but the graph given by batch has 3 nodes"):
        CausalGraph.from_edge_index(torch.tensor([[0, 1, 2], [1, 2, 3]]), torch.zeros(3, dtype=torch.long))


def test_padded_layout_shapes_are_checked():
    graph = CausalGraph.from_lengths([2, 3])
    with pytest.raises(ValueError, match=r"one row per node \[5, ...\], got \[4, 2\]"):
        graph.to_padded(torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"padded layout \[2, 3, ...\], got \[3, 2, 1\]"):
        graph.from_padded(torch.zeros(3, 2, 1))
    with pytest.raises(ValueError, match="block_size must be a positive int"):
        graph.block_mask(block_size=0)


# ---------------------------------------------------------------------- transforms
def test_fully_adjacent_edges_refuses_bad_roots():
    with pytest.raises(ValueError, match=r"root_index has a negative node index \(-1\)"):
        fully_adjacent_edges(5, root_index=torch.tensor([-1]))
    with pytest.raises(TypeError, match="root_index must hold integer indices"):
        fully_adjacent_edges(5, root_index=torch.tensor([2.7]))
    with pytest.raises(ValueError, match="num_nodes must be an int >= 0"):
        fully_adjacent_edges(-1, root_index=torch.tensor([0]))
    with pytest.raises(ValueError, match="negative graph index"):
        fully_adjacent_edges(3, batch=torch.tensor([-1, 0, 0]), mode="all")
    with pytest.raises(ValueError, match="root_index has a negative node index"):
        FullyAdjacentLastLayer()(Data(num_nodes=3, root_index=torch.tensor([-2])))
    # the valid call still works
    assert fully_adjacent_edges(3, root_index=torch.tensor([2])).tolist() == [[0, 1, 2], [2, 2, 2]]


def test_add_pause_tokens_checks_the_data():
    bad = Data(x=torch.randn(4, 3), edge_index=torch.tensor([[0, 1], [1, 9]]))
    with pytest.raises(ValueError, match="edge_index has node 9 but the Data has 4 nodes"):
        AddPauseTokens(2)(bad)
    with pytest.raises(ValueError, match="negative node index"):
        AddPauseTokens(2)(Data(x=torch.randn(4, 3), edge_index=torch.tensor([[-1], [0]])))
    with pytest.raises(ValueError, match="root_index has node 4 but the Data has 4 nodes"):
        AddPauseTokens(2)(Data(x=torch.randn(4, 3), root_index=torch.tensor([4])))
    with pytest.raises(ValueError, match="root_mask must be a bool tensor"):
        AddPauseTokens(2)(Data(x=torch.randn(4, 3), root_mask=torch.tensor([0, 0, 0, 1])))
    with pytest.raises(ValueError, match="negative sequence id"):
        AddPauseTokens(1)(Data(x=torch.randn(2, 3), batch=torch.tensor([-1, 0])))
    with pytest.raises(ValueError, match="unknown layout 'middle'"):
        pause_layout(torch.tensor([3]), 1, "middle")
    with pytest.raises(ValueError, match="lengths must be >= 0"):
        pause_layout(torch.tensor([3, -1]), 1)
    with pytest.raises(ValueError, match="every must be a positive int, got None"):
        pause_layout(torch.tensor([3]), 1, "every")


# ---------------------------------------------------------------------- diagnostics
def test_diagnostics_refuse_nonsense():
    from graphformer import diagnostics as D
    ei = torch.tensor([[0, 1, 2], [1, 2, 3]])
    x = torch.randn(4, 3)
    with pytest.raises(TypeError, match="target must be an int, got True"):
        D.hop_distance(ei, 4, target=True)
    with pytest.raises(TypeError, match="target must be an int, got 1.5"):
        D.hop_distance(ei, 4, target=1.5)
    with pytest.raises(ValueError, match=r"pair must be two nodes \(u, v\), got \(0, 1, 2\)"):
        D.effective_resistance(ei, 4, pair=(0, 1, 2))
    with pytest.raises(TypeError, match="pair must be an int"):
        D.effective_resistance(ei, 4, pair=(0, 1.5))
    with pytest.raises(ValueError, match="negative graph index"):
        D.dirichlet_energy(x, ei, batch=torch.tensor([0, 0, -1, -1]))
    with pytest.raises(TypeError, match="batch must be an integer tensor"):
        D.dirichlet_energy(x, ei, batch=torch.zeros(4))
    empty = torch.empty(2, 0, dtype=torch.long)
    assert float(D.dirichlet_energy(torch.randn(0, 3), empty)) == 0.0  # no nodes: no energy
    lin = torch.nn.Linear(3, 3)
    with pytest.raises(ValueError, match="chunk_size must be a positive int, got 0"):
        D.jacobian_sensitivity(lin, x, 0, chunk_size=0)
    with pytest.raises(ValueError, match="max_distance must be an int >= 0, got -1"):
        D.sensitivity_vs_distance(lin, x, ei, 3, max_distance=-1)
    graph = CausalGraph.from_lengths([4])
    attn = (graph.edge_index, torch.rand(graph.num_edges, 2))
    with pytest.raises(ValueError, match="position 9 is outside sequences of length 4"):
        D.attention_to_position(attn, position=9, graph=graph)
    with pytest.raises(ValueError, match="position -1 is outside"):
        D.attention_to_position(attn, position=-1, graph=graph)
    with pytest.raises(ValueError, match=r"threshold must be a share of attention in \[0, 1\]"):
        D.attention_sink_score(attn, threshold=float("nan"), graph=graph)
    with pytest.raises(ValueError, match="threshold must be a share"):
        D.attention_sink_score(attn, threshold=2.0, graph=graph)


# ---------------------------------------------------------------------- datasets
def test_datasets_refuse_nonsense():
    from graphformer.datasets import CountOnes
    from graphformer.datasets.split import stratified_split
    from graphformer.datasets.synthetic import binary_tree_batch, packed_documents
    with pytest.raises(ValueError, match="depth must be an int in"):
        binary_tree_batch(2, True)
    with pytest.raises(ValueError, match="num_trees must be a positive int"):
        binary_tree_batch(True, 2)
    with pytest.raises(ValueError, match="mean_length must be at least 1, got nan"):
        packed_documents(2, 8, float("nan"))
    with pytest.raises(ValueError, match=r"one label per example \[num_examples\], got shape \[2, 2\]"):
        stratified_split(torch.tensor([[0, 0], [1, 1]]))
    assert sum(t.numel() for t in stratified_split(torch.tensor([[0], [0], [1], [1]]))) == 4
    with pytest.raises(ValueError, match="y is empty"):
        stratified_split(torch.tensor([], dtype=torch.long))
    data = CountOnes(4, 40)
    with pytest.raises(ValueError, match=r"a boolean index needs one entry per graph \(40\), got 2"):
        data.batch(torch.tensor([True, False]))
    with pytest.raises(TypeError, match="index must hold integers"):
        next(data.iter_batches(2, index=torch.tensor([0.5, 1.5])))
    with pytest.raises(IndexError, match="index -41 is out of range for a data set of 40"):
        data.batch([-41])
    last, by_minus_one = data.batch([len(data) - 1]), data.batch([-1])  # counts from the end
    assert by_minus_one.num_graphs == 1
    assert torch.equal(by_minus_one.x, last.x) and torch.equal(by_minus_one.y, last.y)


def test_text_batches_refuse_nonsense():
    from graphformer.datasets.text import TextCorpus
    corpus = TextCorpus("hello world, this is a text. " * 20)
    with pytest.raises(TypeError, match="batch_size must be a positive int, got True"):
        corpus.get_batch("train", True, 8)
    with pytest.raises(ValueError, match="block_size must be a positive int, got 0"):
        corpus.get_batch("train", 2, 0)
    with pytest.raises(TypeError, match="block_size must be a positive int, got 8.0"):
        corpus.get_batch("train", 2, 8.0)


# ---------------------------------------------------------------------- graph models
def test_graph_models_refuse_nonsense():
    from graphformer.models import GraphModel, HybridModel
    ei = torch.tensor([[0, 1, 2], [1, 2, 3]])
    with pytest.raises(ValueError, match="hidden_channels must be a positive int, got 0"):
        GraphModel.build("gcn", 3, 0, 2, 1)
    with pytest.raises(ValueError, match="num_layers must be a positive int, got -1"):
        GraphModel.build("gcn", 3, 8, 2, -1)
    model = GraphModel.build("gcn", 3, 8, 2, 1)
    with pytest.raises(ValueError, match=r"x must have shape \[N, 3\], got \[4, 5\]"):
        model(torch.randn(4, 5), ei)
    with pytest.raises(TypeError, match="x must be float node features"):
        model(torch.ones(4, 3, dtype=torch.long), ei)
    with pytest.raises(ValueError, match="index has node 9 but there are 4 nodes"):
        model(torch.randn(4, 3), ei, index=torch.tensor([9]))
    with pytest.raises(ValueError, match="heads must be a positive int, got 0"):
        HybridModel(3, 8, 2, heads=0)
    with pytest.raises(ValueError, match=r"x must have shape \[N, 3\], got \[4, 5\]"):
        HybridModel(3, 8, 2)(torch.randn(4, 5), ei)


# ---------------------------------------------------------------------- GPT inputs
def test_gpt_targets_outside_the_vocabulary():
    model = tiny()
    idx = torch.randint(0, 40, (2, 5))
    with pytest.raises(ValueError, match=r"target 40 is outside the vocabulary \[0, 40\)"):
        model(idx, torch.full((2, 5), 40))
    with pytest.raises(ValueError, match="target -2 is outside the vocabulary"):
        model(idx, torch.full((2, 5), -2))
    with pytest.raises(TypeError, match="targets must hold token ids"):
        model(idx, idx.float())
    with pytest.raises(ValueError, match=r"loss_mask must be a tensor of shape \[2, 5\]"):
        model(idx, idx, loss_mask=torch.ones(5))
    targets = idx.clone()
    targets[:, 0] = -1  # -1 means "no target"
    _, loss = model(idx, targets)
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="at least one token"):
        model(torch.zeros(2, 0, dtype=torch.long))


def test_generate_temperature_zero_is_greedy():
    torch.manual_seed(0)
    model = tiny().eval()
    idx = torch.randint(0, 40, (3, 4))
    out = model.generate(idx, 6, temperature=0)
    want = idx
    for _ in range(6):  # greedy decoding by hand
        logits, _ = model(want)
        want = torch.cat([want, logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, want)
    assert torch.equal(model.generate(idx, 6, temperature=0.0, top_k=3), want)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(top_k=0), ValueError, "top_k must be a positive int.*got 0.*temperature=0"),
    (dict(top_k=True), ValueError, "top_k must be a positive int"),
    (dict(temperature=-1.0), ValueError, "temperature must be a finite number >= 0"),
    (dict(temperature=float("nan")), ValueError, "temperature must be a finite number"),
    (dict(max_new_tokens=-1), ValueError, "max_new_tokens must be an int >= 0, got -1"),
    (dict(max_new_tokens=2.5), TypeError, "max_new_tokens must be an int"),
])
def test_generate_refuses_nonsense(kwargs, error, match):
    model = tiny()
    args = dict(max_new_tokens=2)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        model.generate(torch.zeros(1, 2, dtype=torch.long), **args)


# ---------------------------------------------------------------------- loading
def test_load_state_dict_of_another_configuration_changes_nothing():
    model = tiny(n_layer=2)
    before = snapshot(model)
    with pytest.raises(ValueError, match="state dict has 3 layers but this GPT has n_layer=2"):
        model.load_state_dict(tiny(n_layer=3).state_dict())
    with pytest.raises(ValueError, match="state dict has 1 layers but this GPT has n_layer=2"):
        model.load_state_dict(tiny(n_layer=1).state_dict())
    wide = tiny(n_layer=2, n_embd=32).state_dict()
    with pytest.raises(ValueError, match=r"shape of transformer.wte.weight: checkpoint \[40, 32\] "
                                         r"vs model \[40, 16\]"):
        model.load_state_dict(wide)
    # strict=False still refuses a shape mismatch before copying anything (torch
    # would copy every matching tensor first, then raise)
    mixed = {**snapshot(tiny(n_layer=2)), "transformer.wpe.weight": torch.zeros(3, 16)}
    with pytest.raises(ValueError, match="shape of transformer.wpe.weight"):
        model.load_state_dict(mixed, strict=False)
    missing = snapshot(tiny(n_layer=2))
    del missing["transformer.ln_f.bias"]
    with pytest.raises(ValueError, match="missing key 'transformer.ln_f.bias'"):
        model.load_state_dict(missing)
    with pytest.raises(ValueError, match="unexpected key 'transformer.h.dynamics.0.mu_raw'"):
        model.load_state_dict(tiny(n_layer=2, method="nesterov").state_dict())
    assert_unchanged(model, before)
    other = tiny(n_layer=2)
    model.load_state_dict(other.state_dict())  # a matching one loads
    assert_unchanged(model, snapshot(other))


transformers = pytest.importorskip("transformers")


def gpt2(n_layer=2, **kw):
    torch.manual_seed(0)
    cfg = dict(vocab_size=40, n_positions=16, n_embd=16, n_layer=n_layer, n_head=2,
               resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    cfg.update(kw)
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(**cfg))


def test_load_gpt2_state_dict_of_another_configuration_changes_nothing():
    model = tiny(n_layer=1)
    before = snapshot(model)
    with pytest.raises(ValueError, match="GPT-2 state dict has 3 layers but this GPT has n_layer=1"):
        model.load_gpt2_state_dict(gpt2(3).state_dict())
    two = tiny(n_layer=2)
    with pytest.raises(ValueError, match="GPT-2 state dict has 1 layers but this GPT has n_layer=2"):
        two.load_gpt2_state_dict(gpt2(1).state_dict())
    sd = gpt2(1).state_dict()
    del sd["transformer.h.0.mlp.c_proj.weight"]
    with pytest.raises(ValueError, match="has no 'transformer.h.0.mlp.c_proj.weight'"):
        model.load_gpt2_state_dict(sd)
    sd = {**gpt2(1).state_dict(), "transformer.h.0.attn.rotary.weight": torch.zeros(2)}
    with pytest.raises(ValueError, match="key this GPT cannot use: 'transformer.h.0.attn.rotary"):
        model.load_gpt2_state_dict(sd)
    with pytest.raises(ValueError, match=r"c_attn.weight has shape \[32, 96\]"):
        model.load_gpt2_state_dict(gpt2(1, n_embd=32).state_dict())
    with pytest.raises(ValueError, match=r"transformer.wpe.weight has shape \[8, 16\]"):
        model.load_gpt2_state_dict(gpt2(1, n_positions=8).state_dict())
    sd = dict(gpt2(1).state_dict())
    sd["lm_head.weight"] = torch.zeros(40, 16)
    with pytest.raises(ValueError, match="lm_head.weight differs from transformer.wte.weight"):
        model.load_gpt2_state_dict(sd)
    no_bias = {k: v for k, v in gpt2(1).state_dict().items() if not k.endswith(".bias")}
    with pytest.raises(ValueError, match="has no 'transformer.ln_f.bias' .this GPT has biases"):
        model.load_gpt2_state_dict(no_bias)
    assert_unchanged(model, before)


def test_from_gpt2_state_dict_bad_input():
    hf = gpt2(1)
    with pytest.raises(ValueError, match="do not record the number of heads: pass n_head="):
        GPT.from_gpt2_state_dict(hf.state_dict())
    with pytest.raises(ValueError, match="not a GPT2LMHeadModel state dict: no transformer.wte"):
        GPT.from_gpt2_state_dict({"weight": torch.zeros(2)}, n_head=2)
    with pytest.raises(ValueError, match="n_head=4 contradicts the GPT2Config .n_head=2."):
        GPT.from_gpt2_state_dict(hf, n_head=4)
    with pytest.raises(ValueError, match="n_layer is read from the GPT-2 weights"):
        GPT.from_gpt2_state_dict(hf, n_layer=3)
    with pytest.raises(ValueError, match="GPT2Config says n_layer=2 but the weights have n_layer=1"):
        GPT.from_gpt2_state_dict(hf.state_dict(), gpt2(2).config)
    with pytest.raises(ValueError, match="n_inner=32: this GPT's MLP is 4 . n_embd = 64"):
        GPT.from_gpt2_state_dict(gpt2(1, n_inner=32))
    with pytest.raises(ValueError, match="activation 'silu' has no equivalent"):
        GPT.from_gpt2_state_dict(gpt2(1, activation_function="silu"))
    with pytest.raises(ValueError, match="layer_norm_epsilon=0.001"):
        GPT.from_gpt2_state_dict(gpt2(1, layer_norm_epsilon=1e-3))
    with pytest.raises(ValueError, match="scale_attn_by_inverse_layer_idx=False"):
        GPT.from_gpt2_state_dict(gpt2(1, scale_attn_by_inverse_layer_idx=True))
    with pytest.raises(TypeError, match="config must be a transformers GPT2Config"):
        GPT.from_gpt2_state_dict(hf.state_dict(), {"n_head": 2})
    with pytest.raises(TypeError, match="takes a GPT2LMHeadModel or its state dict"):
        GPT.from_gpt2_state_dict([1, 2])
