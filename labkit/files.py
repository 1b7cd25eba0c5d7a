"""Writing files so that nothing is lost: every file labkit writes goes through :func:`atomic_write`.

The bytes go to a temporary file in the destination's folder, are flushed to disk, and only then
renamed over the destination (``os.replace``, atomic on POSIX and Windows). A save that fails
halfway (a full disk, a file-size limit, Ctrl-C) leaves the previous file as it was and no
temporary file behind.
"""
from __future__ import annotations

import contextlib
import os
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
    """``torch.save(obj, path)``, atomically; returns the path."""
    import torch

    with atomic_write(path) as f:
        torch.save(obj, f)
    return Path(path)
