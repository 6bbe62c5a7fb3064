r"""A training loop for language models on the causal DAG, in the style of nanoGPT's
``train.py``, that loses nothing.

:func:`train` fits any model with nanoGPT's interface, ``logits, loss = model(x, targets)``
(and ``model.generate(idx, max_new_tokens)`` for samples), on a
:class:`~graphformer.datasets.Corpus`:

* AdamW with decoupled weight decay on the >= 2-D weights only; norms, biases and the
  dynamics' scalars (parameters named ``*.dynamics.*``) are not decayed, and the scalars get
  their own learning rate ``scalar_lr``;
* linear warmup, then cosine decay to ``min_lr``; gradient clipping; gradient accumulation;
  bf16 autocast on CUDA; optional :func:`torch.compile`;
* evaluation on the validation split every ``eval_interval`` steps, samples, a JSONL log and a
  tqdm bar with the loss and tokens/s;
* checkpoints with everything a run needs to continue exactly (model, optimizer, step, the RNG
  states of torch, numpy and Python, the data generator, the model config and the vocabulary),
  written atomically; ``resume=True`` continues bitwise on CPU; a SIGTERM or Ctrl-C stops the
  run between two steps with the last checkpoint kept;
* several processes with ``torch.distributed`` (launched by ``torchrun``): ``batch_size`` is the
  global batch, every process draws the same window starts and takes its own rows, so a run
  gives the same losses on one process or on many.

One concern a module: :mod:`~graphformer.train.config`, :mod:`~graphformer.train.schedule`,
:mod:`~graphformer.train.optimizer`, :mod:`~graphformer.train.checkpoint`,
:mod:`~graphformer.train.distributed`, :mod:`~graphformer.train.evaluation`,
:mod:`~graphformer.train.log`, :mod:`~graphformer.train.signals` and the loop,
:mod:`~graphformer.train.loop`.

Example::

    from graphformer.datasets import TextCorpus
    from graphformer.models import GPT, GPTConfig
    from graphformer.train import TrainConfig, train

    corpus = TextCorpus.generated(seed=0)
    model = GPT(GPTConfig(vocab_size=corpus.vocab_size, block_size=64, n_layer=4, n_head=4,
                          n_embd=128))
    result = train(model, corpus, TrainConfig(max_iters=2000, out_dir="out/stories"))
"""
from graphformer.train.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from graphformer.train.config import TrainConfig, TrainResult
from graphformer.train.evaluation import estimate_loss
from graphformer.train.log import LOG_NAME, flops_per_token
from graphformer.train.loop import VOCAB_NAME, train
from graphformer.train.optimizer import configure_optimizer, is_dynamics_scalar
from graphformer.train.schedule import get_lr, lr_at
from graphformer.train.signals import TrainingInterrupted

__all__ = [
    "TrainConfig",
    "TrainResult",
    "train",
    "TrainingInterrupted",
    "get_lr",
    "lr_at",
    "configure_optimizer",
    "is_dynamics_scalar",
    "estimate_loss",
    "save_checkpoint",
    "load_checkpoint",
    "flops_per_token",
    "CHECKPOINT_NAME",
    "LOG_NAME",
    "VOCAB_NAME",
]
