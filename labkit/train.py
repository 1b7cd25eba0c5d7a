"""One training loop for every lab: one visible configuration, mixed precision, model selection on
validation images the model never saw, and callbacks for what differs between experiments.

:class:`TrainConfig` states the course's fine-tuning setup once (book/lab2_theory.md): SGD with
learning rate 0.002, momentum 0.875, weight decay 1e-4, batch 256, random crop 32 with padding 4
and horizontal flip, 20 epochs. A notebook's parameters cell builds one and overrides fields.

Speed comes from the hardware's native formats, chosen by capability (``precision="auto"``):
bf16 autocast where the device computes bf16 natively (CPUs with AVX512-BF16 or AMX, CUDA GPUs
with bf16), fp16 autocast with a gradient scaler on older CUDA GPUs, fp32 elsewhere; the model
and the batches in ``channels_last`` on the CPU and CUDA. Evaluation is always exact fp32.

Selection on images the model never saw: the pretrained checkpoint was trained on all 50 000
training images, so no part of them is unseen. With ``data.val`` (``labkit.data.validation_from_test``:
a class-balanced, seed-fixed part of the test images) the loop selects the epoch of the best
*validation* accuracy and reports its accuracy on ``data.test``, the other test images
(:attr:`History.best_acc`). Without ``data.val`` nothing is selected: the last epoch of the fixed
schedule is reported (:attr:`History.selected_on` is ``"last"``); the test images never choose.
The course's protocol, the best *test* accuracy over the epochs, is :attr:`History.peak_test_acc`:
it is optimistic, because picking the maximum of noisy test accuracies uses the test set to choose.

The device is the model's: move the model with ``net.to(devices.pick_device())`` and the loop
moves the data there. Nothing inside a step waits for the device: the loss and the count of correct
predictions accumulate on the device and ``.item()`` is called once per epoch.

Per-image correctness, for the paired statistics of :mod:`labkit.stats`: every epoch's record keeps
which test images the model got right (``record['test_correct']``: np.packbits and the count; kept
by the checkpoint, never printed); :attr:`History.best_correct` is the reported epoch's,
:meth:`History.correct` any epoch's, ``evaluate(net, split, per_image=True)`` any model's. Two
models on the same images are compared image by image, one run each with McNemar's test, over seeds
with both sources of noise::

    before = train.evaluate(pruned, tuned.test, per_image=True)        # (images,) bool
    hist_c = [train.train(net_c(seed), tuned, config, seed=seed) for seed in seeds]
    print(stats.mcnemar("(c) fine-tuned, seed 0", hist_c[0].best_correct, "before fine-tuning", before))
    print(stats.compare_seeds("(f) allocated", [h.best_correct for h in hist_f],   # (seeds, images)
                              "(c) one-shot", [h.best_correct for h in hist_c]))

Nothing lost: settings must be finite and fit float32 (``lr=inf`` or ``1e300`` is refused); a loss
that turns non-finite, or a parameter or buffer that does (checked at the end of every epoch, before
anything is recorded or written: a BatchNorm running variance can overflow while the loss stays
finite), stops the run with :class:`TrainingDiverged` (the weights of the epoch's start put back);
Ctrl-C raises :class:`TrainingInterrupted` with the History of the finished epochs and the model at
the end of the last of them; every other error ``train`` raises carries that History too
(``error.history``); ``checkpoint=`` writes what ``resume=True`` continues from (and a refused resume
loads nothing); :class:`SaveBest` and the checkpoint are written atomically, refuse non-finite
tensors, say what they hold (``labkit.files.read_description``) and are checked whole when read back.
"""
from __future__ import annotations

import copy
import dataclasses
import errno
import itertools
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import checks, files, settings
from .data import CIFAR10, Split, batches, fingerprint
from .devices import MEMORY_FORMATS, PRECISIONS, autocast, model_device, resolve_memory_format, resolve_precision
from .layers import evaluating
from .progress import bar
from .tables import table

__all__ = ["TrainConfig", "Callback", "SaveBest", "History", "TrainingDiverged", "TrainingInterrupted",
           "train", "evaluate"]


_FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def _float32_model(net: nn.Module, what: str) -> None:
    """Refuse a model whose floating-point parameters or buffers are not float32 (a ``net.half()``):
    labkit keeps fp32 weights and computes in bf16/fp16 with autocast, so the optimizer's updates are
    not rounded away."""
    other = sorted({str(t.dtype) for t in itertools.chain(net.parameters(), net.buffers())
                    if t.is_floating_point() and t.dtype != torch.float32})
    if other:
        raise ValueError(f"{what} needs a float32 model, this one has {', '.join(other)} tensors: convert it with "
                         f"net.float(); to train in bf16/fp16 keep the float32 model and set "
                         f"TrainConfig(precision='bf16' or 'fp16') (autocast); evaluation is always fp32")


