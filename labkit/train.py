"""One training loop for every lab, with callbacks for what differs between experiments.

The defaults are the course's fine-tuning setup (LABS.md, Lab 2): SGD with
learning rate 0.002, momentum 0.875, weight decay 1e-4, batch 256, random crop
32 with padding 4 and horizontal flip, 20 epochs. What differs between
experiments (holding pruning masks, pruning on a schedule, recording sparsity,
saving the best checkpoint) is a :class:`Callback`, not a copy of the loop.

The device is the model's: move the model with ``net.to(pick_device())`` and
the loop moves the data there. Nothing inside a step waits for the device:
the loss and the count of correct predictions accumulate on the device and
``.item()`` is called once per epoch.
"""
from __future__ import annotations

import math
import numbers
import os
import time
from dataclasses import dataclass, field
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from . import profile
from .data import CIFAR10, Split, batches


def pick_device(device=None) -> torch.device:
    """The device to train on: ``device`` if given, else ``$LABKIT_DEVICE``, else CUDA, Apple MPS, CPU."""
    device = device or os.environ.get("LABKIT_DEVICE")
    if device:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def model_device(net: nn.Module) -> torch.device:
    """The device holding the model's parameters."""
    try:
        return next(net.parameters()).device
    except StopIteration:
        raise ValueError("the model has no parameters, so it has no device to run on") from None


@torch.no_grad()
def evaluate(net: nn.Module, split: Split, *, batch_size: int = 1024) -> float:
    """Top-1 accuracy of ``net`` on ``split`` (a fraction in [0, 1]), in eval mode, on the model's device.

    The model's train/eval mode is restored afterwards.
    """
    if not isinstance(split, Split):
        hint = "; pass one split of it, e.g. data.test" if isinstance(split, CIFAR10) else ""
        raise ValueError(f"evaluate needs a labkit.data.Split, got {type(split).__name__}{hint}")
    if len(split) == 0:
        raise ValueError("evaluate: the split holds no images")
    device = model_device(net)
    was_training = net.training
    net.eval()
    correct = torch.zeros((), dtype=torch.int64, device=device)
    for X, y in batches(split.to(device), batch_size):
        correct += (net(X).argmax(dim=1) == y).sum()
    net.train(was_training)
    return correct.item() / len(split)  # the one sync


class Callback:
    """What an experiment adds to the loop. Every method is a no-op; override what you need.

    ``epoch`` counts from 0. ``record`` is the epoch's dict in :attr:`History.records`
    (``epoch``, ``loss``, ``train_acc``, ``test_acc``, ``train_time``, ``time``); a callback may add keys
    (e.g. ``sparsity``) and may set ``record['eligible'] = False`` so that the epoch
    does not count for the best accuracy. ``on_record`` comes after every callback's
    ``on_epoch_end``, with the epoch's final record: act on it there (save, log), so that the
    order of the callbacks does not matter.
    """

    def on_train_begin(self, net: nn.Module, optimizer: torch.optim.Optimizer) -> None: ...
    def on_epoch_begin(self, epoch: int, net: nn.Module, optimizer: torch.optim.Optimizer) -> None: ...
    def on_step_end(self, net: nn.Module) -> None: ...
    def on_epoch_end(self, epoch: int, net: nn.Module, record: dict) -> None: ...
    def on_record(self, epoch: int, net: nn.Module, record: dict) -> None: ...
    def on_train_end(self, net: nn.Module) -> None: ...


class SaveBest(Callback):
    """Saves ``net.state_dict()`` (masks included) to ``path`` whenever an eligible epoch beats the best so far."""

    def __init__(self, path):
        self.path = path
        self.best = -math.inf

    def on_record(self, epoch, net, record):
        if record.get("eligible", True) and record["test_acc"] > self.best:
            self.best = record["test_acc"]
            torch.save(net.state_dict(), self.path)


@dataclass
class History:
    """Per-epoch records of one training run; ``best_*`` count only eligible epochs."""

    records: list[dict] = field(default_factory=list)

    @property
    def _eligible(self) -> list[dict]:
        return [r for r in self.records if r.get("eligible", True)]

    @property
    def best_acc(self) -> float:
        """Best test accuracy over the eligible epochs (NaN if there is none)."""
        return max((r["test_acc"] for r in self._eligible), default=math.nan)

    @property
    def best_epoch(self) -> int | None:
        """Epoch (from 1, as printed) of the best eligible test accuracy."""
        eligible = self._eligible
        if not eligible:
            return None
        return max(eligible, key=lambda r: r["test_acc"])["epoch"]

    @property
    def eligible_epochs(self) -> list[int]:
        """Epochs (from 1) that count for the best accuracy, e.g. those at the final sparsity."""
        return [r["epoch"] for r in self._eligible]

    @property
    def final_acc(self) -> float:
        return self.records[-1]["test_acc"] if self.records else math.nan

    def column(self, key: str) -> list:
        return [r.get(key) for r in self.records]

    def summary(self) -> str:
        if not self.records:
            return "no epoch was run"
        n = len(self.records)
        if self.best_epoch is None:
            return f"{n} epochs; final test accuracy {self.final_acc:.2%}; no epoch was eligible for the best"
        return (f"best test accuracy {self.best_acc:.2%} at epoch {self.best_epoch} of {n}"
                f" (final {self.final_acc:.2%})")

    def table(self, *keys: str) -> str:
        """A text table of the given record keys, one row per epoch; accuracies and sparsities
        (keys containing ``acc`` or ``sparsity``) as percentages, other values with 4 digits."""
        from .report import table

        keys = keys or ("loss", "test_acc")
        rows = []
        for r in self.records:
            row = [r["epoch"]]
            for k in keys:
                v = r.get(k)
                row.append("" if v is None else f"{v:.2%}" if _is_fraction(k) else f"{v:.4g}")
            rows.append(row)
        return table(rows, ["epoch", *keys])

    def plot(self, ax=None, label: str | None = None):
        """Test accuracy per epoch; returns the Figure (see :func:`labkit.plots.plot_histories`)."""
        from .plots import plot_histories

        return plot_histories({label or "run": self}, ax=ax)


