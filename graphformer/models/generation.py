r"""Incremental message passing for generation (a KV cache on the causal DAG).

Generating token :math:`t` adds one node to the causal DAG and its in-edges from the
earlier nodes. Nothing an earlier node computed changes (its in-edges are all from nodes
before it), so each layer's messages from earlier nodes are kept: the keys and values of
every attention sub-step. The dynamics' state is per node: the velocity of
:class:`~graphformer.nn.Nesterov` and :class:`~graphformer.nn.HeavyBall` passes from layer
to layer *within* a node, so it is computed for the new node only, like its state ``x``.
Each new token therefore costs one node's worth of work per layer, for every update method
(``gd``, ``heavyball``, ``nesterov``) and splitting scheme.

Which path applies where:

* **within the context window** (``block_size`` tokens): the cached path is exact;
* **learned absolute positions, past the window**: cropping the context to its last
  ``block_size`` tokens moves every token to another position, which changes every node's
  state, so nothing can be kept: each step recomputes the cropped context, as nanoGPT does
  (the cache is refilled from it);
* **rotary positions without a window, past the window**: the same crop and recompute;
* **rotary positions with a sliding window** (``rotary=True, window=w``): the model reads
  sequences of any length and a node sees the ``w`` latest positions only, so the cache
  keeps the last ``w - 1`` keys and values per sub-step (a rolling cache), exact at any
  length;
* **pause tokens** (``pause_every=k``): a pause node is added after every ``k``-th token,
  as the uncached model's layout has it; its keys and values are cached like a token's;
* **differential attention**, and a model in training mode (dropout): the uncached path.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from graphformer.nn.conv import AttentionConv, DiffAttentionConv
from graphformer.nn.conv.attention import rotary_embedding

__all__ = ["KVCache", "supports_cache", "sample_next"]


def sample_next(logits: Tensor, temperature: float, top_k: Optional[int]) -> Tensor:
    r"""The next token ``[B, 1]`` from the last logits ``[B, V]``: the most likely with
    ``temperature=0``, else sampled from the softmax of ``logits / temperature`` over the
    ``top_k`` most likely tokens (``None``: all).

    Example:
        >>> import torch
        >>> from graphformer.models.generation import sample_next
        >>> logits = torch.tensor([[0.1, 2.0, 0.3]])            # one row, 3 tokens
        >>> sample_next(logits, temperature=0, top_k=None)      # greedy: the most likely
        tensor([[1]])
        >>> sample_next(logits, temperature=1.0, top_k=1)       # top-1 sampling: the same
        tensor([[1]])
    """
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None:
        v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
        logits[logits < v[:, [-1]]] = -float("inf")
    return torch.multinomial(F.softmax(logits, dim=-1), num_samples=1)


def supports_cache(model) -> bool:
    r"""Whether :class:`KVCache` can run this GPT exactly: every attention oracle is an
    :class:`~graphformer.nn.AttentionConv` (not differential attention), and the model is
    in evaluation mode (no dropout).

    Example:
        >>> from graphformer.models import GPT, GPTConfig
        >>> from graphformer.models.generation import supports_cache
        >>> model = GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=16))
        >>> supports_cache(model), supports_cache(model.eval())  # training mode: no cache
        (False, True)
    """
    if model.training:
        return False
    for layer in model.transformer.h.layers:
        for oracle in layer:
            if isinstance(oracle.conv, DiffAttentionConv):
                return False
    return True


class KVCache:
    r"""The state of generation for a batch of ``B`` sequences: per attention sub-step,
    the keys and values ``[B, H, S, d]`` of the nodes so far (the last ``window - 1`` with
    a sliding window) and their positions; and the layout of the DAG so far (its length,
    the tokens since the last pause).

    :meth:`feed` adds tokens ``[B, n]`` as new nodes (and the pause nodes that follow
    them), computes those nodes only, and returns the logits ``[B, V]`` of the last token.
    """

    def __init__(self, model, batch_size: int) -> None:
        self.model = model
        self.batch_size = batch_size
        stack = model.transformer.h
        # what stays fixed while generating, computed once: the scalars of the dynamics and
        # the fused query/key/value weights (the GEMM AttentionConv.project runs)
        self.coefficients = [method.coefficients() for method in stack.dynamics]
        self.qkv: Dict[Tuple[int, int], Tuple[Tensor, Optional[Tensor]]] = {}
        for li, layer in enumerate(stack.layers):
            for i, oracle in enumerate(layer):
                conv = oracle.conv
                if isinstance(conv, AttentionConv):
                    lins = (conv.lin_query, conv.lin_key, conv.lin_value)
                    bias = None if lins[0].bias is None else torch.cat([m.bias for m in lins])
                    self.qkv[li, i] = (torch.cat([m.weight for m in lins]), bias)
        self.reset()

    def reset(self) -> None:
        r"""Forget everything: the next :meth:`feed` starts a sequence at position 0."""
        self.length = 0  # nodes of the DAG so far, pauses included
        self.tokens = 0  # real tokens so far
        self.keys: Dict[Tuple[int, int], Tuple[Tensor, Tensor, Tensor]] = {}
        self.filled = 0  # nodes in the key/value buffers (no window)

    # ------------------------------------------------------------------ layout
    def _layout(self, n: int, device: torch.device) -> Tuple[List[int], List[bool]]:
        r"""Positions of the next nodes for ``n`` new tokens, and which are real tokens
        (``False``: a pause node after every ``pause_every``-th token)."""
        k = self.model.config.pause_every
        real = []
        for _ in range(n):
            real.append(True)
            self.tokens += 1
            if k and self.tokens % k == 0:
                real.append(False)
        positions = list(range(self.length, self.length + len(real)))
        self.length += len(real)
        return positions, real

    # ------------------------------------------------------------------ forward
    @torch.no_grad()
    def feed(self, idx: Tensor) -> Tensor:
        r"""Adds the tokens ``idx`` ``[B, n]`` to the DAG; returns the logits ``[B, V]`` at
        the last of them."""
        model = self.model
        model._check_tokens(idx)
        B, n = idx.shape
        if B != self.batch_size:
            raise ValueError(f"this cache holds {self.batch_size} sequences, got tokens for {B}")
        positions, real = self._layout(n, idx.device)
        limit = model.config.num_positions
        if positions[-1] >= limit and not model.config.unbounded:
            raise ValueError(f"position {positions[-1]} is past the model's {limit} positions: "
                             f"reset() and feed the cropped context")
        pos = torch.tensor(positions, device=idx.device)
        real_t = torch.tensor(real, device=idx.device)
        tok = idx.new_full((B, len(real)), -1)
        tok[:, real_t] = idx
        is_real = None if all(real) else real_t
        tr = model.transformer
        x = model.embed(tr.wte, tr.wpe, tok, pos, is_real, model.pause)  # [B, n', C]
        v = None
        if model.velocity is not None:
            v = model.embed(model.velocity.wte, model.velocity.wpe, tok, pos, is_real, None)
        stack = tr.h
        for li, (oracles, method) in enumerate(zip(stack.layers, stack.dynamics)):
            for k, substep in enumerate(stack.plan):
                x, v = method.step(k, x, v, self._direction(li, oracles, substep, pos),
                                   self.coefficients[li])
        self.filled += len(real)
        last = max(i for i, r in enumerate(real) if r)
        return model.lm_head(tr.ln_f(x[:, last]))

    def _direction(self, layer: int, oracles, substep, pos: Tensor):
        def direction(point: Tensor) -> Tensor:
            total = None
            for i, weight in substep:
                d = self._oracle((layer, i), oracles[i], point, pos)
                d = d if weight == 1.0 else weight * d
                total = d if total is None else total + d
            return total
        return direction

    def _oracle(self, key: Tuple[int, int], oracle, x: Tensor, pos: Tensor) -> Tensor:
        h = oracle.norm(x) if oracle.norm is not None else x
        if isinstance(oracle.conv, AttentionConv):
            h = self._attend(key, oracle.conv, h, pos)
        else:  # a node-wise layer (the MLP): the new nodes only, no messages
            h = oracle.conv(h)
        if oracle.activation is not None:
            h = oracle.activation(h)
        return oracle.out(h) if oracle.out is not None else h

    def _attend(self, key: Tuple[int, int], conv: AttentionConv, h: Tensor,
                pos: Tensor) -> Tensor:
        r"""The new nodes' attention over the cached nodes and themselves; their keys and
        values join the cache."""
        B, n, C = h.shape
        H, d = conv.heads, conv.out_channels
        q, k, v = F.linear(h.reshape(B * n, C), *self.qkv[key]).view(B * n, 3, H, d).unbind(1)
        if conv.rotary:
            p = pos.repeat(B)
            q, k = rotary_embedding(q, p), rotary_embedding(k, p)
        q, k, v = (t.view(B, n, H, d).transpose(1, 2) for t in (q, k, v))
        window = self.model.config.window
        if window is None:  # buffers for the whole context, filled in place
            if key not in self.keys:
                size = self.model.config.num_positions
                self.keys[key] = (k.new_empty(B, H, size, d), v.new_empty(B, H, size, d),
                                  pos.new_empty(size))
            kb, vb, pb = self.keys[key]
            a, b = self.filled, self.filled + n
            kb[:, :, a:b], vb[:, :, a:b], pb[a:b] = k, v, pos
            k, v, kpos = kb[:, :, :b], vb[:, :, :b], pb[:b]
        elif key in self.keys:
            k0, v0, p0 = self.keys[key]
            k, v, kpos = torch.cat([k0, k], 2), torch.cat([v0, v], 2), torch.cat([p0, pos])
        else:
            kpos = pos
        mask = None
        if n > 1 or (window is not None and kpos.numel() > window):
            mask = kpos.view(1, -1) <= pos.view(-1, 1)
            if window is not None:
                mask = mask & (pos.view(-1, 1) - kpos.view(1, -1) < window)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        if window is not None:  # a rolling cache: the next node sees window - 1 of these
            start = max(0, kpos.numel() - (window - 1))
            self.keys[key] = (k[:, :, start:], v[:, :, start:], kpos[start:])
        out = out.transpose(1, 2).reshape(B, n, H * d) if conv.concat else out.mean(dim=1)
        if conv.lin_skip is not None:
            out = out + conv.lin_skip(h)
        return out
