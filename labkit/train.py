"""One training loop for every lab: one visible configuration, mixed precision, model selection on a
validation split, and callbacks for what differs between experiments.

:class:`TrainConfig` states the course's fine-tuning setup once (book/lab2_theory.md): SGD with
learning rate 0.002, momentum 0.875, weight decay 1e-4, batch 256, random crop 32 with padding 4
and horizontal flip, 20 epochs. A notebook's parameters cell builds one and overrides fields.

Speed comes from the hardware's native formats, chosen by capability (``precision="auto"``):
bf16 autocast where the device computes bf16 natively (CPUs with AVX512-BF16 or AMX, CUDA GPUs
with bf16), fp16 autocast with a gradient scaler on older CUDA GPUs, fp32 elsewhere; the model
and the batches in ``channels_last`` on the CPU and CUDA. Evaluation is always exact fp32.

Selection without the test set: the loop holds out ``val_fraction`` of the training images
(class-balanced, fixed seed) and selects the epoch of the best *validation* accuracy; the test
accuracy of that epoch is what a run reports (:attr:`History.best_acc`). The course's protocol,
the best *test* accuracy over the epochs, is :attr:`History.peak_test_acc`: it is optimistic,
because picking the maximum of noisy test accuracies uses the test set to choose.

The device is the model's: move the model with ``net.to(pick_device())`` and the loop moves the
data there. Nothing inside a step waits for the device: the loss and the count of correct
predictions accumulate on the device and ``.item()`` is called once per epoch.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
import os
import time
from dataclasses import dataclass, field
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .data import CIFAR10, Split, batches, split_validation

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
MEMORY_FORMATS = ("auto", "channels_last", "contiguous")
PROGRESS_MODES = ("auto", "text", "off")


@dataclass(frozen=True)
class TrainConfig:
    """How a model is trained: the course's fine-tuning setup by default.

    Override fields in a notebook's parameters cell, ``TrainConfig(epochs=10)``, or per run,
    ``train(net, data, config, seed=1)``.
    """
    epochs: int = 20              # passes over the training images (the course fine-tunes for 20)
    lr: float = 0.002             # SGD learning rate: small, we start from a trained model
    momentum: float = 0.875       # SGD momentum
    weight_decay: float = 1e-4    # L2 penalty on all parameters, applied by SGD
    batch_size: int = 256         # images per optimizer step
    augment: bool = True          # random crop 32 with padding 4 + horizontal flip of every batch
    precision: str = "auto"       # training steps: "auto" (by capability), "fp32", "bf16", "fp16"
    memory_format: str = "auto"   # "auto" (channels_last on CPU and CUDA), "channels_last", "contiguous"
    seed: int = 0                 # shuffling and augmentation; runs with other seeds measure the noise
    val_fraction: float = 0.1     # training images held out (class-balanced) to select the epoch; 0: none
    val_seed: int = 0             # which images are held out: fixed, so that seeds differ only in training

    def __post_init__(self):
        def integer(name, low):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < low:
                raise ValueError(f"{name} must be an int >= {low}, got {v!r}")

        integer("epochs", 0)
        integer("batch_size", 1)
        integer("seed", 0)
        integer("val_seed", 0)
        for name, low in (("lr", 0.0), ("momentum", 0.0), ("weight_decay", 0.0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not v >= low \
                    or (name == "lr" and v == 0):
                raise ValueError(f"{name} must be a number {'>' if name == 'lr' else '>='} 0, got {v!r}")
        f = self.val_fraction
        if isinstance(f, bool) or not isinstance(f, numbers.Real) or not 0 <= f < 1:
            raise ValueError(f"val_fraction must be a fraction in [0, 1), got {f!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.memory_format not in MEMORY_FORMATS:
            raise ValueError(f"memory_format must be one of {MEMORY_FORMATS}, got {self.memory_format!r}")
        if not isinstance(self.augment, bool):
            raise ValueError(f"augment must be True or False, got {self.augment!r}")

    def replace(self, **overrides) -> "TrainConfig":
        """A copy with some fields changed; unknown names are an error."""
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}; fields: "
                             f"{[f.name for f in dataclasses.fields(self)]}")
        return dataclasses.replace(self, **overrides)


# --- devices and number formats ------------------------------------------------------------------

def pick_device(device=None) -> torch.device:
    """The device to train on: ``device`` if given, else ``$LABKIT_DEVICE``, else CUDA, Apple MPS, CPU.

    An explicit device must exist here: ``cuda`` on a machine without CUDA is a ValueError now,
    not a failure at the first step.
    """
    source = "device argument"
    if not device:
        device, source = os.environ.get("LABKIT_DEVICE"), "$LABKIT_DEVICE"
    if device:
        allowed = "'cpu', 'cuda', 'cuda:N' or 'mps'"
        try:
            device = torch.device(device)
        except (RuntimeError, TypeError):
            raise ValueError(f"{source} = {device!r} is not a device; use {allowed}") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"{source} asks for {device} but this torch has no usable CUDA GPU "
                             f"(torch {torch.__version__}); use 'cpu'")
        if device.type == "mps" and not _mps_available():
            raise ValueError(f"{source} asks for mps but no Apple GPU is available here; use 'cpu'")
        if device.type not in ("cpu", "cuda", "mps", "meta"):
            raise ValueError(f"{source} = {str(device)!r} is not supported; use {allowed}")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def native_bf16(device) -> bool:
    """Does ``device`` compute bf16 natively (so that bf16 autocast is faster than fp32)?

    CPU: AVX512-BF16 or AMX instructions. CUDA: a GPU with bf16 arithmetic (Ampere or newer),
    emulation excluded. Elsewhere: False.
    """
    device = torch.device(device)
    if device.type == "cpu":
        checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
        return any(check is not None and check() for check in checks)
    if device.type == "cuda":
        try:
            return torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # older torch without the argument
            return torch.cuda.is_bf16_supported()
    return False


def resolve_precision(precision: str, device) -> str:
    """The precision ``"auto"`` means on ``device``: bf16 where native, else fp16 on CUDA, else fp32.

    An explicit ``"fp32"``, ``"bf16"`` or ``"fp16"`` is returned as it is (fp16 is CUDA-only).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    device = torch.device(device)
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"precision 'fp16' (autocast with a gradient scaler) is for CUDA GPUs; on "
                         f"{device.type} use 'bf16' or 'fp32' (or 'auto')")
    if precision != "auto":
        return precision
    if native_bf16(device):
        return "bf16"
    return "fp16" if device.type == "cuda" else "fp32"


