"""Writing files so that nothing is lost: every file labkit writes goes through :func:`atomic_write`.

The bytes go to a temporary file in the destination's folder, are flushed to disk, and only then
renamed over the destination (``os.replace``, atomic on POSIX and Windows). A save that fails
halfway (a full disk, a file-size limit, Ctrl-C) leaves the previous file as it was and no
temporary file behind.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["atomic_write", "write_bytes", "save_torch"]


@contextlib.contextmanager
def atomic_write(path, *, suffix: str = ".part"):
    """``with atomic_write(path) as f: f.write(...)``: ``f`` is a binary file in ``path``'s folder;
    on success it replaces ``path``, on any exception (KeyboardInterrupt included) it is removed and
    ``path`` is untouched. The folder must exist."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; name a file to write")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
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


def save_torch(obj, path) -> Path:
    """``torch.save(obj, path)``, atomically; returns the path.

    The bytes are exactly those of ``torch.save(obj, path)``, which names the archive inside the
    file after the file (so its size depends on the name): it is written under the same name in a
    temporary folder beside ``path``, flushed to disk, then renamed over ``path``."""
    import torch

    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; name a file to write")
    folder = tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    tmp = Path(folder) / path.name
    try:
        torch.save(obj, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return path
