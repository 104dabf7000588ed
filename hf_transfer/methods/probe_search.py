"""A cached probe picks its own regularisation: k-fold cross-validation on the training features only.

A head trained on cached features costs seconds, so before the real fit the probe tries each point of
a small grid (AdamW weight decay x learning-rate scale) on stratified folds of the TRAINING features,
every fold and point at once (one batched matrix product per step: the models differ only in their
parameters), with the run's own recipe: AdamW, the schedule with its warm-up, the batch, the epochs,
gradient clipping, label smoothing, one cached view per example drawn per epoch as the real fit draws
it. The point whose held-out predictions, pooled over the folds, are most often right (then: lowest
held-out loss, then: first in the grid) is chosen, and the real fit trains on all training features
through the engine with it. The validation set is never read here.

Linear-probe protocols choose their regularisation so (a sweep with held-out data, e.g. CLIP's and
MAE's linear probes; scikit-learn's `LogisticRegressionCV`); here the held-out data comes from the
training set, so the validation score stays an honest estimate of the model's accuracy.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from ..core.rng import example_seed, view_of

if TYPE_CHECKING:
    from ..config.schema import TrainConfig

logger = logging.getLogger(__name__)

# Above this many training examples the folds are cut from a stratified sample of this size: the search
# stays a few seconds on a CPU, and a large set barely needs the regularisation it would find.
MAX_SEARCH_EXAMPLES = 4096


@dataclass(frozen=True)
class SearchPoint:
    weight_decay: float
    lr: float


@dataclass(frozen=True)
class ProbeSet:
    """What a probe trains on: cached features [examples, views, dim] (view 0: the evaluation view) and
    their labels [examples]."""

    features: torch.Tensor
    labels: torch.Tensor


@dataclass(frozen=True)
class SearchResult:
    """The chosen point, how many folds chose it, and every point's pooled held-out accuracy and loss."""

    chosen: SearchPoint
    folds: int
    examples: int  # training examples the folds were cut from
    scores: list[dict[str, float]]  # per grid point: weight_decay, lr, accuracy, loss
    seconds: float = 0.0  # the search's own time

    def describe(self) -> str:
        tried = ", ".join(f"{s['weight_decay']:g}/{s['lr']:g}: {s['accuracy']:.3f}" for s in self.scores)
        return (
            f"weight decay {self.chosen.weight_decay:g}, lr {self.chosen.lr:g}, chosen by {self.folds}-fold "
            f"cross-validation on {self.examples} training examples (weight decay/lr: held-out accuracy: {tried})"
        )


def search_regularisation(
    head: nn.Module, data: ProbeSet, grid: list[SearchPoint], folds: int, settings: TrainConfig, batch_size: int
) -> SearchResult | None:
    """Cross-validate every point of `grid` for training `head` (its current parameters are every fold's
    start) on `data`'s features and labels; None when there are too few examples to fold (under 4). Folds:
    `folds`, or fewer when a class has fewer examples (at least 2: a class with one example is then missing
    from one fold's training part, which costs every grid point alike). `batch_size`: examples per
    optimizer step over every process."""
    start, labels = time.perf_counter(), data.labels
    if len(labels) < 4:
        logger.info("The probe's regularisation is not searched: %d training examples are too few to fold", len(labels))
        return None
    counts = torch.bincount(labels)
    k = max(2, min(folds, int(counts[counts > 0].min())))
    sample = _stratified_sample(labels, MAX_SEARCH_EXAMPLES, settings.seed)
    data = ProbeSet(data.features[sample], labels[sample])
    labels = data.labels
    fold_of = _stratified_folds(labels, k, settings.seed)
    train_idx = [torch.nonzero(fold_of != f).flatten() for f in range(k)]
    held_idx = [torch.nonzero(fold_of == f).flatten() for f in range(k)]
    batch = min(batch_size, min(len(t) for t in train_idx))
    plans = [_fold_plan(t, batch, settings, len(labels), f) for f, t in enumerate(train_idx)]
    epochs = 1 + max(epoch for plan in plans for _, epoch, _ in plan)
    views = _view_table(sample, data.features.shape[1], epochs, settings.seed)
    with _threads(1):
        state = _train(head, data, grid, plans, settings, views)
        correct, loss = _held_out(head, state, data, held_idx, len(grid))
    n = len(labels)
    scores = [
        {"weight_decay": p.weight_decay, "lr": p.lr, "accuracy": correct[g] / n, "loss": loss[g] / n}
        for g, p in enumerate(grid)
    ]
    best = min(range(len(grid)), key=lambda g: (-scores[g]["accuracy"], scores[g]["loss"], g))
    seconds = round(time.perf_counter() - start, 2)
    return SearchResult(chosen=grid[best], folds=k, examples=len(labels), scores=scores, seconds=seconds)


