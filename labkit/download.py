"""Where labkit keeps its data, and one safe way to download a file into it.

``data_dir(root)`` says which folder holds the datasets and checkpoints:

1. ``root`` when given (an argument of ``cifar10(root=...)``, ``resnet20(root=...)``);
2. else ``$LABKIT_DATA`` (read by :func:`labkit.settings.data_folder`);
3. else the per-user cache ``$XDG_CACHE_HOME/labkit`` (``~/.cache/labkit`` when unset).

``fetch(url, dest, md5=..., sha256_prefix=...)`` downloads with a progress bar into a
temporary file beside ``dest`` (:func:`labkit.files.atomic_write`), checks the hash while
streaming, and moves the file onto ``dest`` with ``os.replace`` only when everything went right.
On any failure (no network, HTTP error, connection dropped, short transfer, wrong hash, Ctrl-C)
the temporary file is removed and ``dest`` is left as it was, so a half-written file is never
mistaken for data.

Errors raised by ``fetch``:

* ``DownloadError`` (a ``RuntimeError``): network failure, HTTP error, interrupted or short
  transfer. The message names the URL and says how to work offline.
* ``ChecksumError`` (a ``DownloadError``): the bytes arrived but their hash is wrong; the
  message gives the expected and the actual hash.
* ``KeyboardInterrupt`` is re-raised unchanged, after the cleanup.
"""
from __future__ import annotations

import hashlib
import http.client
import urllib.error
import urllib.request
from pathlib import Path

from . import settings
from .files import atomic_write
from .progress import bar

__all__ = ["DownloadError", "ChecksumError", "data_dir", "check_folder", "fetch", "md5", "sha256"]

CHUNK = 1 << 20   # bytes per read: large enough for speed, small enough for a lively bar
TIMEOUT = 30.0    # seconds urlopen waits for the server (per blocking operation, not in total)


class DownloadError(RuntimeError):
    """A download failed (network, HTTP status, interrupted transfer); nothing was saved."""


class ChecksumError(DownloadError):
    """A download completed but its MD5 / SHA-256 does not match; nothing was saved."""


# --------------------------------------------------------------------------- where data lives

def data_dir(root=None) -> Path:
    """The folder that holds labkit's datasets and checkpoints (not created here).

    Precedence: explicit ``root`` > ``$LABKIT_DATA`` > ``$XDG_CACHE_HOME/labkit`` >
    ``~/.cache/labkit``. A leading ``~`` is expanded; an empty ``LABKIT_DATA`` counts as unset.
    """
    return settings.data_folder(root)[0]


