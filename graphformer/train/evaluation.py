r"""Evaluation: the loss on fixed batches of a split, and samples from the model."""
from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.distributed as dist
from torch import nn

from graphformer.datasets.text import Corpus

__all__ = ["estimate_loss", "sample_text"]


@torch.no_grad()
def estimate_loss(model: nn.Module, corpus: Corpus, split: str = "val", *, eval_iters: int,
                  batch_size: int, block_size: int, seed: int = 0,
                  device: torch.device | str = "cpu", autocast=None, rank: int = 0,
                  world_size: int = 1) -> float:
    r"""Mean loss over :obj:`eval_iters` random batches of a split, drawn from a generator
    seeded with :obj:`seed` (the same batches at every call). With several processes, each
    evaluates its rows of every batch and the means are averaged.

    Example:
        >>> import math
        >>> from graphformer.datasets import TextCorpus
        >>> from graphformer.models import GPT, GPTConfig
        >>> from graphformer.train import estimate_loss
        >>> corpus = TextCorpus("abcdefghij" * 20)                # 10 characters
        >>> model = GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=16))
        >>> loss = estimate_loss(model, corpus, eval_iters=2, batch_size=4, block_size=8)
        >>> abs(loss - math.log(10)) < 0.5                        # untrained: about ln 10
        True
    """
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    total = torch.zeros((), device=device)
    for _ in range(eval_iters):
        x, y = corpus.get_batch(split, batch_size, block_size, gen, rank=rank,
                                world_size=world_size, device=device)
        with autocast if autocast is not None else nullcontext():
            _, loss = model(x, y)
        total += loss.float()
    total /= eval_iters
    if world_size > 1:
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        total /= world_size
    model.train(was_training)
    return total.item()


def sample_text(model: nn.Module, corpus: Corpus, prompt: str, num_tokens: int, seed: int,
                device: torch.device) -> str:
    r"""``num_tokens`` tokens sampled by ``model.generate`` after :obj:`prompt` (its
    characters in the vocabulary; token 0 if none is), decoded. Seeded, and the caller's
    random state is left alone."""
    if not hasattr(model, "generate"):
        return ""
    tok = corpus.tokenizer
    ids = [tok.stoi[c] for c in prompt if c in tok.stoi] if tok else []
    idx = torch.tensor([ids or [0]], dtype=torch.long, device=device)
    was_training = model.training
    model.eval()
    devices = [device] if device.type == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        out = model.generate(idx, num_tokens)
    model.train(was_training)
    ids = out[0].tolist()
    return tok.decode(ids) if tok is not None else " ".join(map(str, ids))
