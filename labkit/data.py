"""CIFAR-10 as uint8 tensors, batched augmentation and a minimal batch iterator.

The dataset is held whole as ``uint8`` tensors (50 000 x 3 x 32 x 32 is 150 MB), moved once
to the training device, shuffled with ``torch.randperm(device=...)`` and augmented with
batched tensor ops: no DataLoader, no worker processes, no torchvision (as in airbench).

    data = cifar10()                       # downloads once into data_dir(), then reads it
    data = shrink(data, settings.profile())  # the CI profile trains on fewer images, visibly
    tuned = validation_from_test(data)     # training runs: tuned.val chooses the epoch, tuned.test reports
    data = data.to(device)
    for X, y in batches(data.train, 256, shuffle=True, augment=True, generator=g):
        ...                                # X (B, 3, 32, 32) float32 in [0, 1], y (B,) int64

Normalisation is not done here: the model carries its own mean/std.

Security: the official batch files are Python pickles. They are read with a restricted
unpickler that resolves only the globals a numpy array needs (see ``_ALLOWED``), so a
tampered file cannot run code; anything else raises ``pickle.UnpicklingError``. A file that
is truncated or holds something else than a batch raises :class:`DamagedFileError`, naming it;
``cifar10(download=True)`` then replaces the folder with the official files.
"""
from __future__ import annotations

import codecs
import dataclasses
import hashlib
import importlib
import os
import pickle
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import settings
from .checks import fraction as check_fraction, integer
from .download import DownloadError, check_folder, fetch, md5 as file_md5, offline_hint

__all__ = ["CIFAR10_URL", "CIFAR10_MD5", "COURSE_SUBSET_IMAGES", "COURSE_SUBSET_SHA256", "Split", "CIFAR10",
           "DamagedFileError", "cifar10", "fingerprint", "shrink", "is_reference_subset", "split_validation",
           "validation_from_test", "augment", "batches"]

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
TARBALL = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
NUM_CLASSES = 10
FULL_TRAIN_IMAGES = 50_000  # the official training batches together (the offline subset has 5085)
PAD = 4  # zero padding of the random crop (the course's "random crop 32, padding 4")

# The course's subset of CIFAR-10, on which the notebooks' stored outputs were computed: the first
# 1017 images of every official batch (5085 train / 1017 test). ``cifar10(subset="course")`` (or
# LABKIT_SUBSET=course) reads it out of the full dataset; it is recognised by its content, the
# SHA-256 of its pixels and labels (:func:`fingerprint`), not by a file's bytes.
COURSE_SUBSET_IMAGES = 1017
COURSE_SUBSET_SHA256 = "5ea68e1c73cde749acbaa020e3f09fba81bcbb8827748ef42d6fd9a589858312"


# --------------------------------------------------------------------------- containers

@dataclass
class Split:
    """One part of the dataset, held as tensors on one device."""
    images: torch.Tensor  # (N, 3, 32, 32) uint8, pixel values 0..255
    labels: torch.Tensor  # (N,) int64, class indices

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"Split.images must be a (N, C, H, W) uint8 tensor, got "
                             f"{self.images.dtype} of shape {tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.dim() != 1:
            raise ValueError(f"Split.labels must be a (N,) int64 tensor, got "
                             f"{self.labels.dtype} of shape {tuple(self.labels.shape)}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"Split has {len(self.images)} images but {len(self.labels)} labels")
        if self.images.device != self.labels.device:
            raise ValueError(f"Split.images is on {self.images.device} but labels on "
                             f"{self.labels.device}")

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index) -> "Split":
        """A sub-split: ``split[:2000]`` or ``split[index_tensor]`` (an int index is refused)."""
        if isinstance(index, int):
            raise TypeError("index a Split with a slice or an index tensor, e.g. split[i:i+1]")
        return Split(self.images[index], self.labels[index])

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device) -> "Split":
        """A new Split with both tensors on ``device`` (this one is unchanged)."""
        return Split(self.images.to(device), self.labels.to(device))