def check_folder(folder: Path, source: str) -> Path:
    """``folder`` unless something other than a folder is there (e.g. ``LABKIT_DATA`` naming a
    file): then a NotADirectoryError that says where the name came from and what to do."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"the data folder {folder} (from {source}) is a file, not a folder: point "
                                 f"LABKIT_DATA (or root=) at a folder, or move the file away")
    return folder


def offline_hint(name: str) -> str:
    """The sentence every 'not found / cannot download' error ends with."""
    return (f"To work offline, set LABKIT_DATA=/path/to/folder holding {name} "
            f"or pass root=/path/to/folder.")


# --------------------------------------------------------------------------- hashing

def _hash_file(path, algorithm: str) -> str:
    h = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def md5(path) -> str:
    """Hex MD5 of a file (read in chunks)."""
    return _hash_file(path, "md5")


def sha256(path) -> str:
    """Hex SHA-256 of a file (read in chunks); compare its start with a ``sha256_prefix``."""
    return _hash_file(path, "sha256")


def _check_hex(value: str | None, what: str) -> str | None:
    if value is None:
        return None
    v = str(value).strip().lower()
    if not v or any(c not in "0123456789abcdef" for c in v):
        raise ValueError(f"{what} must be a non-empty hex string, got {value!r}")
    return v


# --------------------------------------------------------------------------- download

def fetch(url: str, dest, *, md5: str | None = None, sha256_prefix: str | None = None,
          desc: str | None = None, timeout: float = TIMEOUT, progress: str | bool = "auto") -> Path:
    """Download ``url`` to ``dest`` atomically and return ``Path(dest)``.

    Contract:
      * the bytes stream into ``<dest folder>/.<name>.XXXX.part`` (same folder, so the final
        ``os.replace`` is an atomic rename) while MD5 and/or SHA-256 are computed on the fly;
      * a short transfer (fewer bytes than ``Content-Length``) is an error;
      * ``md5`` must equal the full hex MD5; ``sha256_prefix`` must be a prefix of the hex
        SHA-256 (torch.hub's convention: the hex in ``resnet20-12fca82f.th``);
      * on success the file is moved onto ``dest`` (replacing an old file there);
      * on any failure the temporary file is deleted and an existing ``dest`` is untouched.

    The folder of ``dest`` is created if needed. ``timeout`` (seconds) bounds each blocking
    network operation; ``progress`` is the bar's mode (``'auto'``, ``'text'``, ``'off'``, see
    :func:`labkit.progress.bar`; False: ``'off'``), ``desc`` labels it.

    Raises ``DownloadError`` (network / HTTP / short transfer), ``ChecksumError`` (hash
    mismatch, a subclass of DownloadError); ``KeyboardInterrupt`` passes through after cleanup.
    """
    dest = Path(dest).expanduser()
    want_md5 = _check_hex(md5, "md5")
    want_sha = _check_hex(sha256_prefix, "sha256_prefix")
    hint = offline_hint(dest.name)
    check_folder(dest.parent, "the destination")
    dest.parent.mkdir(parents=True, exist_ok=True)
    mode = "off" if progress is False else "auto" if progress is True else progress

    hashers = {"md5": hashlib.md5(usedforsecurity=False)} if want_md5 else {}
    if want_sha:
        hashers["sha256"] = hashlib.sha256()

    # atomic_write: the bytes go to .<name>.XXXX.part beside dest and replace dest only if the
    # block completes; any failure (Ctrl-C included) removes the .part file and leaves dest as it was
    with atomic_write(dest) as tmp:
        request = urllib.request.Request(url, headers={"User-Agent": "labkit"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                received = 0
                with bar(total, desc or dest.name, mode=mode, unit="B", scale=True) as shown:
                    while chunk := response.read(CHUNK):
                        tmp.write(chunk)
                        for h in hashers.values():
                            h.update(chunk)
                        received += len(chunk)
                        shown.update(len(chunk))
        except urllib.error.HTTPError as e:
            e.close()
            raise DownloadError(f"Could not download {url}: HTTP {e.code} {e.reason}. "
                                f"{hint}") from e
        except urllib.error.URLError as e:
            raise DownloadError(f"Could not download {url}: {e.reason} (no network?). "
                                f"{hint}") from e
        except (OSError, http.client.HTTPException) as e:
            # connection reset / timeout mid-transfer, IncompleteRead on chunked bodies
            raise DownloadError(f"Download of {url} was interrupted: "
                                f"{type(e).__name__}: {e}. {hint}") from e
        if total is not None and received != total:
            # http.client returns b'' when the server closes early: count bytes ourselves
            raise DownloadError(f"Download of {url} was interrupted: got {received} of "
                                f"{total} bytes (connection closed early). {hint}")

        for name, want in (("md5", want_md5), ("sha256", want_sha)):
            if want is None:
                continue
            got = hashers[name].hexdigest()
            if not got.startswith(want) or (name == "md5" and got != want):
                what = "SHA-256 starting with" if name == "sha256" else "MD5"
                raise ChecksumError(
                    f"Checksum mismatch for {url}: expected {what} {want}, got {got}. "
                    f"The file was corrupted or changed on the server; it was not saved. {hint}")
    return dest
