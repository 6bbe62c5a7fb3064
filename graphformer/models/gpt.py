r"""A GPT language model whose blocks are message passing on the causal DAG of tokens.

Read it top to bottom like nanoGPT's ``model.py``: a config dataclass, the two oracles of
a block (attention and MLP, each after a LayerNorm), the stack that combines them with an
update method and a splitting scheme, and :class:`GPT` itself.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from torch_geometric.nn.dense.linear import Linear as PygLinear

from graphformer.graph import CausalGraph
from graphformer.nn.conv import AttentionConv, DiffAttentionConv, FeedForward
from graphformer.nn.dynamics import METHODS, SCHEMES, Oracle, Stack
from graphformer.transforms.pause import pause_layout

ATTENTIONS = ("standard", "diff")
VELOCITY_INITS = ("embedding", "zero")


@dataclass
class GPTConfig:
    r"""Everything that defines a :class:`GPT`.

    ``method`` (``"gd"``, ``"heavyball"``, ``"nesterov"``) and ``scheme``
    (``"lie_trotter"``, ``"strang"``, ``"euler"``) pick the dynamics; ``method_kwargs``
    their initial scalars. ``v0="embedding"`` gives momentum methods an initial velocity
    from their own learned token and position embeddings (the paper's GPT);
    ``v0="zero"`` starts from rest, for parameter-matched comparisons. ``pause_every=k``
    inserts a learned ``<pause>`` token after every ``k`` tokens (Goyal et al. 2024); the
    pauses' outputs are not predicted.
    """
    block_size: int = 256
    vocab_size: int = 65
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = True
    method: str = "gd"
    scheme: str = "lie_trotter"
    attention: str = "standard"
    v0: str = "embedding"
    pause_every: int = 0
    activation: str = "gelu"
    kernel: str = "auto"
    method_kwargs: Dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; valid methods: {', '.join(METHODS)}")
        if self.scheme not in SCHEMES:
            raise ValueError(f"unknown scheme {self.scheme!r}; valid schemes: {', '.join(SCHEMES)}")
        if self.attention not in ATTENTIONS:
            raise ValueError(f"unknown attention {self.attention!r}; valid: {', '.join(ATTENTIONS)}")
        if self.v0 not in VELOCITY_INITS:
            raise ValueError(f"unknown v0 {self.v0!r}; valid: {', '.join(VELOCITY_INITS)}")
        if self.pause_every < 0:
            raise ValueError(f"pause_every must be >= 0, got {self.pause_every}")

    @property
    def uses_velocity(self) -> bool:
        return METHODS[self.method].uses_velocity

    @property
    def num_positions(self) -> int:
        r"""Positions after pause insertion (the length of the token DAG)."""
        k = self.pause_every
        return self.block_size + (self.block_size // k if k else 0)


def attention_oracle(config: GPTConfig, layer: int) -> Oracle:
    r"""``Dropout(c_proj(Attn(LN(x))))``: the interaction-energy step of one layer."""
    head = config.n_embd // config.n_head
    if config.attention == "diff":
        conv = DiffAttentionConv(config.n_embd, head, heads=config.n_head, layer=layer,
                                 dropout=config.dropout, root_weight=False, bias=config.bias,
                                 kernel=config.kernel)
    else:
        conv = AttentionConv(config.n_embd, head, heads=config.n_head, dropout=config.dropout,
                             root_weight=False, bias=config.bias, kernel=config.kernel)
    out = nn.Sequential(nn.Linear(config.n_embd, config.n_embd, bias=config.bias),
                        nn.Dropout(config.dropout))
    return Oracle(conv, norm=nn.LayerNorm(config.n_embd, bias=config.bias), out=out)


def mlp_oracle(config: GPTConfig) -> Oracle:
    r"""``MLP(LN(x))``: the potential-energy step of one layer."""
    mlp = FeedForward(config.n_embd, 4 * config.n_embd, dropout=config.dropout,
                      bias=config.bias, activation=config.activation)
    return Oracle(mlp, norm=nn.LayerNorm(config.n_embd, bias=config.bias))


class GPT(nn.Module):
    r"""A GPT on the causal DAG of tokens: token and position embeddings, a
    :class:`~graphformer.nn.Stack` of attention and MLP oracles on a
    :class:`~graphformer.graph.CausalGraph`, a final LayerNorm, and a head tied to the
    token embedding. With ``method="gd"`` and ``scheme="lie_trotter"`` it is GPT-2.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        C = config.n_embd
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, C),
            wpe=nn.Embedding(config.num_positions, C),
            drop=nn.Dropout(config.dropout),
            h=Stack([[attention_oracle(config, layer), mlp_oracle(config)]
                     for layer in range(config.n_layer)],
                    method=config.method, scheme=config.scheme, channels=C,
                    method_kwargs=config.method_kwargs),
            ln_f=nn.LayerNorm(C, bias=config.bias),
        ))
        if config.uses_velocity and config.v0 == "embedding":
            self.velocity = nn.ModuleDict(dict(wte=nn.Embedding(config.vocab_size, C),
                                               wpe=nn.Embedding(config.num_positions, C)))
        else:
            self.velocity = None
        self.pause = nn.Parameter(torch.zeros(C)) if config.pause_every else None
        self.lm_head = nn.Linear(C, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying

        self.apply(self._init_weights)
        # scaled init of the residual projections, as in GPT-2 / nanoGPT
        for name, p in self.named_parameters():
            if name.endswith("out.0.weight") or name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
        if self.pause is not None:
            nn.init.normal_(self.pause, mean=0.0, std=0.02)
        self._graphs: Dict[Tuple, CausalGraph] = {}
        self._pause_layouts: Dict[Tuple, Tuple[Tensor, Tensor]] = {}
        print(f"number of parameters: {self.get_num_params() / 1e6:.2f}M")

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, PygLinear)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def get_num_params(self, non_embedding: bool = True) -> int:
        r"""Parameter count; by default without the position embeddings (as nanoGPT:
        the token embedding counts, since it is tied to the head)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wpe.weight.numel()
        return n

    def graph(self, batch_size: int, length: int, device: torch.device) -> CausalGraph:
        r"""The causal DAG of ``batch_size`` sequences of ``length`` tokens (cached)."""
        key = (batch_size, length, str(device))
        if key not in self._graphs:
            self._graphs = {key: CausalGraph.from_lengths([length] * batch_size).to(device)}
        return self._graphs[key]

    def forward(self, idx: Tensor, targets: Optional[Tensor] = None,
                loss_mask: Optional[Tensor] = None) -> Tuple[Tensor, Optional[Tensor]]:
        r"""Logits ``[B, T, vocab]`` (only the last position when ``targets`` is None)
        and the cross-entropy loss (targets ``-1`` and ``loss_mask == 0`` are skipped)."""
        self._check_tokens(idx)
        B, T = idx.shape
        idx_dag, real, real_index = self.insert_pauses(idx)
        L = idx_dag.size(1)
        pos = torch.arange(L, device=idx.device)

        x = self.embed(self.transformer.wte, self.transformer.wpe, idx_dag, pos, real, self.pause)
        x = self.transformer.drop(x)
        v0 = None
        if self.velocity is not None:
            v0 = self.embed(self.velocity.wte, self.velocity.wpe, idx_dag, pos, real, None)

        graph = self.graph(B, L, idx.device)
        x = self.transformer.h(x.view(B * L, -1), graph, v0=None if v0 is None else v0.view(B * L, -1))
        x = self.transformer.ln_f(x).view(B, L, -1)
        if real_index is not None:  # drop the pause positions: their outputs are not predicted
            x = x[:, real_index]

        if targets is None:
            return self.lm_head(x[:, [-1], :]), None
        logits = self.lm_head(x)
        if targets.shape != (B, T):
            raise ValueError(f"targets must have shape {[B, T]}, got {list(targets.shape)}")
        targets = targets.clone()
        if loss_mask is not None:
            targets[loss_mask == 0] = -1
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1),
                               ignore_index=-1)
        return logits, loss

    @staticmethod
    def embed(wte: nn.Embedding, wpe: nn.Embedding, idx: Tensor, pos: Tensor,
              real: Optional[Tensor], pause: Optional[Tensor]) -> Tensor:
        r"""Token plus position embedding; pause slots get ``pause`` (or zero) as token."""
        tok = wte(idx.clamp(min=0))
        if real is not None:
            fill = pause.view(1, 1, -1) if pause is not None else tok.new_zeros(())
            tok = torch.where(real.view(1, -1, 1), tok, fill)
        return tok + wpe(pos)

    def insert_pauses(self, idx: Tensor) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
        r"""With ``pause_every=k``: the token sequence with a pause slot (id ``-1``)
        after every ``k`` tokens (the ``"every"`` layout of
        :class:`~graphformer.transforms.AddPauseTokens`), the mask of real slots and
        their positions. The layout is cached per length, so that a compiled forward
        has no data-dependent shapes."""
        k = self.config.pause_every
        if not k:
            return idx, None, None
        B, T = idx.shape
        key = (T, str(idx.device))
        if key not in self._pause_layouts:
            _, index, pause_mask = pause_layout(torch.tensor([T]), 1, "every", k)
            self._pause_layouts = {key: (~pause_mask.to(idx.device), index.to(idx.device))}
        real, index = self._pause_layouts[key]
        out = idx.new_full((B, real.numel()), -1)
        out[:, index] = idx
        return out, real, index

    def _check_tokens(self, idx: Tensor) -> None:
        if idx.dim() != 2:
            raise ValueError(f"idx must have shape [batch, time], got {list(idx.shape)}")
        if idx.dtype not in (torch.long, torch.int32, torch.int64):
            raise TypeError(f"idx must hold token ids (torch.long), got {idx.dtype}")
        if idx.size(1) > self.config.block_size:
            raise ValueError(f"cannot forward a sequence of length {idx.size(1)}: "
                             f"block_size is only {self.config.block_size}")
        if torch.compiler.is_compiling():
            return  # the value check syncs and breaks the graph; eager calls still do it
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.config.vocab_size):
            bad = int(idx.min()) if int(idx.min()) < 0 else int(idx.max())
            raise ValueError(f"token id {bad} is outside the vocabulary "
                             f"[0, {self.config.vocab_size})")

    @torch.no_grad()
    def generate(self, idx: Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: Optional[int] = None) -> Tensor:
        r"""Samples ``max_new_tokens`` tokens after ``idx`` ``[B, T]``, feeding back at most
        ``block_size`` tokens of context each time."""
        for _ in range(max_new_tokens):
            context = idx[:, -self.config.block_size:]
            logits, _ = self(context)
            logits = logits[:, -1, :] / temperature
            if top_k is not None:
                v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                logits[logits < v[:, [-1]]] = -float("inf")
            next_id = torch.multinomial(F.softmax(logits, dim=-1), num_samples=1)
            idx = torch.cat((idx, next_id), dim=1)
        return idx

    # ------------------------------------------------------------------ state dicts
    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        r"""As :meth:`torch.nn.Module.load_state_dict`, with a clear error when the state
        dict comes from another configuration."""
        own = self.state_dict()
        if strict:
            missing = sorted(set(own) - set(state_dict))
            unexpected = sorted(set(state_dict) - set(own))
            shapes = [k for k in own if k in state_dict and own[k].shape != state_dict[k].shape]
            if missing or unexpected or shapes:
                parts = []
                if missing:
                    parts.append(f"missing {missing[:4]}{'...' if len(missing) > 4 else ''}")
                if unexpected:
                    parts.append(f"unexpected {unexpected[:4]}{'...' if len(unexpected) > 4 else ''}")
                if shapes:
                    k = shapes[0]
                    parts.append(f"shape of {k}: checkpoint {list(state_dict[k].shape)} vs "
                                 f"model {list(own[k].shape)}")
                raise ValueError("state dict does not match this GPT configuration "
                                 f"({self.describe()}): " + "; ".join(parts))
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def describe(self) -> str:
        c = self.config
        return (f"n_layer={c.n_layer}, n_head={c.n_head}, n_embd={c.n_embd}, "
                f"vocab_size={c.vocab_size}, method={c.method}, scheme={c.scheme}, "
                f"attention={c.attention}, v0={c.v0}")

    @classmethod
    def from_gpt2_state_dict(cls, state_dict: Dict[str, Tensor], **overrides) -> "GPT":
        r"""A GPT with the weights of a Hugging Face ``GPT2LMHeadModel`` state dict object
        (no download). Sizes are read from the tensors; ``overrides`` set other config
        fields (``activation="gelu_tanh"`` matches GPT-2's ``gelu_new``)."""
        sd = {k: v for k, v in state_dict.items() if not k.endswith(".attn.bias")
              and not k.endswith(".attn.masked_bias")}
        try:
            vocab_size, n_embd = sd["transformer.wte.weight"].shape
            block_size = sd["transformer.wpe.weight"].shape[0]
        except KeyError as e:
            raise ValueError(f"not a GPT2LMHeadModel state dict: no {e.args[0]}") from None
        n_layer = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("transformer.h."))
        if "n_head" not in overrides:
            raise ValueError("GPT-2 state dicts do not record the number of heads: pass n_head=")
        config = GPTConfig(block_size=block_size, vocab_size=vocab_size, n_layer=n_layer,
                           n_embd=n_embd, bias="transformer.ln_f.bias" in sd, **overrides)
        model = cls(config)
        model.load_gpt2_state_dict(sd)
        return model

    @torch.no_grad()
    def load_gpt2_state_dict(self, sd: Dict[str, Tensor]) -> None:
        r"""Copies GPT-2 weights (Hugging Face names, ``Conv1D`` layout) into this model."""
        C = self.config.n_embd
        own = self.state_dict()

        def put(name: str, value: Tensor) -> None:
            if own[name].shape != value.shape:
                raise ValueError(f"GPT-2 weight for {name} has shape {list(value.shape)}, "
                                 f"this model has {list(own[name].shape)}")
            own[name].copy_(value)

        put("transformer.wte.weight", sd["transformer.wte.weight"])
        put("transformer.wpe.weight", sd["transformer.wpe.weight"])
        for name in ("weight", "bias"):
            if f"transformer.ln_f.{name}" in sd:
                put(f"transformer.ln_f.{name}", sd[f"transformer.ln_f.{name}"])
        for layer in range(self.config.n_layer):
            hf, ours = f"transformer.h.{layer}.", f"transformer.h.layers.{layer}."
            attn, mlp = ours + "0.", ours + "1."
            w = sd[hf + "attn.c_attn.weight"].t()  # Conv1D: [in, 3C] -> [3C, in]
            for part, lin in zip(w.split(C, 0), ("lin_query", "lin_key", "lin_value")):
                put(attn + f"conv.{lin}.weight", part)
            if hf + "attn.c_attn.bias" in sd:
                for part, lin in zip(sd[hf + "attn.c_attn.bias"].split(C), ("lin_query", "lin_key", "lin_value")):
                    put(attn + f"conv.{lin}.bias", part)
            put(attn + "out.0.weight", sd[hf + "attn.c_proj.weight"].t())
            put(mlp + "conv.c_fc.weight", sd[hf + "mlp.c_fc.weight"].t())
            put(mlp + "conv.c_proj.weight", sd[hf + "mlp.c_proj.weight"].t())
            for name in ("weight", "bias"):
                for src, dst in (("ln_1", attn + "norm"), ("ln_2", mlp + "norm"),
                                 ("attn.c_proj", attn + "out.0"), ("mlp.c_fc", mlp + "conv.c_fc"),
                                 ("mlp.c_proj", mlp + "conv.c_proj")):
                    if name == "bias" and hf + f"{src}.bias" in sd:
                        put(f"{dst}.bias", sd[hf + f"{src}.bias"])
                    elif name == "weight" and src.startswith("ln"):
                        put(f"{dst}.weight", sd[hf + f"{src}.weight"])

    def config_dict(self) -> dict:
        return asdict(self.config)
