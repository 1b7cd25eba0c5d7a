"""Writing files so that nothing is lost: every file labkit writes goes through :func:`atomic_write`.

The bytes go to a temporary file in the destination's folder, are flushed to disk, and only then
renamed over the destination (``os.replace``, atomic on POSIX and Windows). A save that fails
halfway (a full disk, a file-size limit, Ctrl-C) leaves the previous file as it was and no
temporary file behind; a full disk is named as such ("no space left", with the file). A save killed
by SIGTERM or SIGKILL (no cleanup runs) leaves its temporary file, named with its pid: the next save
of the same file removes those of processes that no longer run.

A file keeps the permissions of the file it replaces (a new one gets the usual ``0666 & ~umask``,
e.g. 0644); a destination that is a symbolic link has the file it points to written, the link kept.

What is read back is whole: :func:`save_torch` refuses non-finite tensors (naming them) and can
record what the file holds (a JSON description inside torch's zip archive, which ``torch.load``
ignores); :func:`load_torch` checks every record of the archive against its CRC-32 before
``torch.load`` (which does not), so a flipped bit is named with the file instead of loading.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import pickle
import re
import shutil
import tempfile
import zipfile
import zlib
from glob import escape as glob_escape
from pathlib import Path

from . import settings

__all__ = ["atomic_write", "write_bytes", "save_torch", "replace_together", "load_torch", "read_description",
           "run_description", "non_finite", "state_summary"]

_FULL = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}
DESCRIPTION = ".labkit/description.json"      # the record, inside the archive's folder


def _destination(path) -> Path:
    """The file to write: ``path``, or the file a symbolic link ``path`` points to (the link stays)."""
    path = Path(path)
    try:
        if path.is_symlink():
            path = Path(os.path.realpath(path, strict=False))
            if path.is_symlink():               # realpath stops at a link it cannot resolve: a loop
                os.stat(path)                   # raises ELOOP with its errno
        is_dir = path.is_dir()
    except OSError as e:        # a link that loops (ELOOP), a name too long: pathlib's own message
        raise OSError(e.errno, f"cannot write {path}: {e.strerror} (a symbolic link that points back to "
                               f"itself, or a path the system refuses); remove it or name another file",
                      str(path)) from e
    if is_dir:
        raise IsADirectoryError(f"{path} is a folder; name a file to write")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: its folder {path.parent} does not exist")
    return path


def _mode(path: Path) -> int:
    """The permissions a new version of ``path`` gets: those of the file it replaces, or 0666 & ~umask."""
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextlib.contextmanager
def _writable(path: Path):
    """Creating the temporary file beside ``path``: a folder the user may not write is named as such,
    not by the hidden temporary name the system refused."""
    try:
        yield
    except PermissionError as e:
        raise PermissionError(e.errno, f"cannot write {path}: its folder {path.parent} is not writable (permission "
                                       f"denied); nothing was written. Save elsewhere, or ask for write access",
                              str(path)) from e


def _no_space(path: Path, e: BaseException) -> OSError:
    return OSError(errno.ENOSPC, f"no space left to write {path} (the disk is full, or a file-size limit or "
                                 f"quota was reached: {e}); the previous file, if any, is unchanged. Free "
                                 f"some space and save again", str(path))


def _sweep(path: Path, suffix: str) -> None:
    """Remove what saves of ``path`` by processes that no longer run left behind: a save killed by
    SIGTERM or SIGKILL runs no cleanup, so its temporary file (or folder), ``.<name>.<pid>.*<suffix>``,
    a full-size copy, stays. Another running process's save (its pid alive) is left alone."""
    ours = re.compile(rf"\.{re.escape(path.name)}\.(\d+)\.[a-z0-9_]{{8}}{re.escape(suffix)}")  # tempfile's 8 letters
    for stale in path.parent.glob(f".{glob_escape(path.name)}.*{suffix}"):
        match = ours.fullmatch(stale.name)
        if match is None or int(match.group(1)) == os.getpid():
            continue
        pid = match.group(1)
        try:
            os.kill(int(pid), 0)
            continue                                    # alive (or another user's): not ours to remove
        except ProcessLookupError:
            pass
        except OSError:
            continue
        with contextlib.suppress(OSError):
            shutil.rmtree(stale) if stale.is_dir() and not stale.is_symlink() else stale.unlink()


@contextlib.contextmanager
def atomic_write(path, *, suffix: str = ".part"):
    """``with atomic_write(path) as f: f.write(...)``: ``f`` is a binary file in ``path``'s folder;
    on success it replaces ``path``, on any exception (KeyboardInterrupt included) it is removed and
    ``path`` is untouched. The folder must exist."""
    path = _destination(path)
    mode = _mode(path)
    _sweep(path, suffix)
    with _writable(path):
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            try:
                yield f
                f.flush()
                os.fsync(f.fileno())
            except OSError as e:
                if e.errno in _FULL:
                    raise _no_space(path, e) from e
                raise
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_write(path) as f:
        f.write(data)
    return Path(path)