def resolve_memory_format(memory_format: str, device) -> torch.memory_format:
    """``"auto"``: channels_last on the CPU and CUDA (faster convolutions there), contiguous elsewhere."""
    if memory_format not in MEMORY_FORMATS:
        raise ValueError(f"memory_format must be one of {MEMORY_FORMATS}, got {memory_format!r}")
    if memory_format == "auto":
        memory_format = "channels_last" if torch.device(device).type in ("cpu", "cuda") else "contiguous"
    return torch.channels_last if memory_format == "channels_last" else torch.contiguous_format


def describe(config: "TrainConfig", device) -> str:
    """What a run with ``config`` on ``device`` computes in, e.g. 'bf16 autocast, channels_last'."""
    precision = resolve_precision(config.precision, device)
    fmt = resolve_memory_format(config.memory_format, device)
    number = "fp32" if precision == "fp32" else f"{precision} autocast"
    if precision == "fp16":
        number += " + gradient scaler"
    layout = "channels_last" if fmt == torch.channels_last else "contiguous"
    return f"{number}, {layout}"


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def model_device(net: nn.Module) -> torch.device:
    """The device holding the model's parameters."""
    try:
        return next(net.parameters()).device
    except StopIteration:
        raise ValueError("the model has no parameters, so it has no device to run on") from None


