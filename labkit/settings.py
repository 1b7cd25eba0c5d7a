"""Every environment setting of labkit, read here and nowhere else.

=================== =========================================================================
``LABKIT_DATA``      folder of the datasets and the checkpoint (default: the per-user cache)
``LABKIT_PROFILE``   ``full`` (the reference run) or ``ci`` (a quick run, see :class:`Profile`)
``LABKIT_DEVICE``    ``cpu``, ``cuda``, ``cuda:N`` or ``mps``: overrides the automatic choice
``LABKIT_PROGRESS``  ``auto`` (notebook widgets or text), ``text`` or ``off``
``LABKIT_COURSE``    the edition of the course's parameters (``labkit.course``): ``course`` or ``2024``
``LABKIT_SUBSET``    ``course``: read the course's CIFAR-10 subset (the first 1017 images of every
                     batch) out of the full dataset, as the stored outputs were computed; ``all``
                     (default): every image the folder holds
=================== =========================================================================

Each function reads its variable when it is called; the public entry points (``data.cifar10``,
``devices.pick_device``, ``train.train``, ``report.Results``, ...) call them once and pass the
value down as an argument, so nothing below them reads the environment.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PROFILES", "PROGRESS_MODES", "SUBSETS", "Profile", "data_folder", "profile", "device", "progress",
           "subset", "course"]

PROGRESS_MODES = ("auto", "text", "off")
SUBSETS = ("all", "course")


@dataclass(frozen=True)
class Profile:
    """How big a run is. ``full``: every epoch and training image, as the labs state (the reference
    run). ``ci``: epoch counts divided by ten (at least one), training on the first 1024 images only,
    so that a notebook re-executes in a minute or two. Evaluation is never shrunk, so cells that only
    evaluate print what the reference run printed."""
    name: str                    # 'full' or 'ci'
    epoch_scale: float           # multiply every epoch count by this (then ceil, at least 1)
    train_samples: int | None    # train on the first N images only; None: all of them

    @property
    def quick(self) -> bool:
        """True for a run that trains less than the labs state (not the reference run)."""
        return self.epoch_scale < 1 or self.train_samples is not None

    def verdict(self, text) -> str:
        """``str(text)``, a verdict that rests on training; in a quick run, marked as one that cannot
        answer the question (its models trained a tenth of the epochs on a fifth of the images):
        ``print(" -", run.verdict(stats.compare_seeds(...)))``. Verdicts of evaluation only (no
        training) are the reference run's in every profile and are printed as they are."""
        text = str(text)
        if not self.quick:
            return text
        return (f"{text} [quick run (profile {self.name}): its models trained far less than the lab states, "
                f"so this verdict cannot answer the question; base written answers on the full run]")

    def epochs(self, n: int) -> int:
        """An epoch count of the course (``n``) as this profile runs it: 20 -> 20 (full), 2 (ci)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"epochs: n must be a non-negative int, got {n!r}")
        return 0 if n == 0 else max(1, math.ceil(n * self.epoch_scale))


PROFILES = {
    "full": Profile("full", epoch_scale=1.0, train_samples=None),
    "ci": Profile("ci", epoch_scale=0.1, train_samples=1024),
}


def _read(name: str, default: str) -> str:
    return os.environ.get(name, default).strip().lower() or default


def run_name(profile: Profile, edition: str = "course") -> str:
    """The name of a run's folder (checkpoints, results): the profile's name for the course's edition
    (``full``, ``ci``), ``<profile>-<edition>`` for another (``ci-2024``), so that one edition's run
    never overwrites, or is read as, another's."""
    if not isinstance(profile, Profile):
        raise ValueError(f"profile must be a labkit.settings.Profile (settings.profile()), got {profile!r}")
    if not isinstance(edition, str) or not edition or "/" in edition:
        raise ValueError(f"edition must be a course edition's name (course.current().name), got {edition!r}")
    return profile.name if edition == "course" else f"{profile.name}-{edition}"


def profile() -> Profile:
    """The run profile named by ``$LABKIT_PROFILE`` (default ``full``)."""
    name = _read("LABKIT_PROFILE", "full")
    if name not in PROFILES:
        raise ValueError(f"LABKIT_PROFILE={name!r} is not a profile; use one of {sorted(PROFILES)}")
    return PROFILES[name]


def progress() -> str:
    """``$LABKIT_PROGRESS``: ``auto`` (default), ``text`` or ``off``."""
    mode = _read("LABKIT_PROGRESS", "auto")
    if mode not in PROGRESS_MODES:
        raise ValueError(f"LABKIT_PROGRESS={mode!r} is not a mode; use one of {list(PROGRESS_MODES)}")
    return mode


def subset() -> str:
    """``$LABKIT_SUBSET``: ``all`` (default) or ``course`` (see ``labkit.data.cifar10``)."""
    name = _read("LABKIT_SUBSET", "all")
    if name not in SUBSETS:
        raise ValueError(f"LABKIT_SUBSET={name!r} is not a subset; use one of {list(SUBSETS)}")
    return name


def course() -> str:
    """``$LABKIT_COURSE`` as written (default ``course``); ``labkit.course.current`` checks it."""
    return _read("LABKIT_COURSE", "course")


def device() -> str | None:
    """``$LABKIT_DEVICE`` as written (checked by ``devices.pick_device``), or None when unset."""
    return os.environ.get("LABKIT_DEVICE", "").strip() or None


def data_folder(root=None) -> tuple[Path, str]:
    """``(folder, where it came from)``: ``root`` if given, else ``$LABKIT_DATA``, else
    ``$XDG_CACHE_HOME/labkit``, else ``~/.cache/labkit``. The second item names the source for
    error messages. A leading ``~`` is expanded; an empty variable counts as unset. The folder is
    neither created nor checked here."""
    if root is not None:
        return Path(root).expanduser(), "the root= argument"
    env = os.environ.get("LABKIT_DATA", "").strip()     # stripped like every variable: " " is unset
    if env:
        return Path(env).expanduser(), "$LABKIT_DATA"
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "labkit", "the default cache $XDG_CACHE_HOME/labkit"
    return Path("~/.cache").expanduser() / "labkit", "the default cache ~/.cache/labkit"
