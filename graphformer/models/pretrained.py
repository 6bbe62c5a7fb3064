r"""Weights from other implementations of the same GPT: Hugging Face's GPT-2 (its state dict,
no download) and nanoGPT's checkpoints (``ckpt.pt`` with ``model`` and ``model_args``)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import torch
from torch import Tensor, nn

from graphformer.models.gpt import GPT, GPTConfig, _layer_count

__all__ = ["gpt_from_gpt2", "gpt2_weights", "gpt_from_nanogpt", "GPT2_ACTIVATIONS"]


def _without_gpt2_buffers(state_dict: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    # GPT-2's causal-mask buffers (older transformers versions): not weights
    return {k: v for k, v in state_dict.items()
            if not k.endswith(".attn.bias") and not k.endswith(".attn.masked_bias")}


#: Hugging Face ``activation_function`` -> :class:`GPTConfig` ``activation``.
GPT2_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
                    "gelu_fast": "gelu_tanh", "gelu": "gelu", "relu": "relu"}


def _from_gpt2_config(config: Any, **sizes: int) -> Dict[str, Any]:
    r"""The :class:`GPTConfig` fields a ``GPT2Config`` sets (``n_head``, ``activation``),
    after checking that it describes weights of ``sizes`` and an architecture this GPT
    can run."""
    if not all(hasattr(config, name) for name in ("n_head", "n_embd", "n_layer",
                                                   "activation_function")):
        raise TypeError(f"config must be a transformers GPT2Config, got {type(config).__name__}")
    given = dict(vocab_size=config.vocab_size, n_embd=config.n_embd,
                 block_size=config.n_positions, n_layer=config.n_layer)
    for name, value in sizes.items():
        if given[name] != value:
            raise ValueError(f"the GPT2Config says {name}={given[name]} but the weights have "
                             f"{name}={value}")
    act = config.activation_function
    if act not in GPT2_ACTIVATIONS:
        raise ValueError(f"GPT-2 activation {act!r} has no equivalent here; supported: "
                         f"{', '.join(GPT2_ACTIVATIONS)}")
    n_inner = getattr(config, "n_inner", None)
    if n_inner is not None and n_inner != 4 * config.n_embd:
        raise ValueError(f"n_inner={n_inner}: this GPT's MLP is 4 * n_embd = {4 * config.n_embd}")
    eps = getattr(config, "layer_norm_epsilon", 1e-5)
    if eps != 1e-5:
        raise ValueError(f"layer_norm_epsilon={eps}: this GPT's LayerNorms use 1e-5")
    if not getattr(config, "scale_attn_weights", True) or getattr(
            config, "scale_attn_by_inverse_layer_idx", False):
        raise ValueError("this GPT scales attention scores by 1/sqrt(head size) only "
                         "(scale_attn_weights=True, scale_attn_by_inverse_layer_idx=False)")
    return dict(n_head=config.n_head, activation=GPT2_ACTIVATIONS[act])


def gpt_from_gpt2(state_dict: Union[Mapping[str, Tensor], nn.Module], config: Any = None,
                  cls: Optional[type] = None, **overrides) -> GPT:
    r"""A GPT with the weights of a Hugging Face GPT-2 (no download).

    ``state_dict`` is a ``GPT2LMHeadModel`` state dict, or the ``GPT2LMHeadModel``
    itself. Sizes are read from the tensors. The rest of the architecture comes
    from the ``GPT2Config`` (``config``, or the model's own): ``n_head`` and the
    activation (``gelu_new`` is ``activation="gelu_tanh"``); settings this GPT
    cannot express (another MLP width or LayerNorm epsilon, unscaled attention) are
    refused. With a bare state dict, pass ``n_head=`` (GPT-2 state dicts do not
    record it) and ``activation=`` by hand. ``overrides`` set other
    :class:`GPTConfig` fields (dropout, kernel, ...); they may not contradict the
    ``GPT2Config``."""
    if isinstance(state_dict, nn.Module):
        if config is None:
            config = getattr(state_dict, "config", None)
        state_dict = state_dict.state_dict()
    if not isinstance(state_dict, Mapping):
        raise TypeError("from_gpt2_state_dict takes a GPT2LMHeadModel or its state dict, "
                        f"got {type(state_dict).__name__}")
    sd = _without_gpt2_buffers(state_dict)
    try:
        vocab_size, n_embd = sd["transformer.wte.weight"].shape
        block_size = sd["transformer.wpe.weight"].shape[0]
    except KeyError as e:
        raise ValueError(f"not a GPT2LMHeadModel state dict: no {e.args[0]}") from None
    n_layer = _layer_count(sd, "transformer.h.")
    if n_layer is None:
        raise ValueError("not a GPT2LMHeadModel state dict: no transformer.h.<layer> keys")
    if config is not None:
        for name, value in _from_gpt2_config(config, vocab_size=vocab_size, n_embd=n_embd,
                                             block_size=block_size,
                                             n_layer=n_layer).items():
            if name in overrides and overrides[name] != value:
                raise ValueError(f"{name}={overrides[name]!r} contradicts the GPT2Config "
                                 f"({name}={value!r})")
            overrides[name] = value
    if "n_head" not in overrides:
        raise ValueError("GPT-2 state dicts do not record the number of heads: pass "
                         "n_head=, or the GPT2LMHeadModel or its GPT2Config")
    for name in ("block_size", "vocab_size", "n_layer", "n_embd", "bias"):
        if name in overrides:
            raise ValueError(f"{name} is read from the GPT-2 weights; do not pass it")
    cls = GPT if cls is None else cls
    gpt_config = GPTConfig(block_size=block_size, vocab_size=vocab_size, n_layer=n_layer,
                           n_embd=n_embd, bias="transformer.ln_f.bias" in sd, **overrides)
    model = cls(gpt_config)
    model.load_gpt2_state_dict(sd)
    return model


def gpt2_weights(self: GPT, sd: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    r"""This model's state-dict entries from GPT-2 weights (Hugging Face names,
    ``Conv1D`` layout), all checked: the layer count, every key this model needs
    (missing), every key it cannot use (unexpected) and every shape. Raises a
    :class:`ValueError` naming the first mismatch."""
    if not isinstance(sd, Mapping):
        raise TypeError(f"GPT-2 weights must be a state dict, got {type(sd).__name__}")
    sd = _without_gpt2_buffers(sd)
    C, L = self.config.n_embd, self.config.n_layer
    own = self.state_dict()
    layers = _layer_count(sd, "transformer.h.")
    if layers != L:
        raise ValueError(f"the GPT-2 state dict has {layers or 0} layers but this GPT "
                         f"has n_layer={L}")
    used = set()

    def get(key: str) -> Tensor:
        if key not in sd:
            raise ValueError(f"the GPT-2 state dict has no {key!r} (this GPT "
                             f"{'has' if self.config.bias else 'has no'} biases)")
        used.add(key)
        return sd[key]

    out: Dict[str, Tensor] = {"transformer.wte.weight": get("transformer.wte.weight"),
                              "transformer.wpe.weight": get("transformer.wpe.weight")}
    params = ["weight", "bias"] if self.config.bias else ["weight"]
    for name in params:
        out[f"transformer.ln_f.{name}"] = get(f"transformer.ln_f.{name}")
    for layer in range(L):
        hf, ours = f"transformer.h.{layer}.", f"transformer.h.layers.{layer}."
        attn, mlp = ours + "0.", ours + "1."
        for name in params:
            c_attn = get(hf + f"attn.c_attn.{name}")
            if c_attn.shape[-1] != 3 * C:
                raise ValueError(f"GPT-2 weight {hf}attn.c_attn.{name} has shape "
                                 f"{list(c_attn.shape)}; this GPT needs [..., {3 * C}]")
            parts = c_attn.t().split(C, 0) if name == "weight" else c_attn.split(C)
            for part, lin in zip(parts, ("lin_query", "lin_key", "lin_value")):
                out[attn + f"conv.{lin}.{name}"] = part
            for src, dst in (("ln_1", attn + "norm"), ("ln_2", mlp + "norm"),
                             ("attn.c_proj", attn + "out.0"),
                             ("mlp.c_fc", mlp + "conv.c_fc"),
                             ("mlp.c_proj", mlp + "conv.c_proj")):
                value = get(hf + f"{src}.{name}")
                # Conv1D stores [in, out]: a Linear weight is its transpose
                transpose = name == "weight" and not src.startswith("ln")
                out[f"{dst}.{name}"] = value.t() if transpose else value
    head = sd.get("lm_head.weight")
    if head is not None:
        used.add("lm_head.weight")
        if head.shape != out["transformer.wte.weight"].shape or not torch.equal(
                head, out["transformer.wte.weight"]):
            raise ValueError("lm_head.weight differs from transformer.wte.weight: this GPT "
                             "ties its head to the token embedding, as GPT-2 does")
    unexpected = [k for k in sd if k not in used]
    if unexpected:
        raise ValueError(f"the GPT-2 state dict has a key this GPT cannot use: "
                         f"{unexpected[0]!r}" + (f" (and {len(unexpected) - 1} more)"
                                                 if len(unexpected) > 1 else ""))
    for key, value in out.items():
        if key not in own:
            raise ValueError(f"this GPT ({self.describe()}) has no {key!r}: it is not "
                             "a GPT-2 architecture")
        if value.shape != own[key].shape:
            raise ValueError(f"GPT-2 weight for {key} has shape {list(value.shape)}, "
                             f"this model has {list(own[key].shape)}")
    return out


#: the nanoGPT ``nn.Linear`` weights that GPT-2's ``Conv1D`` stores transposed
_NANOGPT_LINEARS = (".attn.c_attn.weight", ".attn.c_proj.weight", ".mlp.c_fc.weight",
                    ".mlp.c_proj.weight")


def gpt_from_nanogpt(checkpoint: Union[str, os.PathLike, Mapping[str, Any]],
                     cls: Optional[type] = None, **overrides) -> GPT:
    r"""A GPT with the weights of a nanoGPT checkpoint: the path of its ``ckpt.pt`` or the
    dict it holds (``model``: the state dict, with ``_orig_mod.`` prefixes when it was
    compiled; ``model_args``: ``n_layer``, ``n_head``, ``n_embd``, ``block_size``, ``bias``,
    ``vocab_size``, ``dropout``). nanoGPT's GPT is GPT-2 with ``nn.Linear`` layers and the
    exact GELU, so this is :func:`gpt_from_gpt2` after a transpose. ``overrides`` set other
    :class:`GPTConfig` fields (kernel, ...); the architecture comes from ``model_args``."""
    if isinstance(checkpoint, (str, os.PathLike)):
        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no nanoGPT checkpoint there")
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, Mapping) or "model" not in checkpoint or \
            "model_args" not in checkpoint:
        raise ValueError("not a nanoGPT checkpoint: it needs 'model' and 'model_args' "
                         f"(got {sorted(checkpoint) if isinstance(checkpoint, Mapping) else type(checkpoint).__name__})")
    args = dict(checkpoint["model_args"])
    prefix = "_orig_mod."
    sd = {k[len(prefix):] if k.startswith(prefix) else k: v
          for k, v in checkpoint["model"].items()}
    hf = {k: v.t() if k.endswith(_NANOGPT_LINEARS) else v for k, v in sd.items()}
    for name in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size"):
        if name not in args:
            raise ValueError(f"the nanoGPT checkpoint's model_args has no {name!r}")
    cls = GPT if cls is None else cls
    config = GPTConfig(n_layer=args["n_layer"], n_head=args["n_head"], n_embd=args["n_embd"],
                       block_size=args["block_size"], vocab_size=args["vocab_size"],
                       bias=bool(args.get("bias", True)), dropout=args.get("dropout", 0.0),
                       activation="gelu", **overrides)
    model = cls(config)
    model.load_gpt2_state_dict(hf)
    return model
