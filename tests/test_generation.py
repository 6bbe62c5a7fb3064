"""Incremental message passing for generation: the cached path computes one new node per
token and samples the same tokens as the uncached model, for every method, scheme,
position embedding, window and pause layout."""
import pytest
import torch

from graphformer.models import GPT, GPTConfig
from graphformer.models.generation import KVCache, supports_cache

CONFIGS = {
    "gd": dict(),
    "heavyball": dict(method="heavyball"),
    "nesterov": dict(method="nesterov"),
    "nesterov_v0_zero": dict(method="nesterov", v0="zero"),
    "strang_nesterov": dict(method="nesterov", scheme="strang"),
    "euler": dict(scheme="euler"),
    "rotary": dict(rotary=True),
    "window": dict(window=5),
    "rotary_window_nesterov": dict(rotary=True, window=5, method="nesterov"),
    "pause": dict(pause_every=3),
    "pause_rotary_heavyball": dict(pause_every=3, rotary=True, method="heavyball"),
}


def _model(**kw):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=20, block_size=16, n_layer=2, n_head=2, n_embd=16, **kw))
    with torch.no_grad():  # larger weights than GPT-2's init: logits far from uniform
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_(8)
    return model.eval()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_each_new_node_equals_the_whole_forward(name):
    model = _model(**CONFIGS[name])
    assert supports_cache(model)
    length = 30 if model.config.unbounded else 16
    idx = torch.randint(0, 20, (2, length), generator=torch.Generator().manual_seed(1))
    cache = KVCache(model, 2)
    shapes = []
    norm = model.transformer.h.layers[1][0].norm
    handle = norm.register_forward_hook(lambda m, i, o: shapes.append(tuple(i[0].shape)))
    logits = [cache.feed(idx[:, :3])] + [cache.feed(idx[:, t:t + 1]) for t in range(3, length)]
    handle.remove()
    # the prompt's nodes once, then one node per token (and its pause, if one follows)
    k = model.config.pause_every
    assert shapes[0][:2] == (2, 3 + (1 if k == 3 else 0))
    assert all(s[1] in ((1, 2) if k else (1,)) for s in shapes[1:])
    for T in range(3, length + 1):
        full = model(idx[:, :T])[0][:, -1]
        torch.testing.assert_close(logits[T - 3], full, atol=2e-5, rtol=1e-5)
    if model.config.window is not None:  # a rolling cache: window - 1 keys kept
        assert all(kv[0].size(2) == model.config.window - 1 for kv in cache.keys.values())


@pytest.mark.parametrize("name", sorted(CONFIGS) + ["diff"])
@pytest.mark.parametrize("temperature,top_k", [(0, None), (1.0, None), (0.8, 5)])
def test_cached_generation_samples_the_same_tokens(name, temperature, top_k):
    model = _model(**CONFIGS.get(name, dict(attention="diff")))
    idx = torch.randint(0, 20, (2, 4), generator=torch.Generator().manual_seed(2))
    # 30 new tokens: past block_size 16, where learned positions crop and recompute
    torch.manual_seed(3)
    cached = model.generate(idx, 30, temperature=temperature, top_k=top_k)
    torch.manual_seed(3)
    plain = model.generate(idx, 30, temperature=temperature, top_k=top_k, use_cache=False)
    assert torch.equal(cached, plain)


def test_uncached_paths_where_the_cache_does_not_apply():
    assert not supports_cache(_model(attention="diff"))
    model = _model()
    model.train()
    assert not supports_cache(model)


def test_cache_does_not_call_the_whole_model_within_the_window():
    model = _model(method="nesterov")
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    model.generate(torch.zeros(1, 1, dtype=torch.long), 15)
    assert calls == []
    model.generate(torch.zeros(1, 1, dtype=torch.long), 17)  # 2 tokens past the window
    assert calls == []  # recomputed through the cache, not the uncached forward


def test_unbounded_model_reads_past_block_size_and_others_do_not():
    idx = torch.zeros(1, 40, dtype=torch.long)
    assert _model(rotary=True, window=4)(idx)[0].shape == (1, 1, 20)
    with pytest.raises(ValueError, match="block_size is only 16"):
        _model(rotary=True)(idx)


def test_cache_refuses_what_it_cannot_hold():
    model = _model()
    cache = KVCache(model, 2)
    with pytest.raises(ValueError, match="holds 2 sequences, got tokens for 1"):
        cache.feed(torch.zeros(1, 3, dtype=torch.long))
    cache = KVCache(model, 1)
    cache.feed(torch.zeros(1, 16, dtype=torch.long))
    with pytest.raises(ValueError, match="position 16 is past the model's 16 positions"):
        cache.feed(torch.zeros(1, 1, dtype=torch.long))