@torch.no_grad()
def evaluate(net: nn.Module, split: Split, *, batch_size: int = 1024) -> float:
    """Top-1 accuracy of ``net`` on ``split`` (a fraction in [0, 1]), in eval mode, in fp32, on the
    model's device. The model's train/eval mode is restored afterwards.

    Evaluation never uses reduced precision: an evaluation-only result (a pretrained or a pruned
    model) is the same whichever precision the training runs use.
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
    with torch.autocast(device_type=device.type, enabled=False):   # fp32 even inside an autocast region
        for X, y in batches(split.to(device), batch_size):
            correct += (net(X).argmax(dim=1) == y).sum()
    net.train(was_training)
    return correct.item() / len(split)  # the one sync


class Callback:
    """What an experiment adds to the loop. Every method is a no-op; override what you need.

    ``epoch`` counts from 0. ``record`` is the epoch's dict in :attr:`History.records`
    (``epoch``, ``loss``, ``train_acc``, ``val_acc``, ``test_acc``, ``train_time``, ``time``); a
    callback may add keys (e.g. ``sparsity``) and may set ``record['eligible'] = False`` so that
    the epoch cannot be selected (e.g. before the target sparsity). ``on_record`` comes after every
    callback's ``on_epoch_end``, with the epoch's final record: act on it there (save, log), so
    that the order of the callbacks does not matter.
    """

    def on_train_begin(self, net: nn.Module, optimizer: torch.optim.Optimizer) -> None: ...
    def on_epoch_begin(self, epoch: int, net: nn.Module, optimizer: torch.optim.Optimizer) -> None: ...
    def on_step_end(self, net: nn.Module) -> None: ...
    def on_epoch_end(self, epoch: int, net: nn.Module, record: dict) -> None: ...
    def on_record(self, epoch: int, net: nn.Module, record: dict) -> None: ...
    def on_train_end(self, net: nn.Module) -> None: ...


def _selection_key(records) -> str:
    """Validation accuracy when the run held out a validation split, else test accuracy."""
    return "val_acc" if records and all(r.get("val_acc") is not None for r in records) else "test_acc"


class SaveBest(Callback):
    """Saves ``net.state_dict()`` (masks included) to ``path`` at the epoch :class:`History` selects:
    the eligible epoch of the best validation accuracy (of the best test accuracy when the run has no
    validation split); the first of equal ones."""

    def __init__(self, path):
        self.path = path
        self.best = -math.inf

    def on_record(self, epoch, net, record):
        score = record[_selection_key([record])]
        if record.get("eligible", True) and score > self.best:
            self.best = score
            torch.save(net.state_dict(), self.path)


@dataclass
class History:
    """Per-epoch records of one training run.

    Selection counts only eligible epochs and uses the validation accuracy (the test accuracy when
    the run had no validation split): :attr:`best_epoch` is that epoch, :attr:`best_acc` its *test*
    accuracy, the number a run reports. :attr:`peak_test_acc` is the course's protocol, the best test
    accuracy over the eligible epochs: optimistic, since it uses the test set to choose.
    """

    records: list[dict] = field(default_factory=list)

    @property
    def _eligible(self) -> list[dict]:
        return [r for r in self.records if r.get("eligible", True)]

    @property
    def selected_on(self) -> str:
        """The record key epochs are selected on: ``'val_acc'`` or ``'test_acc'``."""
        return _selection_key(self.records)

    @property
    def _selected(self) -> dict | None:
        eligible, key = self._eligible, self.selected_on
        return max(eligible, key=lambda r: r[key]) if eligible else None  # max keeps the first of ties

    @property
    def best_epoch(self) -> int | None:
        """Epoch (from 1, as printed) selected: the best validation accuracy among eligible epochs."""
        r = self._selected
        return None if r is None else r["epoch"]

    @property
    def best_acc(self) -> float:
        """Test accuracy at :attr:`best_epoch` (NaN if no epoch is eligible)."""
        r = self._selected
        return math.nan if r is None else r["test_acc"]

    @property
    def best_val_acc(self) -> float:
        """Validation accuracy at :attr:`best_epoch` (NaN without validation or eligible epoch)."""
        r = self._selected
        return math.nan if r is None or r.get("val_acc") is None else r["val_acc"]

    @property
    def peak_test_acc(self) -> float:
        """The course's protocol: the best test accuracy over the eligible epochs (optimistic)."""
        return max((r["test_acc"] for r in self._eligible), default=math.nan)

    @property
    def eligible_epochs(self) -> list[int]:
        """Epochs (from 1) that can be selected, e.g. those at the final sparsity."""
        return [r["epoch"] for r in self._eligible]

    @property
    def final_acc(self) -> float:
        """Test accuracy after the last epoch."""
        return self.records[-1]["test_acc"] if self.records else math.nan

    def column(self, key: str) -> list:
        return [r.get(key) for r in self.records]

    def summary(self) -> str:
        if not self.records:
            return "no epoch was run"
        n = len(self.records)
        if self.best_epoch is None:
            return f"{n} epochs; final test accuracy {self.final_acc:.2%}; no epoch was eligible for selection"
        on = "validation" if self.selected_on == "val_acc" else "test"
        return (f"epoch {self.best_epoch} of {n} selected on {on} accuracy: test accuracy {self.best_acc:.2%}"
                f" (best test accuracy of any epoch {self.peak_test_acc:.2%}; final {self.final_acc:.2%})")

    def table(self, *keys: str) -> str:
        """A text table of the given record keys, one row per epoch; accuracies and sparsities
        (keys containing ``acc`` or ``sparsity``) as percentages, other values with 4 digits.
        The selected epoch is marked with ``*``."""
        from .report import table

        keys = keys or ("loss", "val_acc", "test_acc")
        rows = []
        for r in self.records:
            row = [f"{r['epoch']}{'*' if r['epoch'] == self.best_epoch else ''}"]
            for k in keys:
                v = r.get(k)
                row.append("" if v is None else f"{v:.2%}" if _is_fraction(k) else f"{v:.4g}")
            rows.append(row)
        return table(rows, ["epoch", *keys])

    def plot(self, ax=None, label: str | None = None):
        """Accuracy per epoch; returns the Figure (see :func:`labkit.plots.plot_histories`)."""
        from .plots import plot_histories

        return plot_histories({label or "run": self}, ax=ax)


