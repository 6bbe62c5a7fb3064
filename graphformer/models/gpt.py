r"""A GPT language model whose blocks are message passing on the causal DAG of tokens.

Read it top to bottom like nanoGPT's ``model.py``: a config dataclass, the two oracles of
a block (attention and MLP, each after a LayerNorm), the stack that combines them with an
update method and a splitting scheme, and :class:`GPT` itself.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from torch_geometric.nn.dense.linear import Linear as PygLinear

from graphformer.checks import check_int
from graphformer.graph import CausalGraph
from graphformer.nn.conv import AttentionConv, DiffAttentionConv, FeedForward
from graphformer.nn.dynamics import METHODS, SCHEMES, Oracle, Stack
from graphformer.transforms.pause import pause_layout

logger = logging.getLogger(__name__)

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
    pauses' outputs are not predicted. ``rotary=True`` puts rotary position embeddings in
    the attention instead of the learned absolute ones (no ``wpe``); ``window=w`` lets a
    token attend to the ``w`` latest positions only (a sliding-window
    :class:`~graphformer.graph.CausalGraph`). A model with both has no limit of length:
    it reads any sequence, and generation keeps a rolling cache of ``w`` positions.

    Example:
        >>> from graphformer.models import GPT, GPTConfig
        >>> config = GPTConfig(vocab_size=65, block_size=32, n_layer=2, n_head=2, n_embd=32,
        ...                    method="nesterov")
        >>> config.method, config.block_size
        ('nesterov', 32)
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
    rotary: bool = False
    window: Optional[int] = None

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
        if self.rotary and (self.n_embd // self.n_head) % 2:
            raise ValueError(f"rotary=True needs an even head size, got "
                             f"{self.n_embd // self.n_head}")
        if self.window is not None:
            self.window = check_int("window", self.window, 1, error=ValueError,
                                    hint="; None means no window")

    @property
    def unbounded(self) -> bool:
        r"""Whether the model reads sequences of any length: no learned positions to run
        out of (``rotary``) and a bounded receptive field (``window``)."""
        return self.rotary and self.window is not None

    @property
    def uses_velocity(self) -> bool:
        return METHODS[self.method].uses_velocity

    @property
    def num_positions(self) -> int:
        r"""Positions after pause insertion (the length of the token DAG)."""
        k = self.pause_every
        return self.block_size + (self.block_size // k if k else 0)


def _layer_count(state_dict: Mapping[str, Tensor], prefix: str) -> Optional[int]:
    r"""``1 +`` the largest layer index ``i`` of the keys ``{prefix}{i}.…`` (``None``
    when there are none)."""
    found = [k[len(prefix):].split(".", 1)[0] for k in state_dict if k.startswith(prefix)]
    indices = [int(i) for i in found if i.isdigit()]
    return 1 + max(indices) if indices else None


def attention_oracle(config: GPTConfig, layer: int) -> Oracle:
    r"""``Dropout(c_proj(Attn(LN(x))))``: the interaction-energy step of one layer.

    Example:
        >>> import torch
        >>> from graphformer import CausalGraph
        >>> from graphformer.models import GPTConfig
        >>> from graphformer.models.gpt import attention_oracle
        >>> config = GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=16)
        >>> oracle = attention_oracle(config, layer=0)
        >>> oracle.conv, oracle(torch.randn(4, 16), CausalGraph.from_lengths([4])).shape
        (AttentionConv(16, 8, heads=2), torch.Size([4, 16]))
    """
    head = config.n_embd // config.n_head
    if config.attention == "diff":
        conv = DiffAttentionConv(config.n_embd, head, heads=config.n_head, layer=layer,
                                 dropout=config.dropout, root_weight=False, bias=config.bias,
                                 kernel=config.kernel, rotary=config.rotary)
    else:
        conv = AttentionConv(in_channels=config.n_embd, out_channels=head, heads=config.n_head,
                             dropout=config.dropout, root_weight=False, bias=config.bias,
                             kernel=config.kernel, rotary=config.rotary)
    out = nn.Sequential(nn.Linear(config.n_embd, config.n_embd, bias=config.bias),
                        nn.Dropout(config.dropout))
    return Oracle(conv, norm=nn.LayerNorm(config.n_embd, bias=config.bias), out=out)


def mlp_oracle(config: GPTConfig) -> Oracle:
    r"""``MLP(LN(x))``: the potential-energy step of one layer.

    Example:
        >>> import torch
        >>> from graphformer import CausalGraph
        >>> from graphformer.models import GPTConfig
        >>> from graphformer.models.gpt import mlp_oracle
        >>> config = GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=16)
        >>> oracle = mlp_oracle(config)
        >>> oracle.conv, oracle(torch.randn(4, 16), CausalGraph.from_lengths([4])).shape
        (FeedForward(16, 64), torch.Size([4, 16]))
    """
    mlp = FeedForward(config.n_embd, 4 * config.n_embd, dropout=config.dropout,
                      bias=config.bias, activation=config.activation)
    return Oracle(mlp, norm=nn.LayerNorm(config.n_embd, bias=config.bias))


class GPT(nn.Module):
    r"""A GPT on the causal DAG of tokens: token and position embeddings, a
    :class:`~graphformer.nn.Stack` of attention and MLP oracles on a
    :class:`~graphformer.graph.CausalGraph`, a final LayerNorm, and a head tied to the
    token embedding. With ``method="gd"`` and ``scheme="lie_trotter"`` it is GPT-2.

    Example:
        >>> import torch
        >>> from graphformer.models import GPT, GPTConfig
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = GPT(GPTConfig(vocab_size=65, block_size=32, n_layer=2, n_head=2, n_embd=32))
        >>> idx = torch.randint(0, 65, (2, 16))
        >>> logits, loss = model(idx, idx)               # nanoGPT's contract
        >>> logits.shape
        torch.Size([2, 16, 65])
        >>> model.generate(idx[:, :1], max_new_tokens=5).shape  # incremental (KV cache)
        torch.Size([2, 6])
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        C = config.n_embd
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, C),
            wpe=None if config.rotary else nn.Embedding(config.num_positions, C),
            drop=nn.Dropout(config.dropout),
            h=Stack([[attention_oracle(config, layer), mlp_oracle(config)]
                     for layer in range(config.n_layer)],
                    method=config.method, scheme=config.scheme, channels=C,
                    method_kwargs=config.method_kwargs),
            ln_f=nn.LayerNorm(C, bias=config.bias),
        ))
        if config.uses_velocity and config.v0 == "embedding":
            self.velocity = nn.ModuleDict(dict(
                wte=nn.Embedding(config.vocab_size, C),
                wpe=None if config.rotary else nn.Embedding(config.num_positions, C)))
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
        logger.info("number of parameters: %.2fM", self.get_num_params() / 1e6)

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
        if non_embedding and self.transformer.wpe is not None:
            n -= self.transformer.wpe.weight.numel()
        return n

    def graph(self, batch_size: int, length: int, device: torch.device) -> CausalGraph:
        r"""The causal DAG of ``batch_size`` sequences of ``length`` tokens (cached)."""
        key = (batch_size, length, str(device))
        if key not in self._graphs:
            self._graphs = {key: CausalGraph.from_lengths(
                [length] * batch_size, window=self.config.window).to(device)}
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
        self._check_targets(targets, loss_mask, B, T)
        logits = self.lm_head(x)
        targets = targets.clone()
        if loss_mask is not None:
            targets[loss_mask == 0] = -1
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1),
                               ignore_index=-1)
        return logits, loss

    @staticmethod
    def embed(wte: nn.Embedding, wpe: Optional[nn.Embedding], idx: Tensor, pos: Tensor,
              real: Optional[Tensor], pause: Optional[Tensor]) -> Tensor:
        r"""Token plus position embedding (none with rotary positions); pause slots get
        ``pause`` (or zero) as token."""
        tok = wte(idx.clamp(min=0))
        if real is not None:
            fill = pause.view(1, 1, -1) if pause is not None else tok.new_zeros(())
            tok = torch.where(real.view(1, -1, 1), tok, fill)
        return tok if wpe is None else tok + wpe(pos)

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
        if not isinstance(idx, Tensor):
            raise TypeError(f"idx must be a torch.Tensor of token ids [batch, time], "
                            f"got {type(idx).__name__}")
        if idx.dim() != 2:
            raise ValueError(f"idx must have shape [batch, time], got {list(idx.shape)}")
        if idx.dtype not in (torch.long, torch.int32, torch.int64):
            raise TypeError(f"idx must hold token ids (torch.long), got {idx.dtype}")
        if idx.size(0) == 0 or idx.size(1) == 0:
            raise ValueError(f"idx must hold at least one sequence of at least one token, "
                             f"got shape {list(idx.shape)}")
        if idx.size(1) > self.config.block_size and not self.config.unbounded:
            raise ValueError(f"cannot forward a sequence of length {idx.size(1)}: "
                             f"block_size is only {self.config.block_size}")
        if torch.compiler.is_compiling():
            return  # the value check syncs and breaks the graph; eager calls still do it
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.config.vocab_size):
            bad = int(idx.min()) if int(idx.min()) < 0 else int(idx.max())
            raise ValueError(f"token id {bad} is outside the vocabulary "
                             f"[0, {self.config.vocab_size})")

    def _check_targets(self, targets: Tensor, loss_mask: Optional[Tensor], B: int,
                       T: int) -> None:
        if not isinstance(targets, Tensor):
            raise TypeError(f"targets must be a torch.Tensor [batch, time], got "
                            f"{type(targets).__name__}")
        if targets.shape != (B, T):
            raise ValueError(f"targets must have shape {[B, T]}, got {list(targets.shape)}")
        if targets.dtype not in (torch.long, torch.int32, torch.int64):
            raise TypeError(f"targets must hold token ids (torch.long), got {targets.dtype}")
        if loss_mask is not None and (not isinstance(loss_mask, Tensor)
                                      or loss_mask.shape != (B, T)):
            got = list(loss_mask.shape) if isinstance(loss_mask, Tensor) else type(loss_mask).__name__
            raise ValueError(f"loss_mask must be a tensor of shape {[B, T]}, got {got}")
        if torch.compiler.is_compiling():
            return
        bad = (targets < -1) | (targets >= self.config.vocab_size)
        if bool(bad.any()):
            raise ValueError(f"target {int(targets[bad][0])} is outside the vocabulary "
                             f"[0, {self.config.vocab_size}) (use -1 for positions without "
                             "a target)")

    @torch.no_grad()
    def generate(self, idx: Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: Optional[int] = None, use_cache: bool = True) -> Tensor:
        r"""Samples ``max_new_tokens`` tokens after ``idx`` ``[B, T]``. ``temperature=0`` is
        greedy decoding (the most likely token every time); ``top_k`` keeps the ``k`` most
        likely tokens (``None``: all).

        With ``use_cache`` (in evaluation mode) each new token is one new node of the DAG,
        computed against the cached keys and values of the earlier ones
        (:class:`~graphformer.models.generation.KVCache`); it samples the same tokens as
        ``use_cache=False``, which runs the whole context every time. Past ``block_size``
        tokens the context is cropped to the last ``block_size`` and recomputed, as nanoGPT
        does, except for a model with rotary positions and a sliding window, which reads
        the whole sequence (with a rolling cache)."""
        from graphformer.models.generation import KVCache, sample_next, supports_cache
        max_new_tokens = check_int("max_new_tokens", max_new_tokens, 0)
        if (isinstance(temperature, bool) or not isinstance(temperature, (int, float))
                or not math.isfinite(temperature) or temperature < 0):
            raise ValueError(f"temperature must be a finite number >= 0 (0: greedy "
                             f"decoding), got {temperature!r}")
        if top_k is not None:
            top_k = check_int("top_k", top_k, 1, error=ValueError,
                              hint="; None keeps all tokens, temperature=0 is greedy decoding")
        self._check_tokens(idx)
        block, unbounded = self.config.block_size, self.config.unbounded
        cache = KVCache(self, idx.size(0)) if use_cache and supports_cache(self) else None
        logits = cache.feed(idx) if cache is not None else None
        for step in range(max_new_tokens):
            if cache is None:
                context = idx if unbounded else idx[:, -block:]
                logits = self(context)[0][:, -1, :]
            next_id = sample_next(logits, temperature, top_k)
            idx = torch.cat((idx, next_id), dim=1)
            if cache is not None and step < max_new_tokens - 1:
                if idx.size(1) <= block or unbounded:
                    logits = cache.feed(next_id)
                else:  # past the window with positions that move: recompute the crop
                    cache.reset()
                    logits = cache.feed(idx[:, -block:])
        return idx

    # ------------------------------------------------------------------ state dicts
    def check_state_dict(self, state_dict: Mapping[str, Tensor], strict: bool = True) -> None:
        r"""Raises a :class:`ValueError` naming the first mismatch between ``state_dict``
        and this model (a layer count, a missing or unexpected key, a shape), before any
        weight is copied. With ``strict=False`` only the shapes of shared keys count."""
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a mapping of names to tensors, got "
                            f"{type(state_dict).__name__}")
        own = self.state_dict()
        prefix = f"({self.describe()})"
        layers = _layer_count(state_dict, "transformer.h.layers.")
        if strict and layers is not None and layers != self.config.n_layer:
            raise ValueError(f"state dict has {layers} layers but this GPT has "
                             f"n_layer={self.config.n_layer} {prefix}")
        if strict:
            for key in own:
                if key not in state_dict:
                    raise ValueError(f"state dict does not match this GPT configuration "
                                     f"{prefix}: missing key {key!r}")
            for key in state_dict:
                if key not in own:
                    raise ValueError(f"state dict does not match this GPT configuration "
                                     f"{prefix}: unexpected key {key!r}")
        for key, value in state_dict.items():
            if key in own:
                if not isinstance(value, Tensor):
                    raise TypeError(f"state dict entry {key!r} is a "
                                    f"{type(value).__name__}, not a tensor")
                if value.shape != own[key].shape:
                    raise ValueError(f"state dict does not match this GPT configuration "
                                     f"{prefix}: shape of {key}: checkpoint "
                                     f"{list(value.shape)} vs model {list(own[key].shape)}")

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        r"""As :meth:`torch.nn.Module.load_state_dict`, but all or nothing: a state dict
        from another configuration is refused by :meth:`check_state_dict`, naming the first
        mismatch, before any weight is copied (torch would copy the matching tensors
        first), so the model is left as it was."""
        self.check_state_dict(state_dict, strict=strict)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def describe(self) -> str:
        c = self.config
        return (f"n_layer={c.n_layer}, n_head={c.n_head}, n_embd={c.n_embd}, "
                f"vocab_size={c.vocab_size}, method={c.method}, scheme={c.scheme}, "
                f"attention={c.attention}, v0={c.v0}")

    # ------------------------------------------------------------------ other checkpoints
    @classmethod
    def from_gpt2_state_dict(cls, state_dict: Union[Mapping[str, Tensor], nn.Module],
                             config: Any = None, **overrides) -> "GPT":
        r"""A GPT with the weights of a Hugging Face GPT-2 (no download); see
        :func:`graphformer.models.pretrained.gpt_from_gpt2`."""
        from graphformer.models.pretrained import gpt_from_gpt2
        return gpt_from_gpt2(state_dict, config, cls=cls, **overrides)

    @classmethod
    def from_nanogpt(cls, checkpoint: Union[str, "os.PathLike", Mapping[str, Any]],
                     **overrides) -> "GPT":
        r"""A GPT with the weights of a nanoGPT checkpoint (its ``ckpt.pt``, or the loaded
        dict with ``model`` and ``model_args``):
        ``model = GPT.from_nanogpt("out-shakespeare-char/ckpt.pt")``; see
        :func:`graphformer.models.pretrained.gpt_from_nanogpt`."""
        from graphformer.models.pretrained import gpt_from_nanogpt
        return gpt_from_nanogpt(checkpoint, cls=cls, **overrides)

    def gpt2_weights(self, sd: Mapping[str, Tensor]) -> Dict[str, Tensor]:
        r"""This model's state-dict entries from GPT-2 weights; see
        :func:`graphformer.models.pretrained.gpt2_weights`."""
        from graphformer.models.pretrained import gpt2_weights
        return gpt2_weights(self, sd)

    @torch.no_grad()
    def load_gpt2_state_dict(self, sd: Mapping[str, Tensor]) -> None:
        r"""Copies GPT-2 weights (Hugging Face names, ``Conv1D`` layout) into this model,
        all or nothing: :meth:`gpt2_weights` checks every key and shape first. Parameters
        GPT-2 does not have (momentum scalars, velocity embeddings, the pause token) keep
        their values."""
        weights = self.gpt2_weights(sd)
        own = self.state_dict()
        for key, value in weights.items():
            own[key].copy_(value)

    def config_dict(self) -> dict:
        return asdict(self.config)
