"""The course's shared parameters, in one place: every lab's parameters cell reads them from here.

    from labkit import course
    term = course.current()        # $LABKIT_COURSE: 'course' (the assignment's values) or '2024'
    qs, target = term.qs, term.target

Two editions of the assignment differ only in the pruning fractions and the target sparsity: the
course's ``qs = (0.4, 0.6, 0.8)``, ``target = 0.8``; the 2024 edition's ``(0.3, 0.5, 0.7)``, ``0.7``.
An instructor picks one in one line (``export LABKIT_COURSE=2024``, or ``course.current("2024")`` in
a notebook) or adds an edition to :data:`EDITIONS`. A parameter that another depends on is derived
here, not repeated in a notebook (Lab 4's sparsities always contain the target; every width that a
later part fine-tunes is one that (b) measured), and an edition that breaks those rules is refused.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from . import settings
from .checks import fraction, integer

__all__ = ["Course", "EDITIONS", "current"]


def _widths(name: str, values) -> tuple[int, ...]:
    out = tuple(integer(f"{name} bits", b, minimum=1, maximum=16) for b in values)
    if not out or len(set(out)) != len(out):
        raise ValueError(f"{name} must be distinct bit widths, at least one, got {values!r}")
    return out


@dataclass(frozen=True)
class Course:
    """One edition's values (epochs as the full profile runs them; ``Profile.epochs`` scales them)."""
    name: str
    qs: tuple[float, ...]                   # Lab 2 (b): fractions pruned one-shot, without fine-tuning
    target: float                           # the final sparsity: Lab 2 (c)-(e), Lab 3 (d)-(e), Lab 4
    epochs: int = 20                        # fine-tuning epochs: Lab 2 (c), Lab 3 (c)-(d)
    prune_steps: int = 10                   # Lab 2 (d)-(e), Lab 3 (e): prune before each of these epochs
    extra_epochs: int = 10                  # ... then train this many more at the target
    seeds: tuple[int, ...] = (0, 1, 2)      # every compared fine-tuning run is repeated with these
    val_fraction: float = 0.5               # of the test images: they choose epochs and models
    ptq_bits: tuple[int, ...] = (6, 5, 4, 3, 2)   # Lab 3 (b), (f): post-training quantization
    qat_bits: tuple[int, ...] = (4, 3, 2)         # Lab 3 (c)-(d): fine-tuned widths (some of ptq_bits)
    sym_qat_bits: tuple[int, ...] = (4, 2)        # Lab 3 (f): symmetric fine-tuning (some of qat_bits)
    bits: int = 4                           # Lab 3 (e) and Lab 4 (a): the width of the compressed model
    lab4_other_sparsities: tuple[float, ...] = (0.5, 0.9, 0.95)   # Lab 4 (b), besides the target
    scan_sparsities: tuple[float, ...] = (0.3, 0.5, 0.7, 0.8, 0.9, 0.95)   # Lab 2 (f): the sensitivity scan
    mixed_bits: tuple[int, ...] = (2, 3, 4)       # Lab 3 (g): the widths a layer may get
    budget_bits: int = 3                          # Lab 3 (g): the byte budget is the uniform model's at this width

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)
        if not isinstance(self.name, str) or not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", self.name):
            raise ValueError(f"Course.name must be lower-case letters, digits, '.', '_' or '-' (what LABKIT_COURSE, "
                             f"read in lower case, can select, and a folder's name: no '/'), got {self.name!r}")
        qs = tuple(fraction("qs", q, closed=False) for q in self.qs)
        if not qs or list(qs) != sorted(set(qs)):
            raise ValueError(f"qs must be increasing fractions in (0, 1), at least one, got {self.qs!r}")
        set_("qs", qs)
        set_("target", fraction("target", self.target, closed=False))
        for name in ("epochs", "prune_steps", "extra_epochs"):
            set_(name, integer(name, getattr(self, name), minimum=0 if name == "extra_epochs" else 1))
        seeds = tuple(integer("seed", s, minimum=0) for s in self.seeds)
        if len(seeds) < 2 or len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be two or more distinct ints (the noise over seeds needs two), "
                             f"got {self.seeds!r}")
        set_("seeds", seeds)
        set_("val_fraction", fraction("val_fraction", self.val_fraction, closed=False))
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"{self.name}: val_fraction must be in (0, 1) (some test images choose, the others "
                             f"report), got {self.val_fraction!r}")
        ptq, qat, sym = (_widths(n, getattr(self, n)) for n in ("ptq_bits", "qat_bits", "sym_qat_bits"))
        for small, big, what in ((qat, ptq, "qat_bits within ptq_bits"), (sym, qat, "sym_qat_bits within qat_bits"),
                                 ((integer("bits", self.bits, minimum=1, maximum=16),), qat,
                                  "bits within qat_bits")):
            if not set(small) <= set(big):
                raise ValueError(f"{self.name}: {what} (a later part compares with the earlier one's run at "
                                 f"each width), got {small} and {big}")
        if 1 in sym:
            raise ValueError(f"{self.name}: sym_qat_bits must be 2 or more (a symmetric 1-bit grid has the single "
                             f"level 0), got {self.sym_qat_bits!r}")
        set_("ptq_bits", ptq), set_("qat_bits", qat), set_("sym_qat_bits", sym)
        scan = tuple(fraction("scan_sparsities", q, closed=False) for q in self.scan_sparsities)
        if not scan or list(scan) != sorted(set(scan)) or scan[-1] <= self.target:
            raise ValueError(f"{self.name}: scan_sparsities must be increasing fractions in (0, 1) reaching beyond "
                             f"the target {self.target:g} (Lab 2 (f) allocates the target within them), got {self.scan_sparsities!r}")
        set_("scan_sparsities", scan)
        mixed = tuple(sorted(_widths("mixed_bits", self.mixed_bits)))
        budget = integer("budget_bits", self.budget_bits, minimum=1, maximum=16)
        if len(mixed) < 2 or budget not in mixed:
            raise ValueError(f"{self.name}: mixed_bits must hold two or more widths, budget_bits ({budget}) among them "
                             f"(the uniform model at the budget is one allocation), got {self.mixed_bits!r}")
        set_("mixed_bits", mixed)
        set_("lab4_other_sparsities", tuple(fraction("lab4_other_sparsities", s, closed=False)
                                            for s in self.lab4_other_sparsities))

    @property
    def lab4_sparsities(self) -> tuple[float, ...]:
        """Lab 4 (b)'s sparsities: the other ones and the target, increasing (derived, so that the
        target is always among them)."""
        return tuple(sorted({*self.lab4_other_sparsities, self.target}))

    def replace(self, **changes) -> "Course":
        """A copy with some values changed (checked again), e.g. ``term.replace(seeds=(0, 1))``."""
        return dataclasses.replace(self, **changes)

    def folder(self, profile) -> str:
        """The name of the folder a run of this edition under ``profile`` (a
        :class:`labkit.settings.Profile`) keeps its checkpoints and results in: the profile's name for the
        course's edition (``full``, ``ci``), ``<profile>-<edition>`` for another (``ci-2024``), so that one
        edition's run never overwrites, or is read as, the other's."""
        return settings.run_name(profile, self.name)

    def describe(self) -> str:
        """One line for a notebook's header: the edition and the values the editions differ in."""
        return (f"course edition '{self.name}': pruning fractions {', '.join(f'{q:g}' for q in self.qs)}, "
                f"target sparsity {self.target:g}")


EDITIONS = {
    "course": Course("course", qs=(0.4, 0.6, 0.8), target=0.8),
    "2024": Course("2024", qs=(0.3, 0.5, 0.7), target=0.7),
}


def current(name: str | None = None) -> Course:
    """The edition named ``name``, or by ``$LABKIT_COURSE`` (default ``course``)."""
    name = settings.course() if name is None else name
    if name not in EDITIONS:
        raise ValueError(f"no course edition {name!r}; the editions are {sorted(EDITIONS)} "
                         f"(set LABKIT_COURSE to one of them)")
    return EDITIONS[name]