@dataclass
class CIFAR10:
    """The dataset: train and test splits, the ten class names (index = label) and, optionally,
    validation images that choose the epoch of a training run (:func:`validation_from_test`).

    ``val_origin`` says where ``val`` comes from, as :meth:`protocol` prints it (e.g. "of the 1017 test
    images (class-balanced, seed 0)"); ``test`` then holds only the images the results are reported on.
    """
    train: Split
    test: Split
    classes: list[str]
    val: Split | None = None
    val_origin: str = ""

    def __post_init__(self):
        if self.val is not None and not isinstance(self.val, Split):
            raise ValueError(f"CIFAR10.val must be a Split or None, got {type(self.val).__name__}")

    def to(self, device) -> "CIFAR10":
        val = None if self.val is None else self.val.to(device)
        return CIFAR10(self.train.to(device), self.test.to(device), list(self.classes), val, self.val_origin)

    def protocol(self) -> str:
        """How a training run on this data chooses and reports, in one sentence: which images choose the
        epoch and which the results are reported on (no validation images: no choice, the last epoch)."""
        if self.val is None:
            return (f"no validation images: no epoch is selected, the last one is reported "
                    f"(on {len(self.test)} test images)")
        if self.val_origin:
            return (f"validation: {len(self.val)} {self.val_origin} choose the epoch; "
                    f"reported on the other {len(self.test)}")
        return f"validation: {len(self.val)} images choose the epoch; reported on {len(self.test)} test images"


# --------------------------------------------------------------------------- safe unpickling

def _numpy_multiarray():
    # numpy >= 2 moved numpy.core to numpy._core (importing numpy.core warns there)
    try:
        return importlib.import_module("numpy._core.multiarray")
    except ImportError:  # numpy 1.x
        return importlib.import_module("numpy.core.multiarray")


def _latin1_encode(text, encoding="latin1"):
    """``_codecs.encode`` as Python 3 writes bytes into protocol-2 pickles, latin-1 only."""
    if not isinstance(text, str) or codecs.lookup(encoding).name != "iso8859-1":
        raise _Refused(f"refusing _codecs.encode({type(text).__name__}, "
                                     f"{encoding!r}): only latin-1 text is allowed")
    return text.encode("latin1")


_reconstruct = _numpy_multiarray()._reconstruct
# Exactly what the official files reference (pickletools.dis on data_batch_1:
# numpy.core.multiarray._reconstruct, numpy.ndarray, numpy.dtype; batches.meta: none),
# the numpy-2 spelling of the first, and _codecs.encode (latin-1 only), which Python 3
# uses for bytes in protocol-2 pickles (e.g. a subset re-saved with pickle.dump(..., protocol=2)).
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class DamagedFileError(ValueError):
    """A dataset file is truncated or does not hold what a CIFAR-10 batch holds; ``.path`` names it."""

    def __init__(self, path, message: str):
        super().__init__(message)
        self.path = Path(path)