def replace_together(moves: dict) -> None:
    """Rename every ``{written: destination}`` over its destination, all or none: when one rename
    fails, the destinations already replaced get their previous files back (kept as hard links
    until the end) and the error is raised. Each destination keeps its permissions (a new one:
    0666 & ~umask) and its symbolic link. The written files must be in the destinations' file system
    (a rename does not cross file systems)."""
    moves = {Path(src): _destination(dest) for src, dest in moves.items()}
    backups, done = {}, []
    try:
        for src, dest in moves.items():
            os.chmod(src, _mode(dest))
            if dest.exists():
                backup = Path(tempfile.mktemp(prefix=f".{dest.name}.", suffix=".previous", dir=dest.parent))
                os.link(dest, backup)
                backups[dest] = backup
        for src, dest in moves.items():
            os.replace(src, dest)
            done.append(dest)
    except BaseException:
        for dest in done:
            with contextlib.suppress(OSError):
                if dest in backups:
                    os.replace(backups.pop(dest), dest)
                else:
                    os.unlink(dest)
        raise
    finally:
        for backup in backups.values():
            with contextlib.suppress(OSError):
                os.unlink(backup)


def non_finite(obj, prefix: str = "") -> list[str]:
    """The names of the floating-point tensors in ``obj`` (nested dicts, lists, tuples) that hold an
    inf or a NaN, e.g. ``['stage1.0.bn1.running_var']``."""
    import torch

    if isinstance(obj, torch.Tensor):
        bad = obj.is_floating_point() or obj.is_complex()
        return [prefix or "tensor"] if bad and not bool(torch.isfinite(obj).all()) else []
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return []
    return [name for key, value in items for name in non_finite(value, f"{prefix}.{key}" if prefix else str(key))]


def state_summary(state) -> dict:
    """What a model's state dict holds, read from labkit's keys: ``sparsity`` (the fraction of the
    masked weights that pruning masks set to zero; 0.0 without masks) and ``bits`` (the sorted
    widths of its quantizers' settings, ``_extra_state`` dicts with ``bits``; empty: a float model)."""
    import torch

    masks = [v for k, v in state.items() if k.endswith(".mask") and isinstance(v, torch.Tensor)]
    total = sum(m.numel() for m in masks)
    zeros = sum(int((m == 0).sum()) for m in masks)
    bits = sorted({int(v["bits"]) for k, v in state.items() if k.endswith("._extra_state") and isinstance(v, dict)
                   and isinstance(v.get("bits"), int)})
    return {"sparsity": zeros / total if total else 0.0, "bits": bits}


def run_description(**fields) -> dict:
    """A file's description: labkit's version, the run profile and course edition (``LABKIT_PROFILE``,
    ``LABKIT_COURSE``), and ``fields`` (what the file is, the data's fingerprint, ...)."""
    from importlib import metadata

    try:
        version = metadata.version("labkit")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return {"labkit": version, "profile": settings.profile().name, "edition": settings.course(), **fields}


def _plain(obj):
    """``obj`` with every numpy scalar (``np.float64(0.1)``, ``np.int64(4)``, ``np.bool_``) made the
    Python number it equals, in nested dicts (their type kept), lists and tuples: ``torch.load(...,
    weights_only=True)`` refuses numpy scalars, so a file holding one would not load back."""
    import numpy as np

    if isinstance(obj, np.generic) and not isinstance(obj, (np.str_, np.bytes_, np.void)):
        return obj.item()
    if isinstance(obj, dict):
        plain = {k: _plain(v) for k, v in obj.items()}
        if all(plain[k] is obj[k] for k in obj):
            return obj
        try:
            copy = type(obj)(plain)
        except TypeError:
            return plain
        if hasattr(obj, "_metadata"):              # a state dict's module versions, which load_state_dict reads
            copy._metadata = obj._metadata
        return copy
    if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
        items = [_plain(v) for v in obj]
        return obj if all(a is b for a, b in zip(items, obj)) else type(obj)(items)
    return obj


def _unpickler_reason(e: BaseException) -> str:
    """The line of torch's weights_only message that names what it refused."""
    lines = [line.strip() for line in str(e).splitlines() if "WeightsUnpickler error" in line]
    return lines[0].split(". Please use")[0] if lines else f"{type(e).__name__}: {e}"