def _stratified_sample(labels: torch.Tensor, limit: int, seed: int) -> torch.Tensor:
    """All indices, or at most `limit` of them keeping each class's share (a seeded choice)."""
    if len(labels) <= limit:
        return torch.arange(len(labels))
    generator = torch.Generator().manual_seed(seed)
    keep = []
    for c in torch.unique(labels):
        members = torch.nonzero(labels == c).flatten()
        share = max(2, round(limit * len(members) / len(labels)))
        keep.append(members[torch.randperm(len(members), generator=generator)[:share]])
    return torch.sort(torch.cat(keep)).values


def _stratified_folds(labels: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """Fold of each example: each class's examples, shuffled (seeded), dealt round the k folds in turn."""
    generator = torch.Generator().manual_seed(seed)
    fold_of = torch.empty(len(labels), dtype=torch.long)
    offset = 0
    for c in torch.unique(labels):
        members = torch.nonzero(labels == c).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        fold_of[members] = (torch.arange(len(members)) + offset) % k
        offset += len(members)  # the next class starts where this one stopped: folds stay even in size
    return fold_of


@dataclass
class _Models:
    """The stacked parameters of every (grid point, fold) model: model m = point m // folds, fold m % folds."""

    params: dict[str, torch.Tensor]  # name -> [models, *shape]
    folds: int


def _train(
    head: nn.Module,
    data: ProbeSet,
    grid: list[SearchPoint],
    plans: list[list[tuple[torch.Tensor, int, float]]],
    s: TrainConfig,
    views: torch.Tensor,
) -> _Models:
    """Every (point, fold) model trained on its fold's training part (`plans`, see _fold_plan) as the engine
    trains a head: AdamW (torch's update, written for stacked models: one learning rate and weight decay per
    model, no decay on 1-d parameters), each model's gradient clipped to its own norm. `views`: [epochs,
    examples], the cached view each example is drawn at in each epoch."""
    k, features, labels = len(plans), data.features, data.labels
    n_models = len(grid) * k
    fold = torch.arange(n_models) % k
    start = {name: p.detach().float() for name, p in head.named_parameters()}
    params = {name: p.unsqueeze(0).repeat(n_models, *[1] * p.dim()).requires_grad_() for name, p in start.items()}
    moments = {name: _Moments(torch.zeros_like(p), torch.zeros_like(p)) for name, p in params.items()}
    lr = torch.tensor([p.lr for p in grid]).repeat_interleave(k)
    decay = torch.tensor([p.weight_decay for p in grid]).repeat_interleave(k)
    call = vmap(lambda p, x: functional_call(head, p, (x,)), randomness="different")
    mode = head.training
    head.train()
    try:
        for step in range(max(len(plan) for plan in plans)):
            # A fold whose schedule has ended (folds differ by a batch at most) repeats its last batch at lr 0.
            now = [plan[min(step, len(plan) - 1)] for plan in plans]
            index = torch.stack([rows for rows, _, _ in now])[fold]  # [models, batch]
            epoch = torch.tensor([e for _, e, _ in now])[fold]
            active = torch.tensor([float(step < len(plan)) for plan in plans])[fold]
            rate = lr * torch.tensor([factor for _, _, factor in now])[fold] * active
            logits = call(params, features[index, views[epoch.unsqueeze(1), index]])
            loss = F.cross_entropy(
                logits.flatten(0, 1).float(),
                labels[index].flatten(),
                reduction="none",
                label_smoothing=s.label_smoothing,
            )
            # Each model's own mean loss: the gradient of their sum is each model's own gradient.
            grads = torch.autograd.grad(loss.view(n_models, -1).mean(dim=1).sum(), list(params.values()))
            with torch.no_grad():
                grads = dict(zip(params, grads, strict=True))
                if s.max_grad_norm is not None:  # as clip_grad_norm_, per model
                    norm = torch.sqrt(sum(g.flatten(1).pow(2).sum(dim=1) for g in grads.values()))
                    clip = (s.max_grad_norm / (norm + 1e-6)).clamp(max=1.0)
                    grads = {name: g * _per_model(clip, g) for name, g in grads.items()}
                for name, p in params.items():
                    _adamw_step(p, grads[name], moments[name], step + 1, rate, decay if start[name].dim() > 1 else None)
    finally:
        head.train(mode)
    return _Models({name: p.detach() for name, p in params.items()}, k)


class _Moments(NamedTuple):
    """AdamW's running averages of one parameter's gradient and squared gradient, [models, ...]."""

    first: torch.Tensor
    second: torch.Tensor


def _adamw_step(
    p: torch.Tensor, grad: torch.Tensor, moments: _Moments, step: int, lr: torch.Tensor, decay: torch.Tensor | None
) -> None:
    """torch.optim.AdamW's update (betas 0.9/0.999, eps 1e-8, as the engine's) of stacked models [models,
    ...], each at its own learning rate `lr` [models] (0: left as it is) and weight decay `decay` [models]."""
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    first, second = moments
    lr = _per_model(lr, p)
    if decay is not None:
        p.mul_(1 - lr * _per_model(decay, p))
    first.lerp_(grad, 1 - beta1)
    second.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    denom = (second.sqrt() / math.sqrt(1 - beta2**step)).add_(eps)
    p.sub_(lr / (1 - beta1**step) * first / denom)


def _per_model(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[models] -> [models, 1, 1, ...], broadcasting against `like` [models, ...]."""
    return values.view(-1, *[1] * (like.dim() - 1))


def _fold_plan(
    indices: torch.Tensor, batch: int, s: TrainConfig, examples: int, fold: int
) -> list[tuple[torch.Tensor, int, float]]:
    """One fold's training, step by step: (the batch's example indices, the epoch, the learning-rate
    factor). Whole batches only, a new seeded order every epoch; as many steps as the engine plans for a
    training set of this size (train.max_steps scaled to the fold's share of the examples)."""
    per_epoch = len(indices) // batch
    total = max(1, s.max_steps * len(indices) // examples) if s.max_steps else per_epoch * s.epochs
    factors = _schedule(s, total)
    plan = []
    for epoch in range(math.ceil(total / per_epoch)):
        generator = torch.Generator().manual_seed(example_seed(s.seed, epoch, -1 - fold))
        order = indices[torch.randperm(len(indices), generator=generator)]
        for j in range(per_epoch):
            if len(plan) < total:
                plan.append((order[j * batch : (j + 1) * batch], epoch, factors[len(plan)]))
    return plan


def _held_out(
    head: nn.Module, models: _Models, data: ProbeSet, held_idx: list[torch.Tensor], points: int
) -> tuple[list[float], list[float]]:
    """Per grid point: held-out examples predicted right, and summed held-out loss, over every fold (view 0)."""
    k, features, labels = models.folds, data.features, data.labels
    correct, loss = [0.0] * points, [0.0] * points
    head_mode = head.training
    head.eval()
    try:
        with torch.no_grad():
            for f, held in enumerate(held_idx):
                chosen = {n: p[f::k] for n, p in models.params.items()}  # this fold's model of every point
                x = features[held, 0]
                logits = vmap(lambda p, x=x: functional_call(head, p, (x,)))(chosen).float()
                for g in range(points):
                    correct[g] += float((logits[g].argmax(dim=1) == labels[held]).sum())
                    loss[g] += float(F.cross_entropy(logits[g], labels[held], reduction="sum"))
    finally:
        head.train(head_mode)
    return correct, loss


def _schedule(s: TrainConfig, total: int) -> list[float]:
    """The learning-rate factor at each of `total` optimizer steps, from the schedule the engine builds."""
    from transformers import get_scheduler

    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = get_scheduler(
        s.scheduler, optimizer, num_warmup_steps=int(s.warmup_ratio * total), num_training_steps=total
    )
    factors = []
    for _ in range(max(total, 1)):
        factors.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return factors


def _view_table(indices: torch.Tensor, views: int, epochs: int, seed: int) -> torch.Tensor:
    """[epochs, examples]: the cached view each example (by its index in the training set) is drawn at in
    each epoch, as the real fit draws it (see view_of)."""
    if views == 1:
        return torch.zeros(epochs, len(indices), dtype=torch.long)
    return torch.tensor([[view_of(seed, e, int(i), views) for i in indices] for e in range(epochs)])


def search_summary(result: SearchResult) -> dict[str, Any]:
    """What metrics.json and the card record of a search."""
    return {
        "weight_decay": result.chosen.weight_decay,
        "lr": result.chosen.lr,
        "folds": result.folds,
        "examples": result.examples,
        "scores": result.scores,
        "seconds": result.seconds,
    }


@contextmanager
def _threads(count: int) -> Iterator[None]:
    """torch's intra-op threads set to `count` for a block. The search runs many small kernels (a head's
    parameters, a few hundred thousand numbers), where starting and joining threads costs more than it saves:
    1,000 examples x 1,280 features took 4 s on one thread, 15-20 s on two (a shared 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