class _Refused(pickle.UnpicklingError):
    """The unpickler refused a global: a tampered file, not a damaged one (never repaired silently)."""


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals in ``_ALLOWED``; anything else is refused."""

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            allowed = ", ".join(f"{m}.{n}" for m, n in _ALLOWED)
            raise _Refused(
                f"refusing to load global {module}.{name}: CIFAR-10 batch files only need "
                f"{allowed}; this file is not an official CIFAR-10 batch") from None


def _restricted_load(file) -> object:
    """Unpickle a CIFAR-10 batch file (path or binary file object) safely, bytes keys kept."""
    if isinstance(file, (str, os.PathLike)):
        with open(file, "rb") as f:
            return _RestrictedUnpickler(f, encoding="bytes").load()
    return _RestrictedUnpickler(file, encoding="bytes").load()


def _read_pickle(path) -> object:
    """``_restricted_load(path)``; a truncated or garbled file is a DamagedFileError naming it."""
    try:
        return _restricted_load(path)
    except _Refused:
        raise
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, IndexError, KeyError,
            AttributeError, MemoryError, UnicodeDecodeError) as e:
        raise DamagedFileError(path, f"{path}: cannot be read as a CIFAR-10 batch ({type(e).__name__}: "
                                     f"{e or 'the file ends too early'}); it is truncated or damaged") from e


def _as_str_keys(obj, path) -> dict:
    if not isinstance(obj, dict):
        raise DamagedFileError(path, f"{path}: expected a dict, got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _load_batch(path) -> tuple[np.ndarray, np.ndarray]:
    """Read one batch file: ``data`` (N, 3072) uint8 and ``labels`` (N,) int64, validated."""
    d = _as_str_keys(_read_pickle(path), path)
    missing = [k for k in ("data", "labels") if k not in d]
    if missing:
        raise DamagedFileError(path, f"{path}: missing key(s) {missing}; found {sorted(d)}")
    data, labels = d["data"], d["labels"]
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == 3 * 32 * 32):
        desc = (f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray)
                else type(data).__name__)
        raise DamagedFileError(path, f"{path}: 'data' must be a (N, 3072) uint8 array, got {desc}")
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != len(data):
        raise DamagedFileError(path, f"{path}: {len(data)} images but labels of shape {labels.shape}")
    if len(labels) and labels.dtype.kind not in "iu":      # strings, None, floats: no range to compare
        kinds = sorted({type(v).__name__ for v in labels.tolist()})
        raise DamagedFileError(path, f"{path}: labels must be integers in 0..{NUM_CLASSES - 1}, got an array of "
                                     f"dtype {labels.dtype} holding {', '.join(kinds)} (first: {labels[0]!r})")
    if len(labels) and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DamagedFileError(path, f"{path}: labels must be integers in 0..{NUM_CLASSES - 1}, got "
                         f"dtype {labels.dtype}, range {labels.min()}..{labels.max()}")
    return data, labels.astype(np.int64)


def _load_classes(path) -> list[str]:
    d = _as_str_keys(_read_pickle(path), path)
    names = d.get("label_names")
    if not isinstance(names, list) or len(names) != NUM_CLASSES:
        raise DamagedFileError(path, f"{path}: expected 'label_names', a list of {NUM_CLASSES} names")
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]


def _load_split(folder: Path, names, first: int | None = None) -> Split:
    """The batch files ``names`` of ``folder`` as one Split; ``first``: only the first images of each."""
    parts = [_load_batch(folder / n) for n in names]
    if first is not None:
        short = [f"{n} ({len(p[1])})" for n, p in zip(names, parts) if len(p[1]) < first]
        if short:
            raise ValueError(f"{folder}: the course's subset is the first {first} images of every batch, but "
                             f"these batches hold fewer: {', '.join(short)}. Point LABKIT_DATA at the full "
                             f"CIFAR-10 (or at the course's subset itself)")
        parts = [(d[:first], l[:first]) for d, l in parts]
    data = np.concatenate([p[0] for p in parts])      # (N, 3072), a fresh writable copy
    labels = np.concatenate([p[1] for p in parts])    # (N,)
    # rows are stored channel-major: 1024 red, 1024 green, 1024 blue, each 32x32 row-major
    images = torch.from_numpy(data).view(-1, 3, 32, 32)
    return Split(images, torch.from_numpy(labels))


# --------------------------------------------------------------------------- download + extract

def _safe_extract(tarball: Path, root: Path) -> None:
    """Extract the ``cifar-10-batches-py/`` files of ``tarball`` into ``root``.

    Only regular files and folders under ``cifar-10-batches-py/`` are accepted (no absolute
    paths, ``..``, links or devices). Extraction goes to a temporary folder first; each file
    is then moved into place with ``os.replace``, so a failure leaves no partial folder.
    """
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".cifar10-extract-"))
    try:
        with tarfile.open(tarball, "r:*") as tar:
            members = tar.getmembers()
            for m in members:
                parts = Path(m.name).parts
                if (Path(m.name).is_absolute() or ".." in parts or not parts
                        or parts[0] != FOLDER or not (m.isfile() or m.isdir())):
                    raise ValueError(f"{tarball}: unexpected member {m.name!r} (only regular "
                                     f"files under {FOLDER}/ are allowed); not extracting")
            kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(tmp, members=members, **kwargs)
        src = tmp / FOLDER
        needed = [*TRAIN_FILES, TEST_FILE, META_FILE]
        absent = [n for n in needed if not (src / n).is_file()]
        if absent:
            raise ValueError(f"{tarball}: does not contain {FOLDER}/{absent}")
        (root / FOLDER).mkdir(exist_ok=True)
        for f in src.iterdir():
            if f.is_file():
                os.replace(f, root / FOLDER / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _missing(folder: Path) -> list[str]:
    return [n for n in (*TRAIN_FILES, TEST_FILE, META_FILE) if not (folder / FOLDER / n).is_file()]


def cifar10(root=None, *, subset: str | None = None, download: bool = True, verbose: bool = True,
            progress=None) -> CIFAR10:
    """Load CIFAR-10 from ``<root>/cifar-10-batches-py/`` (root resolved by ``data_dir``).

    When files are missing: a ``cifar-10-python.tar.gz`` already in root (e.g. copied there by
    hand) is checked against ``CIFAR10_MD5`` and extracted and kept; otherwise, with
    ``download=True``, the tarball is fetched from ``CIFAR10_URL`` into root, verified,
    extracted, and then deleted (the extracted folder is what is read).

    When a file is there but damaged (truncated, or not a batch): the folder is replaced by the
    official files, re-extracted from the tarball in root when it is there, else downloaded with
    ``download=True`` (a line says so); with ``download=False`` and no tarball, a
    :class:`DamagedFileError` names the file and says how to repair it.

    Any number of images per batch file is accepted (the course's offline subset has 1017).
    ``subset``: ``"all"`` (every image of the folder) or ``"course"`` (the first
    ``COURSE_SUBSET_IMAGES`` of every batch: the data of the stored notebook outputs, read out of the
    full dataset; the offline subset itself reads unchanged); None: ``$LABKIT_SUBSET`` (default all).
    Returns images (N, 3, 32, 32) uint8 and labels (N,) int64 on the CPU; ``.to(device)`` moves.
    ``progress``: the download bar's mode (None: ``$LABKIT_PROGRESS``, read once here; False: off).

    Raises FileNotFoundError (missing, ``download=False``), NotADirectoryError (root, or
    ``$LABKIT_DATA``, names a file), DownloadError / ChecksumError (download failed),
    DamagedFileError (a ValueError: a file with unexpected contents), pickle.UnpicklingError
    (a file that tries to load anything but numpy arrays). Messages name the folder looked
    in, where that folder came from, and how to point at an offline copy.
    """
    root, source = settings.data_folder(root)
    check_folder(root, source)
    if source == "$LABKIT_DATA" and not root.is_dir():   # a typo never makes a stray folder or downloads there
        raise FileNotFoundError(f"LABKIT_DATA={str(root)!r} names no folder ({root.absolute()} does not exist): "
                                f"fix the path, create the folder (to download CIFAR-10 into it), or unset "
                                f"LABKIT_DATA for the default cache; nothing was created or downloaded")
    subset = settings.subset() if subset is None else subset
    if subset not in settings.SUBSETS:
        raise ValueError(f"subset must be one of {list(settings.SUBSETS)}, got {subset!r}")
    first = COURSE_SUBSET_IMAGES if subset == "course" else None
    if progress is None or progress is True:
        progress = settings.progress()
    missing = _missing(root)
    if missing:
        where = (f"CIFAR-10 was looked for in {root.absolute() / FOLDER} (folder from {source}; "
                 f"missing: {', '.join(missing)}).")
        if not _restore(root, download, progress, where):
            hint = offline_hint(f"{FOLDER}/ (or {TARBALL})")
            raise FileNotFoundError(f"{where} download=False, so nothing was fetched. "
                                    f"Pass download=True to fetch it from {CIFAR10_URL}. {hint}")
        if _missing(root):  # defensive: extraction reported success but files are absent
            raise FileNotFoundError(f"{where} Extraction did not produce them. "
                                    f"{offline_hint(f'{FOLDER}/ (or {TARBALL})')}")
    try:
        data = _read(root / FOLDER, first)
    except DamagedFileError as e:
        where = f"{e} (folder from {source})."
        if verbose and ((root / TARBALL).is_file() or download):
            print(f"CIFAR-10: {e.path.name} is damaged; replacing {FOLDER}/ with the official files")
        if not _restore(root, download, progress, where):
            raise DamagedFileError(e.path, f"{where} Pass download=True to replace {FOLDER}/ with the official "
                                           f"files (downloaded from {CIFAR10_URL}), or put {TARBALL} in the "
                                           f"folder, or copy a good {e.path.name} over it.") from e
        data = _read(root / FOLDER, first)     # damaged again: the error names the file
    if verbose:  # where the folder came from, not the machine's path (notebook outputs are published)
        which = f"the course's subset, the first {first} images of every batch, " if first else ""
        print(f"CIFAR-10: {len(data.train)} train / {len(data.test)} test images ({which}folder from {source})")
    return data


def _read(folder: Path, first: int | None = None) -> CIFAR10:
    return CIFAR10(train=_load_split(folder, TRAIN_FILES, first), test=_load_split(folder, [TEST_FILE], first),
                   classes=_load_classes(folder / META_FILE))


def _restore(root: Path, download: bool, progress, where: str) -> bool:
    """Put the official files into ``root/FOLDER``: from a good tarball in root (kept), else,
    with ``download``, from a fetched one (deleted after extraction). False: nothing to do it with."""
    tarball = root / TARBALL
    if tarball.is_file() and file_md5(tarball) == CIFAR10_MD5:
        _safe_extract(tarball, root)                       # a copy placed by hand: keep it
        return True
    if not download:
        return False
    try:
        fetch(CIFAR10_URL, tarball, md5=CIFAR10_MD5, desc="CIFAR-10", progress=progress)
    except DownloadError as e:
        raise type(e)(f"{e}\n{where}") from e
    try:
        _safe_extract(tarball, root)
    finally:
        tarball.unlink(missing_ok=True)                    # we fetched it: the folder suffices
    return True


def shrink(data: CIFAR10, profile: settings.Profile) -> CIFAR10:
    """``data`` as ``profile`` (a :class:`labkit.settings.Profile`) trains on it: unchanged in the
    full profile; in CI only the first ``profile.train_samples`` training images. The test and
    validation images are never shrunk, so evaluation-only results are the same in both profiles::

        cifar = data.shrink(data.cifar10(), settings.profile())
    """
    if not isinstance(data, CIFAR10):
        raise ValueError(f"shrink needs a labkit.data.CIFAR10 (from data.cifar10()), got {type(data).__name__}")
    if not isinstance(profile, settings.Profile):
        raise ValueError(f"shrink needs a labkit.settings.Profile (settings.profile()), got {profile!r}")
    n = profile.train_samples
    if n is None or n >= len(data.train):
        return data
    return dataclasses.replace(data, train=data.train[:n], classes=list(data.classes))


def fingerprint(data: CIFAR10) -> str:
    """SHA-256 of the content of ``data``: the pixels and labels of its training and test images, in
    order (not a file's bytes, so that the same images read from other files give the same value)."""
    if not isinstance(data, CIFAR10):
        raise ValueError(f"fingerprint needs a labkit.data.CIFAR10, got {type(data).__name__}")
    h = hashlib.sha256()
    for split in (data.train, data.test):
        h.update(len(split).to_bytes(8, "little"))
        h.update(split.images.cpu().contiguous().numpy().tobytes())
        h.update(split.labels.cpu().to(torch.int64).numpy().astype("<i8").tobytes())
    return h.hexdigest()


def is_reference_subset(root=None, *, subset: str | None = None) -> bool:
    """True when :func:`cifar10` (same ``root`` and ``subset``) gives the course's subset, the data of
    the stored notebook outputs (their checked cells compare equal only on it), judged by content:
    the offline copy, or the full dataset read with ``subset="course"``. False for other data or none."""
    try:
        data = cifar10(root, subset=subset, download=False, verbose=False)
    except (OSError, ValueError, pickle.UnpicklingError):
        return False
    return fingerprint(data) == COURSE_SUBSET_SHA256


def split_validation(split: Split, fraction: float, *, seed: int = 0) -> tuple[Split, Split]:
    """Hold out a class-balanced part of ``split``: ``(rest, held)``.

    From every class, ``round(fraction * count)`` images (at least one when ``fraction > 0`` and the
    class has two or more) are drawn with ``torch.randperm`` seeded by ``seed``; the rest stay.
    Both keep the original order of the images. ``fraction = 0`` returns ``(split, empty)``. The draw
    happens on the CPU, so the same seed holds out the same images on every device.
    """
    check_fraction("fraction", fraction, closed=False, hint=" (e.g. 0.1 holds out 10 %)")
    if fraction == 0:
        return split, split[:0]
    labels = split.labels.cpu()
    g = torch.Generator().manual_seed(seed)
    held = torch.zeros(len(labels), dtype=torch.bool)
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()                  # this class's images
        k = round(fraction * len(idx))
        k = min(max(k, 1), len(idx) - 1) if len(idx) > 1 else 0
        held[idx[torch.randperm(len(idx), generator=g)[:k]]] = True
    held = held.to(split.device)
    return split[~held], split[held]



def validation_from_test(cifar: CIFAR10, fraction: float = 0.5, *, seed: int = 0) -> CIFAR10:
    """``cifar`` with validation images taken from its test images: ``val`` = a class-balanced,
    seed-fixed ``fraction`` of ``cifar.test`` (:func:`split_validation`), ``test`` = the other test
    images, ``train`` unchanged. Both parts keep the original order; they are disjoint.

    Why from the test images: the pretrained checkpoint was trained on all 50 000 training images, so
    a hold-out from the training images is no longer unseen (it scores far above the test images) and
    choosing an epoch on it is close to arbitrary. The test images were never trained on: ``val``
    chooses, the other part reports. Evaluation-only results (which choose nothing) may still use
    every test image, ``cifar.test`` of the data this was made from::

        cifar = data.shrink(data.cifar10(), run)        # evaluation-only numbers: cifar.test
        tuned = data.validation_from_test(cifar)        # training runs: tuned.val chooses, tuned.test reports
    """
    if not isinstance(cifar, CIFAR10):
        raise ValueError(f"validation_from_test needs a labkit.data.CIFAR10 (from data.cifar10()), "
                         f"got {type(cifar).__name__}")
    if cifar.val is not None:
        raise ValueError(f"this data has {len(cifar.val)} validation images already; take them from the "
                         f"data it was made from (e.g. data.validation_from_test(data.cifar10()))")
    check_fraction("fraction", fraction, closed=False, hint=" (e.g. 0.5: half of the test images validate)")
    integer("seed", seed, minimum=0)
    test, val = split_validation(cifar.test, fraction, seed=seed)
    if len(val) == 0 or len(test) == 0:
        raise ValueError(f"validation_from_test: fraction={fraction} of {len(cifar.test)} test images leaves "
                         f"{len(val)} for validation and {len(test)} to report on; both need images")
    origin = f"of the {len(cifar.test)} test images (class-balanced, seed {seed})"
    return dataclasses.replace(cifar, test=test, classes=list(cifar.classes), val=val, val_origin=origin)

# --------------------------------------------------------------------------- augmentation

def _draw(n: int, generator=None, device=None, pad: int = PAD):
    """Random crop offsets and flips for ``n`` images, drawn in a fixed order (dy, dx, flip).

    dy, dx: (n,) int64, uniform in 0..2*pad (offset of the crop in the padded image; ``pad``
    means no shift); flip: (n,) bool, True with probability 0.5.
    """
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=device)
    flip = torch.rand(n, generator=generator, device=device) < 0.5
    return dy, dx, flip


def _augment_with(images: torch.Tensor, dy, dx, flip, pad: int = PAD) -> torch.Tensor:
    """Crop-with-zero-padding and flip with given per-image parameters, as one gather.

    out[b, c, i, j] = P[b, c, dy[b] + i, dx[b] + j'] with P = images zero-padded by ``pad``
    on every side and j' = W - 1 - j where flip[b] else j.
    """
    B, C, H, W = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))                           # (B, C, H+2p, W+2p)
    rows = dy[:, None] + torch.arange(H, device=images.device)             # (B, H)
    cols = dx[:, None] + torch.arange(W, device=images.device)             # (B, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)                  # mirror the window
    b = torch.arange(B, device=images.device)[:, None, None, None]         # (B, 1, 1, 1)
    c = torch.arange(C, device=images.device)[None, :, None, None]         # (1, C, 1, 1)
    return padded[b, c, rows[:, None, :, None], cols[:, None, None, :]]    # (B, C, H, W)