def save_torch(obj, path, *, description: dict | None = None) -> Path:
    """``torch.save(obj, path)``, atomically; returns the path.

    The bytes are exactly those of ``torch.save(obj, path)``, which names the archive inside the
    file after the file (so its size depends on the name): it is written under the same name in a
    temporary folder beside ``path``, flushed to disk, then renamed over ``path``. With
    ``description`` (a JSON-able dict) one more record, ``<archive>/.labkit/description.json``,
    says what the file holds (:func:`read_description`). A tensor holding inf or NaN is refused,
    by name, and nothing is written: a saved model is finite."""
    import torch

    path = _destination(path)
    bad = non_finite(obj)
    if bad:
        raise ValueError(f"not saving {path}: these tensors hold inf or NaN, and a saved model must be finite "
                         f"(the training diverged, or a value overflowed): {bad[:10]}"
                         f"{f' and {len(bad) - 10} more' if len(bad) > 10 else ''}")
    obj = _plain(obj)       # numpy scalars (a TrainConfig(lr=np.float64(...)), a record): weights_only refuses them
    text = None if description is None else json.dumps(_plain(description), sort_keys=True)
    mode = _mode(path)
    _sweep(path, ".part")
    with _writable(path):
        folder = tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".part", dir=path.parent)
    tmp = Path(folder) / path.name
    try:
        try:
            torch.save(obj, tmp)
            if text is not None:
                with zipfile.ZipFile(tmp, "a") as z:
                    archive = z.namelist()[0].split("/")[0]
                    z.writestr(f"{archive}/{DESCRIPTION}", text)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            try:                                # what is saved loads: read it back as load_torch will
                torch.load(tmp, map_location="cpu", weights_only=True)
            except pickle.UnpicklingError as e:
                raise ValueError(f"not saving {path}: it would not load back with torch.load(weights_only=True) "
                                 f"(it holds an object other than tensors, numbers, strings and plain "
                                 f"containers): {_unpickler_reason(e)}") from e
        except OSError as e:
            if e.errno in _FULL:
                raise _no_space(path, e) from e
            raise
        except RuntimeError as e:        # torch's zip writer (inline_container.cc): "file write failed", "unexpected pos"
            if "inline_container" in str(e) or "write" in str(e):
                raise _no_space(path, e) from e
            raise
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return path


def _verified(path: Path, what: str) -> zipfile.ZipFile:
    """The zip archive at ``path``, every record checked against its CRC-32 (ValueError naming the file)."""
    try:
        z = zipfile.ZipFile(path)
        # torch's reader (miniz) reads an entry marked as a folder (MS-DOS attribute 0x10, or a name
        # ending in "/") as no data at all, leaving the tensor's memory as it was, and zipfile checks
        # no CRC of it: one flipped bit of the central directory loaded garbage without a word.
        # torch writes neither, nor encrypted (flag bit 0) or compressed entries, which zipfile fails on.
        odd = [i.filename for i in z.infolist() if i.external_attr & 0x10 or i.is_dir() or i.flag_bits & 0x1
               or i.compress_type != zipfile.ZIP_STORED]
        damaged = odd[0] if odd else z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, RuntimeError, zlib.error) as e:
        raise ValueError(f"{path} is not a readable {what} ({type(e).__name__}: {e}): it may be truncated "
                         f"(a copy or a save cut short) or another kind of file") from e
    if damaged is not None:
        z.close()
        raise ValueError(f"{path} is damaged: its record {damaged!r} does not match its CRC-32 checksum or its "
                         f"entry in the archive's directory is not one torch writes (a "
                         f"changed byte: a disk, a copy or a transfer went wrong); nothing was loaded. Save "
                         f"or copy it again")
    return z


def load_torch(path, *, what: str = "checkpoint"):
    """``torch.load(path, map_location='cpu', weights_only=True)`` after checking the file whole:
    every record of its zip archive against its CRC-32. A damaged, truncated or foreign file raises
    ValueError naming the file (``what``: what it should be, for the message)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {what} at {path.absolute()}")
    _verified(path, what).close()
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:   # foreign or unpicklable content: torch's many errors
        raise ValueError(f"{path} is not a readable {what} ({type(e).__name__}: {e}); it may be truncated or "
                         f"another kind of file") from e


def read_description(path) -> dict | None:
    """The description :func:`save_torch` stored in ``path`` (None: a file without one, e.g. written by
    an older labkit or by ``torch.save``)."""
    path = Path(path)
    with _verified(path, "file written by torch.save") as z:
        names = [n for n in z.namelist() if n.endswith("/" + DESCRIPTION)]
        if not names:
            return None
        try:
            return json.loads(z.read(names[0]).decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: its description record is damaged ({e})") from e
