r"""The one fit loop of the studies' graph and sequence tasks: mini-batches of a model's
read-out against class labels, Adam (AdamW with weight decay) under a
:class:`~graphformer.studies.graph_tasks.Budget`, the train accuracy measured every
``eval_every`` steps, the test accuracy at the evaluation with the best train accuracy.

A batch is anything with ``y`` (the labels) and ``logits(model)`` (the model's predictions
at the read-out): :class:`~graphformer.studies.graph_tasks.SameTopologyBatch` for the trees,
:class:`~graphformer.studies.sequence_tasks.SequenceBatch` for the causal sequences.
"""
from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Callable, Dict, Iterable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from graphformer import schedule

if TYPE_CHECKING:  # pragma: no cover
    from graphformer.studies.graph_tasks import Budget


@torch.no_grad()
def accuracy(model: nn.Module, loader: Iterable) -> float:
    r"""Share of the ``loader``'s examples whose read-out prediction is right."""
    model.eval()
    right = total = 0
    for batch in loader:
        right += int((batch.logits(model).argmax(-1) == batch.y).sum())
        total += batch.y.numel()
    return right / max(total, 1)


def warmup_cosine(step: int, total: int, warmup: float) -> float:
    r"""The learning-rate factor after ``step`` of ``total`` steps, with a warm-up over the
    first ``warmup`` share of them (:func:`graphformer.schedule.warmup_cosine`)."""
    return schedule.warmup_cosine(step, total, math.ceil(warmup * total))


def fit(model: nn.Module, budget: "Budget", train: Iterable, train_eval: Iterable,
        test: Iterable, *, num_train: int, forward: Optional[nn.Module] = None,
        progress: Optional[Callable[[float], None]] = None) -> Dict[str, float]:
    r"""Trains ``model`` on the batches of ``train`` (one pass is an epoch) under ``budget``
    (see :class:`~graphformer.studies.graph_tasks.Budget`: its optimizer, schedule,
    evaluation interval and stops) and measures it on ``train_eval`` and ``test``.

    Every ``eval_every`` steps the train accuracy is measured on ``train_eval``; at each
    evaluation that improves it by more than ``budget.min_gain`` the test accuracy is
    measured on ``test``. Training stops at train accuracy 1.0, after ``max_steps``, after
    ``patience`` evaluations without a gain, or after ``max_seconds``.

    Args:
        num_train (int): the training examples (the epochs count passes over them).
        forward (nn.Module, optional): what computes the training logits (e.g. the
            compiled ``model``); the evaluations run ``model`` itself.
        progress (callable, optional): called with the share of the step budget done
            after every evaluation.

    Returns the best train accuracy, the test accuracy at that evaluation, the steps and
    epochs run, the wall time and the process's CPU time (the fairer clock on a shared
    machine when torch runs one thread)."""
    forward = model if forward is None else forward
    opt = torch.optim.AdamW(model.parameters(), lr=budget.lr, weight_decay=budget.weight_decay) \
        if budget.weight_decay else torch.optim.Adam(model.parameters(), lr=budget.lr)
    eval_every, max_steps = budget.steps(num_train)
    sched = step_lr = None
    if budget.schedule == "plateau":
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="max", factor=0.5, patience=budget.lr_patience, threshold=budget.min_gain,
            threshold_mode="abs")
    else:
        step_lr = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: warmup_cosine(s, max_steps, budget.warmup))
    best_train, best_test, best_eval, evals, step, seen = -1.0, 0.0, 0, 0, 0, 0
    start, cpu_start = time.perf_counter(), time.process_time()
    while step < max_steps:
        model.train()
        for batch in train:
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(batch.logits(forward), batch.y)
            loss.backward()
            opt.step()
            if step_lr is not None:
                step_lr.step()
            step += 1
            seen += batch.y.numel()
            if step % eval_every == 0 or step == max_steps:
                break
        if step % eval_every and step < max_steps:
            continue  # the epoch ended between two evaluations
        evals += 1
        train_acc = accuracy(model, train_eval)
        if sched is not None:
            sched.step(train_acc)
        if progress is not None:
            progress(step / max_steps)
        if train_acc > best_train + budget.min_gain:
            best_train, best_eval = train_acc, evals
            best_test = accuracy(model, test)
        if best_train >= 1.0 or (budget.patience is not None
                                 and evals - best_eval >= budget.patience):
            break
        if budget.max_seconds is not None and time.perf_counter() - start > budget.max_seconds:
            break
    return dict(train_acc=best_train, test_acc=best_test, steps=step,
                epochs=round(seen / num_train, 2), seconds=time.perf_counter() - start,
                cpu_seconds=time.process_time() - cpu_start)