def _check_images(images):
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise ValueError(f"images must be a (B, C, H, W) tensor, got "
                         f"{getattr(images, 'shape', type(images).__name__)}")


def _check_generator(generator, device: torch.device):
    if generator is not None and generator.device.type != device.type:
        raise ValueError(f"generator is on {generator.device} but the images are on {device}; "
                         f"create it there: torch.Generator(device={str(device)!r})")


def _augment(images: torch.Tensor, generator=None) -> torch.Tensor:
    dy, dx, flip = _draw(len(images), generator, images.device)
    return _augment_with(images, dy, dx, flip)


def augment(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crop (size unchanged, zero padding 4) and horizontal flip (p = 0.5) per image.

    ``images``: (B, C, H, W), any dtype (uint8 for CIFAR-10); returns a new tensor of the same
    shape, dtype and device (input unchanged). Batched tensor ops on ``images.device``.
    Offsets dy, dx are uniform in 0..8 (4 = no shift), drawn from ``generator``, which must
    live on the images' device: ``torch.Generator(device=images.device).manual_seed(0)``;
    None uses torch's default generator for that device. Same seed, same output.
    """
    _check_images(images)
    _check_generator(generator, images.device)
    return _augment(images, generator)


# --------------------------------------------------------------------------- batches

def batches(split: Split, batch_size: int, *, shuffle: bool = False, augment: bool = False,
            generator: torch.Generator | None = None, drop_last: bool = False):
    """Iterate once over ``split`` in batches: ``(X, y)`` on the split's device.

    X: (B, 3, 32, 32) float32 = uint8 / 255, in [0, 1] (not normalised: the model does it);
    y: (B,) int64. ``shuffle`` draws one ``torch.randperm(N)`` per call (per epoch);
    ``augment`` applies ``augment()`` to each batch. Both use ``generator``, which must be on
    the split's device; the same seed gives the same batches. The last batch is smaller unless
    ``drop_last``. Arguments are checked now, not at the first ``next()``.
    """
    if not isinstance(split, Split):
        raise TypeError(f"batches() needs a Split (e.g. data.train), got {type(split).__name__}")
    integer("batch_size", batch_size, minimum=1)
    _check_generator(generator, split.device)
    return _iterate(split, batch_size, shuffle, augment, generator, drop_last)


def _iterate(split, batch_size, shuffle, do_augment, generator, drop_last):
    n = len(split)
    order = (torch.randperm(n, generator=generator, device=split.device) if shuffle else None)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = slice(start, start + batch_size) if order is None else order[start:start + batch_size]
        images, y = split.images[idx], split.labels[idx]                   # (B, 3, 32, 32) uint8
        if do_augment:
            images = _augment(images, generator)
        yield images.float().div_(255), y