def _is_fraction(key: str) -> bool:
    return "acc" in key or "sparsity" in key


def _progress(total: int, desc: str, enabled: bool):
    """A tqdm bar: a notebook widget or text; ``$LABKIT_PROGRESS`` = ``text`` or ``off`` overrides."""
    mode = os.environ.get("LABKIT_PROGRESS", "auto").strip().lower() or "auto"
    if mode not in PROGRESS_MODES:
        raise ValueError(f"LABKIT_PROGRESS={mode!r} is not a mode; use one of {list(PROGRESS_MODES)}")
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
    config: TrainConfig | None = None,
    *,
    callbacks: Iterable[Callback] = (),
    optimizer: torch.optim.Optimizer | None = None,
    progress: bool = True,
    desc: str = "train",
    **overrides,
) -> History:
    """Train ``net`` on ``data.train`` with SGD and cross-entropy; evaluate after every epoch.

    Args:
        config: a :class:`TrainConfig` (default: the course's setup); ``**overrides`` change
            fields for this run, e.g. ``train(net, data, config, seed=1)``.
        callbacks: called at the points of :class:`Callback`, in order.
        optimizer: defaults to ``SGD(net.parameters(), lr, momentum, weight_decay)`` of the config.

    Steps:
        1. hold out ``config.val_fraction`` of ``data.train`` (class-balanced, ``config.val_seed``);
        2. every epoch: shuffle and augment on the model's device (``config.seed``), train with
           autocast in the config's precision and memory format (see :func:`describe`), then
           evaluate validation and test accuracy in fp32;
        3. the model is given back in the contiguous memory format it came in.

    Training is never shrunk behind the caller's back: pass the data you want trained on
    (``labkit.profile.shrink`` does it visibly for CI).

    Returns the :class:`History`: per epoch ``loss`` and ``train_acc`` (of the training steps, on
    augmented images), ``val_acc``, ``test_acc``, ``train_time`` (seconds of the training steps,
    without the callbacks' epoch-begin work) and ``time`` (the whole epoch with evaluation), and
    whatever the callbacks record.
    """
    config = TrainConfig() if config is None else config
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a labkit.train.TrainConfig, got {type(config).__name__}")
    config = config.replace(**overrides)
    if not isinstance(data, CIFAR10):
        raise ValueError(f"train needs the whole dataset (labkit.data.cifar10()), with .train and .test; "
                         f"got {type(data).__name__}")
    device = model_device(net)
    precision = resolve_precision(config.precision, device)
    memory_format = resolve_memory_format(config.memory_format, device)
    train_split, val_split = split_validation(data.train, config.val_fraction, seed=config.val_seed)
    train_split, test_split = train_split.to(device), data.test.to(device)
    val_split = val_split.to(device) if len(val_split) else None
    if optimizer is None:
        optimizer = torch.optim.SGD(net.parameters(), lr=config.lr, momentum=config.momentum,
                                    weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    generator = torch.Generator(device=device).manual_seed(config.seed)
    callbacks = list(callbacks)
    history = History()
    net.to(memory_format=memory_format)

    for cb in callbacks:
        cb.on_train_begin(net, optimizer)
    bar = _progress(config.epochs, desc, progress)
    for epoch in range(config.epochs):
        start = time.perf_counter()
        for cb in callbacks:
            cb.on_epoch_begin(epoch, net, optimizer)
        net.train()
        steps_start = time.perf_counter()
        # Running sums stay on the device: no sync inside the step.
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        for X, y in batches(train_split, config.batch_size, shuffle=True, augment=config.augment,
                            generator=generator):
            X = X.contiguous(memory_format=memory_format)   # (B, 3, 32, 32)
            with _autocast(device, precision):
                y_hat = net(X)                              # (B, num_classes)
                loss = F.cross_entropy(y_hat, y)            # autocast computes it in fp32
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            for cb in callbacks:
                cb.on_step_end(net)
            loss_sum += loss.detach() * len(y)              # a batch's mean, weighted by its size
            correct += (y_hat.argmax(dim=1) == y).sum()
        record = {
            "epoch": epoch + 1,
            "loss": loss_sum.item() / len(train_split),     # the one sync of the steps
            "train_acc": correct.item() / len(train_split),
            "train_time": time.perf_counter() - steps_start,  # seconds of training steps only
        }
        record["val_acc"] = None if val_split is None else evaluate(net, val_split)
        record["test_acc"] = evaluate(net, test_split)
        record["time"] = time.perf_counter() - start        # the whole epoch, evaluation included
        for cb in callbacks:
            cb.on_epoch_end(epoch, net, record)
        for cb in callbacks:
            cb.on_record(epoch, net, record)
        history.records.append(record)
        best = "-" if history.best_epoch is None else f"{history.best_acc:.2%}"  # "-": no eligible epoch yet
        bar.set_postfix(loss=f"{record['loss']:.3f}", val="-" if val_split is None else f"{record['val_acc']:.2%}",
                        test=f"{record['test_acc']:.2%}", selected=best, refresh=False)
        bar.update(1)
    bar.close()
    net.to(memory_format=torch.contiguous_format)
    for cb in callbacks:
        cb.on_train_end(net)
    return history


# Fine-tuning is training from a pretrained model with the course's (small) learning rate:
# the same loop, the same defaults.
finetune = train