@dataclass(frozen=True)
class TrainConfig:
    """How a model is trained: the course's fine-tuning setup by default.

    Override fields in a notebook's parameters cell, ``TrainConfig(epochs=10)``, or per run,
    ``train(net, data, config, seed=1)``. Every number must be finite: ``lr=float('inf')`` or a
    NaN weight decay would overwrite the weights with NaN, so they are refused here.
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

    def __post_init__(self):
        checked = {"epochs": checks.integer("epochs", self.epochs, minimum=0),
                   "batch_size": checks.integer("batch_size", self.batch_size, minimum=1),
                   "seed": checks.integer("seed", self.seed, minimum=0, maximum=2**64 - 1),  # what torch's generators hold
                   "lr": checks.number("lr", self.lr, positive=True),
                   "momentum": checks.number("momentum", self.momentum, minimum=0),
                   "weight_decay": checks.number("weight_decay", self.weight_decay, minimum=0)}
        for name, value in checked.items():     # np.int64(0) -> 0: torch.Generator refuses numpy integers
            if type(getattr(self, name)) not in (int, float):
                object.__setattr__(self, name, value)
        for name in ("lr", "momentum", "weight_decay"):      # finite, yet no float32 holds it: the weights become inf
            if getattr(self, name) > _FLOAT32_MAX:
                raise ValueError(f"{name} must be at most {_FLOAT32_MAX:.4g} (the largest float32, the weights' "
                                 f"format), got {getattr(self, name)!r}")
        checks.one_of("precision", self.precision, PRECISIONS)
        checks.one_of("memory_format", self.memory_format, MEMORY_FORMATS)
        checks.flag("augment", self.augment)

    def replace(self, **overrides) -> "TrainConfig":
        """A copy with some fields changed; unknown names are an error."""
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}; fields: "
                             f"{[f.name for f in dataclasses.fields(self)]}")
        return dataclasses.replace(self, **overrides)


def evaluate(net: nn.Module, split: Split, *, batch_size: int = 1024, per_image: bool = False) -> float | np.ndarray:
    """Top-1 accuracy of ``net`` on ``split`` (a fraction in [0, 1]), in eval mode, in fp32, on the
    model's device. The model's train/eval mode and memory format are restored afterwards.

    ``per_image=True`` returns instead which images it got right: a numpy bool array of shape
    (len(split),), in the split's order, True where argmax(net(x)) equals the label (copied from the
    device once, at the end). Its mean is the accuracy, exactly; two of them on the same split are
    what :func:`labkit.stats.mcnemar` and :func:`labkit.stats.compare_seeds` compare.

    Evaluation never uses reduced precision: an evaluation-only result (a pretrained or a pruned
    model) is the same whichever precision the training runs use. It runs under
    ``torch.inference_mode`` with the model and the images in ``channels_last`` on the CPU and CUDA
    (the faster convolutions there; the same predictions, checked on the pretrained, pruned and
    quantized ResNet-20 of the labs).
    """
    if not isinstance(split, Split):
        hint = "; pass one split of it, e.g. data.test" if isinstance(split, CIFAR10) else ""
        raise ValueError(f"evaluate needs a labkit.data.Split, got {type(split).__name__}{hint}")
    if len(split) == 0:
        raise ValueError("evaluate: the split holds no images")
    checks.flag("per_image", per_image)
    _float32_model(net, "evaluate")
    device = model_device(net)
    memory_format = resolve_memory_format("auto", device)
    convert = memory_format == torch.channels_last and not _channels_last(net)
    if convert:
        net.to(memory_format=memory_format)     # outside inference mode: the parameters stay trainable
    try:
        correct = torch.zeros((), dtype=torch.int64, device=device)
        hits = []                                                        # per_image: (B,) bool per batch
        with evaluating(net), torch.inference_mode(), \
                torch.autocast(device_type=device.type, enabled=False):  # fp32 even inside autocast
            for X, y in batches(split.to(device), batch_size):
                hit = net(X.contiguous(memory_format=memory_format)).argmax(dim=1) == y   # (B,) bool
                if per_image:
                    hits.append(hit)
                else:
                    correct += hit.sum()
        if per_image:
            return torch.cat(hits).cpu().numpy()   # the one sync: (images,) bool, in the split's order
        return correct.item() / len(split)  # the one sync
    finally:
        if convert:
            net.to(memory_format=torch.contiguous_format)


def _channels_last(net: nn.Module) -> bool:
    """Are all 4-d parameters and buffers of ``net`` in channels_last (as ``train`` puts them)?"""
    tensors = [t for t in itertools.chain(net.parameters(), net.buffers()) if t.dim() == 4]
    return bool(tensors) and all(t.is_contiguous(memory_format=torch.channels_last) for t in tensors)


class Callback:
    """What an experiment adds to the loop. Every method is a no-op; override what you need.

    ``epoch`` counts from 0. ``record`` is the epoch's dict in :attr:`History.records`
    (``epoch``, ``loss``, ``train_acc``, ``val_acc``, ``test_acc``, ``train_time``, ``eval_time``, ``time``,
    ``test_correct``: the per-image correctness, packed; read it with :meth:`History.correct`); a
    callback may add keys (e.g. ``sparsity``) and may set ``record['eligible'] = False`` so that
    the epoch cannot be selected (e.g. before the target sparsity). ``on_record`` comes after every
    callback's ``on_epoch_end``, with the epoch's final record: act on it there (save, log), so
    that the order of the callbacks does not matter. ``on_resume`` comes after ``on_train_begin``
    when a run continues from a checkpoint (``train(..., resume=True)``), with the History of the
    epochs already done.
    """

    def on_train_begin(self, net: nn.Module, optimizer: torch.optim.Optimizer) -> None: ...
    def on_resume(self, history: "History") -> None: ...
    def on_epoch_begin(self, epoch: int, net: nn.Module, optimizer: torch.optim.Optimizer) -> None: ...
    def on_step_end(self, net: nn.Module) -> None: ...
    def on_epoch_end(self, epoch: int, net: nn.Module, record: dict) -> None: ...
    def on_record(self, epoch: int, net: nn.Module, record: dict) -> None: ...
    def on_train_end(self, net: nn.Module) -> None: ...


def _selection_key(records) -> str:
    """``'val_acc'`` when every epoch has a validation accuracy (the data had ``val``), else ``'last'``:
    no selection, the last eligible epoch. The test accuracy never selects."""
    return "val_acc" if records and all(r.get("val_acc") is not None for r in records) else "last"


class SaveBest(Callback):
    """Saves ``net.state_dict()`` (masks included) to ``path`` at the epoch :class:`History` selects:
    the eligible epoch of the best validation accuracy, the first of equal ones; without validation
    images (no selection) every eligible epoch, so that the file holds the last one. The file is
    written atomically (:func:`labkit.files.save_torch`): a save that fails halfway leaves the
    previous one as it was, and :attr:`best` moves only once the file is written. A non-finite tensor
    is refused (named). The file says what it holds (``labkit.files.read_description``: a best model,
    the epoch, its validation accuracy, sparsity and bit widths, the data's fingerprint, which
    :func:`train` gives it, profile, edition and labkit's version); ``train`` checks its folder before
    the first step."""

    def __init__(self, path):
        self.path = path
        self.best = -math.inf
        self.fingerprint = None      # the data's (labkit.data.fingerprint), set by train

    def _save(self, epoch, net, record):
        state = net.state_dict()
        description = files.run_description(kind="a best model (train.SaveBest)", what=None, epoch=epoch + 1,
                                            val_acc=record.get("val_acc"), fingerprint=self.fingerprint,
                                            **files.state_summary(state))
        files.save_torch(state, self.path, description=description)

    def on_resume(self, history):
        eligible = [r for r in history.records if r.get("eligible", True)]
        if _selection_key(history.records) == "val_acc":
            self.best = max((r["val_acc"] for r in eligible), default=-math.inf)

    def on_record(self, epoch, net, record):
        if not record.get("eligible", True):
            return
        if _selection_key([record]) == "last":
            self._save(epoch, net, record)
        elif record["val_acc"] > self.best:
            self._save(epoch, net, record)
            self.best = record["val_acc"]          # only once the file is written


@dataclass
class History:
    """Per-epoch records of one training run.

    Selection counts only eligible epochs and uses the validation accuracy (``data.val``); a run
    without validation images selects nothing and reports its last eligible epoch
    (:attr:`selected_on` ``'last'``). :attr:`best_epoch` is that epoch, :attr:`best_acc` its *test*
    accuracy, the number a run reports. :attr:`peak_test_acc` is the course's protocol, the best test
    accuracy over the eligible epochs: optimistic, since it uses the test set to choose.
    """

    records: list[dict] = field(default_factory=list)

    @property
    def _eligible(self) -> list[dict]:
        return [r for r in self.records if r.get("eligible", True)]

    @property
    def selected_on(self) -> str:
        """How the reported epoch is chosen: ``'val_acc'`` (the best validation accuracy) or ``'last'``
        (no validation images: no selection, the last eligible epoch)."""
        return _selection_key(self.records)

    @property
    def _selected(self) -> dict | None:
        eligible = self._eligible
        if not eligible:
            return None
        if self.selected_on == "last":
            return eligible[-1]
        return max(eligible, key=lambda r: r["val_acc"])  # max keeps the first of ties

    @property
    def best_epoch(self) -> int | None:
        """Epoch (from 1, as printed) reported: the best validation accuracy among eligible epochs,
        or the last eligible epoch when the run had no validation images."""
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
        """The course's protocol: the best test accuracy over the eligible epochs. Optimistic: the
        test images choose the epoch they then score."""
        return max((r["test_acc"] for r in self._eligible), default=math.nan)

    @property
    def eligible_epochs(self) -> list[int]:
        """Epochs (from 1) that can be selected, e.g. those at the final sparsity."""
        return [r["epoch"] for r in self._eligible]

    @property
    def final_acc(self) -> float:
        """Test accuracy after the last epoch."""
        return self.records[-1]["test_acc"] if self.records else math.nan

    @property
    def best_correct(self) -> np.ndarray:
        """Which test images the model of :attr:`best_epoch` got right: bool, shape (images,), in
        ``data.test``'s order; its mean is :attr:`best_acc`. For :func:`labkit.stats.mcnemar` and
        :func:`labkit.stats.compare_seeds` (see the module's docstring). An error when no epoch is
        eligible."""
        r = self._selected
        if r is None:
            raise ValueError("History.best_correct: no epoch is eligible for selection, so none is reported "
                             f"(eligible epochs: {self.eligible_epochs}; records: {len(self.records)})")
        return self.correct(r["epoch"])

    def correct(self, epoch: int) -> np.ndarray:
        """Which test images the model got right at the end of ``epoch`` (from 1, as printed): bool,
        shape (images,), in ``data.test``'s order; its mean is that epoch's ``test_acc``."""
        r = next((r for r in self.records if r["epoch"] == epoch), None)
        if r is None:
            raise ValueError(f"History.correct: no epoch {epoch!r}; the epochs are {self.column('epoch')}")
        if CORRECT_KEY not in r:
            raise ValueError(f"History.correct: epoch {epoch} holds no per-image correctness (its record has no "
                             f"{CORRECT_KEY!r}: a run by a labkit before it recorded one, or records built by hand); "
                             f"train the run again, or evaluate the model with evaluate(net, split, per_image=True)")
        return _unpack(r[CORRECT_KEY])

    def __repr__(self) -> str:
        # as the dataclass's own, without the per-image bits: printing a History shows what it showed before
        records = [{k: v for k, v in r.items() if k != CORRECT_KEY} for r in self.records]
        return f"{type(self).__qualname__}(records={records!r})"

    def column(self, key: str) -> list:
        return [r.get(key) for r in self.records]

    def summary(self) -> str:
        if not self.records:
            return "no epoch was run"
        n = len(self.records)
        if self.best_epoch is None:
            return f"{n} epochs; final test accuracy {self.final_acc:.2%}; no epoch was eligible for selection"
        course = f"course protocol (best test accuracy of any epoch, optimistic) {self.peak_test_acc:.2%}"
        if self.selected_on == "last":
            return (f"no validation images, no selection: epoch {self.best_epoch} of {n} (the last eligible), "
                    f"test accuracy {self.best_acc:.2%}; {course}")
        return (f"epoch {self.best_epoch} of {n} selected on validation accuracy ({self.best_val_acc:.2%}): "
                f"test accuracy {self.best_acc:.2%}; {course}; final {self.final_acc:.2%}")

    def table(self, *keys: str) -> str:
        """A text table of the given record keys, one row per epoch; accuracies and sparsities
        (keys containing ``acc`` or ``sparsity``) as percentages, other values with 4 digits.
        The selected epoch is marked with ``*``."""
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


CORRECT_KEY = "test_correct"   # the record's per-image test correctness, as _pack writes it


def _pack(correct: np.ndarray) -> dict:
    """(images,) bool -> ``{'images': n, 'bits': bytes}``: np.packbits, 8 images a byte (509 images: 64
    bytes). Plain bytes and an int, so a checkpoint holding it loads with ``weights_only=True`` and two
    records compare with ``==``."""
    return {"images": int(correct.size), "bits": np.packbits(correct).tobytes()}


def _unpack(packed: dict) -> np.ndarray:
    """The (images,) bool array :func:`_pack` packed."""
    bits = np.frombuffer(packed["bits"], dtype=np.uint8)
    return np.unpackbits(bits, count=packed["images"]).astype(bool)




class TrainingDiverged(RuntimeError):
    """The training loss turned non-finite (inf or NaN), or a parameter or buffer did (found at the end
    of the epoch, before anything was recorded or written). The model was reset to the weights it had
    at the start of the epoch (the last finite state); ``history`` holds the finished epochs,
    ``epoch`` (from 1) says where; ``step`` (from 1) the step where the loss first turned non-finite,
    None when the loss stayed finite and the model's tensors did not (``tensors`` names them)."""

    def __init__(self, message: str, *, history: "History", epoch: int, step: int | None,
                 tensors: tuple[str, ...] = ()):
        super().__init__(message)
        self.history, self.epoch, self.step, self.tensors = history, epoch, step, tuple(tensors)


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`train`. A KeyboardInterrupt, so that it still stops a script or a
    notebook cell; ``history`` holds the epochs that finished, ``epoch`` (from 1) the one that was
    interrupted. The model holds the weights at the end of the last finished epoch (the interrupted
    epoch's steps are undone), in the contiguous memory format; with ``checkpoint=`` the run
    continues from there with ``train(..., checkpoint=path, resume=True)``."""

    def __init__(self, message: str, *, history: "History", epoch: int):
        super().__init__(message)
        self.history, self.epoch = history, epoch


def _progress_mode(progress) -> str:
    """``train``'s ``progress`` as a mode: None or True: ``$LABKIT_PROGRESS``; False: off."""
    if progress is None or progress is True:
        return settings.progress()
    if progress is False:
        return "off"
    return checks.one_of("progress", progress, settings.PROGRESS_MODES)


class _Snapshot:
    """Copies of every parameter and buffer, put back in place (the same tensor objects, so the
    optimizer and the parametrizations keep theirs)."""

    def __init__(self, net: nn.Module):
        self.saved = [(t, t.detach().clone()) for t in itertools.chain(net.parameters(), net.buffers())]

    @torch.no_grad()
    def restore(self) -> None:
        for t, copy in self.saved:
            t.copy_(copy)


def _non_finite(net: nn.Module) -> list[str]:
    """The parameters and buffers of ``net`` holding an inf or a NaN (one sync for all of them)."""
    named = [(n, t) for n, t in itertools.chain(net.named_parameters(), net.named_buffers()) if t.is_floating_point()]
    if not named:
        return []
    finite = torch.stack([torch.isfinite(t).all() for _, t in named]).cpu()
    return [] if bool(finite.all()) else [n for (n, _), ok in zip(named, finite.tolist()) if not ok]


def _check_folders(checkpoint: Path | None, callbacks) -> None:
    """The files this run will write must be writable where they are named, before the first step."""
    paths = [("checkpoint=", checkpoint)] if checkpoint is not None else []
    paths += [("SaveBest", Path(cb.path)) for cb in callbacks if isinstance(cb, SaveBest)]
    for what, path in paths:
        if path.is_dir():
            raise IsADirectoryError(f"{what} {path} is a folder; name a file to write; nothing was trained")
        try:
            folder = path.resolve().parent
        except (RuntimeError, OSError) as e:      # a symbolic link that points back to itself: pathlib's message
            raise OSError(errno.ELOOP, f"{what} {path} cannot be written: {e} (a symbolic link that points back to "
                                       f"itself); remove it or name another file; nothing was trained") from e
        if not folder.is_dir():
            raise FileNotFoundError(f"{what} {path}: its folder {path.parent} does not exist; create it first "
                                    f"(e.g. Path({str(path.parent)!r}).mkdir(parents=True)); nothing was trained")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, f"{what} {path}: its folder {folder} is not writable (permission denied); "
                                                f"save elsewhere; nothing was trained", str(path))


def _sizes(data: CIFAR10) -> dict:
    """The image counts of a run's data, stored in its checkpoint: a resumed run must use the same."""
    return {"train": len(data.train), "val": 0 if data.val is None else len(data.val), "test": len(data.test)}


def _resume_from(path: Path, config: TrainConfig, data: CIFAR10, net, optimizer, scaler, generator) -> list[dict]:
    """Load the checkpoint ``train(checkpoint=path)`` wrote; returns the records of its epochs."""
    if not path.is_file():
        raise FileNotFoundError(f"resume=True but there is no checkpoint {path}: run "
                                f"train(..., checkpoint={str(path)!r}) first (resume=False)")
    state = files.load_torch(path, what="training checkpoint")   # every record checked against its CRC-32
    if not (isinstance(state, dict) and {"config", "model", "optimizer", "scaler", "generator", "records"} <= set(state)):
        kind = (files.read_description(path) or {}).get("kind") or (
            "a model's weights (SaveBest's or checkpoints.save's file)" if isinstance(state, dict) else "no training checkpoint")
        raise ValueError(f"cannot resume from {path}: it holds {kind}, not a training checkpoint (the file "
                         f"train(..., checkpoint=path) writes every epoch, with the optimizer's state and the "
                         f"records); load a model's weights with labkit.checkpoints.load(path); nothing was loaded")
    saved, now = dict(state["config"], epochs=config.epochs), dataclasses.asdict(config)
    changed = {k: (saved.get(k, "absent"), now.get(k, "absent")) for k in saved.keys() | now.keys()
               if saved.get(k, "absent") != now.get(k, "absent")}
    if changed:
        raise ValueError(f"cannot resume {path} with another configuration (only epochs may change); "
                         f"changed (saved, now): {changed}")
    if state.get("data") != _sizes(data):
        raise ValueError(f"cannot resume {path} on other data: it was trained with {state.get('data')} images "
                         f"(train, validation, test), this data has {_sizes(data)}")
    if state.get("fingerprint") not in (None, fingerprint(data)):   # None: written before fingerprints
        raise ValueError(f"cannot resume {path} on other data: it was trained on images of fingerprint "
                         f"{state['fingerprint'][:12]}..., this data's is {fingerprint(data)[:12]}... (as many "
                         f"images, other ones; labkit.data.fingerprint); nothing was loaded")
    trial = copy.deepcopy(net)              # a refused resume loads nothing: try the model on a copy first
    try:
        trial.load_state_dict(state["model"])
    except RuntimeError as e:
        raise ValueError(f"cannot resume {path} into this model (nothing was loaded): {e}") from e
    del trial
    try:                                    # the loop's own objects first: nothing the caller sees changes
        scaler.load_state_dict(state["scaler"])
        generator.set_state(state["generator"])
    except (RuntimeError, TypeError, ValueError) as e:
        raise ValueError(f"cannot resume {path} here (its gradient scaler or generator state does not fit this "
                         f"device and precision; nothing was loaded): {e}") from e
    try:
        optimizer.load_state_dict(state["optimizer"])   # checks every group before it changes anything
    except ValueError as e:
        raise ValueError(f"cannot resume {path} with this optimizer (nothing was loaded): {e}") from e
    net.load_state_dict(state["model"])
    return list(state["records"])


def train(
    net: nn.Module,
    data: CIFAR10,
    config: TrainConfig | None = None,
    *,
    callbacks: Iterable[Callback] = (),
    optimizer: torch.optim.Optimizer | None = None,
    progress: bool | str | None = None,
    desc: str = "train",
    checkpoint=None,
    resume: bool = False,
    **overrides,
) -> History:
    """Train ``net`` on ``data.train`` with SGD and cross-entropy; evaluate after every epoch.

    Args:
        config: a :class:`TrainConfig` (default: the course's setup); ``**overrides`` change
            fields for this run, e.g. ``train(net, data, config, seed=1)``.
        callbacks: called at the points of :class:`Callback`, in order.
        optimizer: defaults to ``SGD(net.parameters(), lr, momentum, weight_decay)`` of the config.
        progress: the bar's mode, ``'auto'``, ``'text'`` or ``'off'``; None (or True): read from
            ``$LABKIT_PROGRESS`` once, here; False: no bar.
        checkpoint: a file written (atomically) at the end of every epoch with what a resumed run
            needs: weights, optimizer and scaler state, the shuffling generator, the records, the
            configuration.
        resume: continue from ``checkpoint`` (it must exist and have the same configuration, the
            number of epochs aside): its epochs are not run again and are in the History returned;
            callbacks get :meth:`Callback.on_resume`. The resumed run equals an uninterrupted one.

    Steps:
        1. trains on all of ``data.train``; ``data.val`` (if any, e.g. from
           :func:`labkit.data.validation_from_test`) chooses the epoch, ``data.test`` is reported;
           an empty training or test split is an error before anything changes;
        2. every epoch: shuffle and augment on the model's device (``config.seed``), train with
           autocast in the config's precision and memory format (see
           :func:`labkit.devices.describe`), then evaluate validation and test accuracy in fp32;
        3. the model is given back in the contiguous memory format it came in.

    Faults:
        * a non-finite training loss (found at the end of the epoch, where the loop syncs) raises
          :class:`TrainingDiverged`, naming the epoch and step, with the model reset to the weights
          of the epoch's start (the last finite state) and the finished epochs in ``.history``;
        * Ctrl-C raises :class:`TrainingInterrupted` (a KeyboardInterrupt): the model holds the
          weights of the end of the last finished epoch, contiguous again; ``.history`` holds the
          finished epochs.

    Training is never shrunk behind the caller's back: pass the data you want trained on
    (``labkit.data.shrink`` does it visibly for CI).

    Returns the :class:`History`: per epoch ``loss`` and ``train_acc`` (of the training steps, on
    augmented images), ``val_acc`` (on ``data.val``; None without it), ``test_acc`` (on ``data.test``),
    ``train_time`` (seconds of the training steps, without the callbacks' epoch-begin work),
    ``eval_time`` (seconds of the two evaluations) and ``time`` (the whole epoch), ``test_correct``
    (which test images it got right, packed: :meth:`History.correct`, :attr:`History.best_correct`;
    in the checkpoint too), and whatever the callbacks record.
    """
    config = TrainConfig() if config is None else config
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a labkit.train.TrainConfig, got {type(config).__name__}")
    config = config.replace(**overrides)
    if not isinstance(data, CIFAR10):
        raise ValueError(f"train needs the whole dataset (labkit.data.cifar10()), with .train and .test; "
                         f"got {type(data).__name__}")
    checks.flag("resume", resume)
    if resume and checkpoint is None:
        raise ValueError("resume=True needs checkpoint=, the file a previous run wrote")
    checkpoint = None if checkpoint is None else Path(checkpoint)
    callbacks = list(callbacks)
    _check_folders(checkpoint, callbacks)
    _float32_model(net, "train")
    mode = _progress_mode(progress)
    device = model_device(net)
    precision = resolve_precision(config.precision, device)
    memory_format = resolve_memory_format(config.memory_format, device)
    if len(data.train) == 0:
        raise ValueError("train: no training images (data.train holds none); nothing was trained")
    if len(data.test) == 0:
        raise ValueError("train: data.test holds no images, so no epoch could be evaluated; nothing was trained")
    if data.val is not None and len(data.val) == 0:
        raise ValueError("train: data.val holds no images, so no epoch could be selected; pass data without "
                         "val (no selection: the last epoch) or with validation images; nothing was trained")
    train_split, test_split = data.train.to(device), data.test.to(device)
    val_split = None if data.val is None else data.val.to(device)
    if optimizer is None:
        optimizer = torch.optim.SGD(net.parameters(), lr=config.lr, momentum=config.momentum,
                                    weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    generator = torch.Generator(device=device).manual_seed(config.seed)
    history = History()
    if resume:
        history.records = _resume_from(checkpoint, config, data, net, optimizer, scaler, generator)
    data_fingerprint = None
    if checkpoint is not None or any(isinstance(cb, SaveBest) for cb in callbacks):
        data_fingerprint = fingerprint(data)            # what the files this run writes were trained on
        for cb in callbacks:
            if isinstance(cb, SaveBest):
                cb.fingerprint = data_fingerprint

    for cb in callbacks:
        cb.on_train_begin(net, optimizer)
    if resume:
        for cb in callbacks:
            cb.on_resume(history)
    progress_bar = bar(config.epochs, desc, mode=mode, unit="epoch")
    progress_bar.update(len(history.records))
    snapshot = None    # while an epoch's steps may have changed the weights: the weights before them
    epoch = len(history.records)
    net.to(memory_format=memory_format)
    try:
        for epoch in range(len(history.records), config.epochs):
            start = time.perf_counter()
            for cb in callbacks:
                cb.on_epoch_begin(epoch, net, optimizer)
            snapshot = _Snapshot(net)
            record = {"epoch": epoch + 1, **_epoch(net, train_split, config, optimizer, scaler, generator,
                                                   callbacks, memory_format, precision, device)}
            if "diverged_at" in record:
                snapshot.restore()
                raise TrainingDiverged(
                    f"training diverged: the loss turned non-finite ({record['loss']}) at epoch {epoch + 1}, "
                    f"step {record['diverged_at']} (lr={config.lr}); the model was reset to its weights at "
                    f"the start of epoch {epoch + 1}, the last finite state, after that epoch's callbacks (a pruning "
                    f"step there is kept; error.history holds the "
                    f"{len(history.records)} finished epochs). Try a smaller lr.",
                    history=history, epoch=epoch + 1, step=record["diverged_at"])
            bad = _non_finite(net)      # before anything is recorded or written: the loss can stay finite
            if bad:
                snapshot.restore()
                raise TrainingDiverged(
                    f"training diverged: at the end of epoch {epoch + 1} the model's "
                    f"{', '.join(bad[:5])}{f' and {len(bad) - 5} more' if len(bad) > 5 else ''} hold inf or NaN "
                    f"although the loss stayed finite ({record['loss']:.4g}; lr={config.lr}); nothing of that epoch "
                    f"was recorded or saved and the model was reset to its weights at the start of epoch "
                    f"{epoch + 1}, the last finite state (error.history holds the {len(history.records)} finished "
                    f"epochs). Try a smaller lr.", history=history, epoch=epoch + 1, step=None, tensors=bad)
            evaluation_start = time.perf_counter()
            record["val_acc"] = None if val_split is None else evaluate(net, val_split)
            test_correct = evaluate(net, test_split, per_image=True)     # (images,) bool
            record["test_acc"] = int(test_correct.sum()) / len(test_correct)   # evaluate()'s value, exactly
            record["eval_time"] = time.perf_counter() - evaluation_start
            record["time"] = time.perf_counter() - start        # the whole epoch, evaluation included
            record[CORRECT_KEY] = _pack(test_correct)           # for paired statistics: History.correct
            for cb in callbacks:
                cb.on_epoch_end(epoch, net, record)
            for cb in callbacks:
                cb.on_record(epoch, net, record)
            snapshot = None
            history.records.append(record)
            if checkpoint is not None:
                files.save_torch({"config": dataclasses.asdict(config), "data": _sizes(data),
                                  "fingerprint": data_fingerprint, "model": net.state_dict(),
                                  "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                                  "generator": generator.get_state(), "records": history.records}, checkpoint,
                                 description=files.run_description(kind="a training checkpoint (train(..., checkpoint=))",
                                                                   epochs=len(history.records),
                                                                   fingerprint=data_fingerprint))
            best = "-" if history.best_epoch is None else f"{history.best_acc:.2%}"  # "-": none eligible yet
            progress_bar.set_postfix(loss=f"{record['loss']:.3f}", test=f"{record['test_acc']:.2%}",
                                     val="-" if val_split is None else f"{record['val_acc']:.2%}",
                                     selected=best, refresh=False)
            progress_bar.update(1)
    except KeyboardInterrupt as e:
        if snapshot is not None:
            snapshot.restore()
        done = len(history.records)
        held = f"the end of epoch {done}" if done else "the start of the run"
        again = (f"; continue with train(..., checkpoint={str(checkpoint)!r}, resume=True)"
                 if checkpoint is not None and done else "")
        raise TrainingInterrupted(
            f"training interrupted in epoch {epoch + 1} of {config.epochs}: the model holds its weights at "
            f"{held} (the interrupted epoch's steps were undone; what its callbacks changed before them, "
            f"e.g. a pruning step, is kept); error.history holds the {done} finished "
            f"epoch(s){again}", history=history, epoch=epoch + 1) from e
    except Exception as e:      # a full disk in SaveBest, a failing callback: the record of the run is kept
        if not isinstance(getattr(e, "history", None), History):
            if snapshot is not None:               # as for Ctrl-C: the model matches the History
                snapshot.restore()
            done = len(history.records)
            e.history = history
            if hasattr(e, "add_note"):             # Python >= 3.11
                e.add_note(f"labkit.train: error.history holds the {done} finished epoch(s); the model holds its "
                           f"weights at {f'the end of epoch {done}' if done else 'the start of the run'} (the "
                           f"failed epoch's steps were undone)")
        raise
    finally:
        progress_bar.close()
        net.to(memory_format=torch.contiguous_format)
    for cb in callbacks:
        cb.on_train_end(net)
    return history


def _epoch(net, split, config, optimizer, scaler, generator, callbacks, memory_format, precision, device) -> dict:
    """One pass of training steps; the record's ``loss``, ``train_acc``, ``train_time`` (and
    ``diverged_at``, the first step of a non-finite loss, if any)."""
    net.train()
    steps_start = time.perf_counter()
    # Running sums stay on the device: no sync inside the step.
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    first_bad = torch.zeros((), dtype=torch.int64, device=device)   # step (from 1) of the first inf/NaN loss
    for step, (X, y) in enumerate(batches(split, config.batch_size, shuffle=True, augment=config.augment,
                                          generator=generator), start=1):
        X = X.contiguous(memory_format=memory_format)   # (B, 3, 32, 32)
        with autocast(device, precision):
            y_hat = net(X)                              # (B, num_classes)
            loss = F.cross_entropy(y_hat, y)            # autocast computes it in fp32
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        for cb in callbacks:
            cb.on_step_end(net)
        loss = loss.detach()
        first_bad = torch.where((first_bad == 0) & ~torch.isfinite(loss), step, first_bad)
        loss_sum += loss * len(y)                       # a batch's mean, weighted by its size
        correct += (y_hat.argmax(dim=1) == y).sum()
    record = {
        "loss": loss_sum.item() / len(split),           # the one sync of the steps
        "train_acc": correct.item() / len(split),
        "train_time": time.perf_counter() - steps_start,  # seconds of training steps only
    }
    if not math.isfinite(record["loss"]):
        record["diverged_at"] = int(first_bad.item())
    return record