def _is_fraction(key: str) -> bool:
    return "acc" in key or "sparsity" in key


def _progress(total: int, desc: str, enabled: bool):
    """A tqdm bar: a notebook widget or text; ``$LABKIT_PROGRESS`` = ``text`` or ``off`` overrides."""
    mode = os.environ.get("LABKIT_PROGRESS", "auto")
    if not enabled or mode == "off":
        from tqdm import tqdm
        return tqdm(total=total, desc=desc, disable=True)
    if mode == "text":
        from tqdm import tqdm
    else:
        from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit="epoch", dynamic_ncols=True)


def train(
    net: nn.Module,
    data: CIFAR10,
    *,
    epochs: int = 20,
    lr: float = 0.002,
    momentum: float = 0.875,
    weight_decay: float = 1e-4,
    batch_size: int = 256,
    seed: int = 0,
    augment: bool = True,
    callbacks: Iterable[Callback] = (),
    optimizer: torch.optim.Optimizer | None = None,
    progress: bool = True,
    desc: str = "train",
) -> History:
    """Train ``net`` on ``data.train`` with SGD and cross-entropy; test after every epoch.

    Args:
        epochs, lr, momentum, weight_decay, batch_size: the course's fine-tuning setup by default.
        seed: seeds the shuffling and augmentation generator (on the model's device); the same
            seed, model and data give the same run on the CPU.
        augment: random crop 32 with padding 4 and horizontal flip of every training batch.
        callbacks: called at the points of :class:`Callback`, in order.
        optimizer: defaults to ``SGD(net.parameters(), lr, momentum, weight_decay)``.

    The profile (:mod:`labkit.profile`) may train on fewer images (CI); it never changes
    ``epochs``: the notebook's parameters cell does that, visibly.

    Returns the :class:`History` (per-epoch ``loss``, ``train_acc``, ``test_acc``, the seconds
    ``train_time`` of the training steps and ``time`` of the whole epoch, and whatever the
    callbacks record).
    """
    if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 0:
        raise ValueError(f"epochs must be a non-negative int, got {epochs!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not lr > 0:
        raise ValueError(f"lr must be a number > 0, got {lr!r}")
    if not isinstance(data, CIFAR10):
        raise ValueError(f"train needs the whole dataset (labkit.data.cifar10()), with .train and .test; "
                         f"got {type(data).__name__}")
    device = model_device(net)
    train_split = data.train
    n = profile.train_samples()
    if n is not None and n < len(train_split):
        train_split = Split(train_split.images[:n], train_split.labels[:n])
    train_split, test_split = train_split.to(device), data.test.to(device)
    if optimizer is None:
        optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    generator = torch.Generator(device=device).manual_seed(seed)
    callbacks = list(callbacks)
    history = History()

    for cb in callbacks:
        cb.on_train_begin(net, optimizer)
    bar = _progress(epochs, desc, progress)
    for epoch in range(epochs):
        start = time.perf_counter()
        for cb in callbacks:
            cb.on_epoch_begin(epoch, net, optimizer)
        net.train()
        # Running sums stay on the device: no sync inside the step.
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        for X, y in batches(train_split, batch_size, shuffle=True, augment=augment, generator=generator):
            y_hat = net(X)                      # (B, num_classes)
            loss = F.cross_entropy(y_hat, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            for cb in callbacks:
                cb.on_step_end(net)
            loss_sum += loss.detach() * len(y)
            correct += (y_hat.argmax(dim=1) == y).sum()
        record = {
            "epoch": epoch + 1,
            "loss": loss_sum.item() / len(train_split),   # the one sync of the epoch
            "train_acc": correct.item() / len(train_split),
        }
        record["train_time"] = time.perf_counter() - start     # seconds of training steps
        record["test_acc"] = evaluate(net, test_split)
        record["time"] = time.perf_counter() - start           # ... and of testing
        for cb in callbacks:
            cb.on_epoch_end(epoch, net, record)
        for cb in callbacks:
            cb.on_record(epoch, net, record)
        history.records.append(record)
        best = "-" if history.best_epoch is None else f"{history.best_acc:.2%}"  # "-": no eligible epoch yet
        bar.set_postfix(loss=f"{record['loss']:.3f}", test=f"{record['test_acc']:.2%}", best=best, refresh=False)
        bar.update(1)
    bar.close()
    for cb in callbacks:
        cb.on_train_end(net)
    return history


# Fine-tuning is training from a pretrained model with the course's (small) learning rate:
# the same loop, the same defaults.
finetune = train
