"""Run profiles: the full reference run, or a CI run that shrinks training.

The profile is chosen by the environment variable ``LABKIT_PROFILE``:

- ``full`` (default): every epoch and every training image, as the labs state.
  This is the reference run that produces the notebooks' stored outputs.
- ``ci``: epoch counts are divided by ten (at least one) and training uses
  the first 1024 images only, so every notebook re-executes in a minute or two.
  Evaluation is never shrunk: cells that only evaluate (a pretrained model,
  pruning without fine-tuning) print exactly what the reference run printed,
  and nbval checks them.

A notebook applies the profile where the reader sees it: its parameters cell passes epoch counts
through :func:`epochs` and its data cell passes the dataset through :func:`shrink`::

    num_epochs = labkit.profile.epochs(20)   # 20 in the reference run, 2 in CI
    cifar = labkit.profile.shrink(labkit.data.cifar10())   # CI: the first 1024 training images

The training loop itself never looks at the profile.
"""
from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    name: str                    # 'full' or 'ci'
    epoch_scale: float           # multiply every epoch count by this (then ceil, at least 1)
    train_samples: int | None    # train on the first N images only; None: all of them


PROFILES = {
    "full": Profile("full", epoch_scale=1.0, train_samples=None),
    "ci": Profile("ci", epoch_scale=0.1, train_samples=1024),
}


def current() -> Profile:
    """The profile named by ``$LABKIT_PROFILE`` (default ``full``)."""
    name = os.environ.get("LABKIT_PROFILE", "full").strip().lower() or "full"
    if name not in PROFILES:
        raise ValueError(f"LABKIT_PROFILE={name!r} is not a profile; use one of {sorted(PROFILES)}")
    return PROFILES[name]


def epochs(n: int) -> int:
    """An epoch count of the course (``n``) as this profile runs it."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise ValueError(f"epochs: n must be a non-negative int, got {n!r}")
    if n == 0:
        return 0
    return max(1, math.ceil(n * current().epoch_scale))


def train_samples() -> int | None:
    """How many training images this profile uses (``None``: all)."""
    return current().train_samples


def shrink(data):
    """``data`` (a :class:`labkit.data.CIFAR10`) as this profile trains on it: unchanged in the full
    profile; in CI only the first :func:`train_samples` training images. The test split is never
    shrunk, so evaluation-only results are the same in both profiles."""
    from .data import CIFAR10

    if not isinstance(data, CIFAR10):
        raise ValueError(f"shrink needs a labkit.data.CIFAR10 (from data.cifar10()), got {type(data).__name__}")
    n = train_samples()
    if n is None or n >= len(data.train):
        return data
    return CIFAR10(data.train[:n], data.test, list(data.classes))
