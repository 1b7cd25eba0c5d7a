"""labkit.download: data_dir precedence and fetch() against a real local HTTP server (offline)."""
import hashlib
import http.server
import socket
import threading
from pathlib import Path

import pytest

from labkit import download
from labkit.download import ChecksumError, DownloadError, data_dir, fetch


# --------------------------------------------------------------------------- a local server

class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves self.server.files[path] = (body, mode); mode 'ok' or 'truncate' (Content-Length
    says the full size, half is sent, then the connection is closed)."""

    def do_GET(self):
        self.server.hits.append(self.path)
        if self.path not in self.server.files:
            self.send_error(404, "not here")
            return
        body, mode = self.server.files[self.path]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if mode == "truncate":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        else:
            self.wfile.write(body)

    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def server():
    """A threaded HTTP server on 127.0.0.1 (free port); use server.serve(path, body, mode)."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.hits = {}, []
    base = f"http://127.0.0.1:{httpd.server_address[1]}"

    def serve(path, body, mode="ok"):
        httpd.files[path] = (body, mode)
        return base + path

    httpd.serve = serve
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def closed_port_url(path="/x.bin"):
    """A URL on 127.0.0.1 where nothing listens (port bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


BODY = bytes(range(256)) * 4096 + b"tail"  # 1 MiB + 4 bytes: more than one read chunk
BODY_MD5 = hashlib.md5(BODY).hexdigest()
BODY_SHA = hashlib.sha256(BODY).hexdigest()


def leftovers(folder: Path):
    return sorted(p.name for p in folder.iterdir())


# --------------------------------------------------------------------------- data_dir

def test_data_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("LABKIT_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_dir(tmp_path / "arg") == tmp_path / "arg"           # argument first
    assert data_dir(str(tmp_path / "arg")) == tmp_path / "arg"
    assert data_dir() == tmp_path / "env"                           # then $LABKIT_DATA
    monkeypatch.setenv("LABKIT_DATA", "")                           # empty = unset
    assert data_dir() == tmp_path / "xdg" / "labkit"                # then $XDG_CACHE_HOME
    monkeypatch.delenv("LABKIT_DATA")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert data_dir() == tmp_path / "home" / ".cache" / "labkit"    # then ~/.cache
    assert not (tmp_path / "home").exists()                         # reading creates nothing


def test_data_dir_expands_user(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert data_dir("~/d") == tmp_path / "d"
    monkeypatch.setenv("LABKIT_DATA", "~/e")
    assert data_dir() == tmp_path / "e"


# --------------------------------------------------------------------------- fetch

def test_fetch_success_verifies_both_hashes(server, tmp_path):
    url = server.serve("/f.bin", BODY)
    dest = tmp_path / "sub" / "f.bin"                                # folder created on demand
    out = fetch(url, dest, md5=BODY_MD5, sha256_prefix=BODY_SHA[:8].upper(), progress=False)
    assert out == dest
    assert dest.read_bytes() == BODY
    assert leftovers(dest.parent) == ["f.bin"]                       # no .part file
    assert download.md5(dest) == BODY_MD5
    assert download.sha256(dest) == BODY_SHA


def test_fetch_without_hash_and_replaces_old_file(server, tmp_path):
    url = server.serve("/f.bin", BODY)
    dest = tmp_path / "f.bin"
    dest.write_bytes(b"old")
    fetch(url, dest, progress=False)
    assert dest.read_bytes() == BODY


@pytest.mark.parametrize("kw, shown", [
    (dict(md5="0" * 32), ["0" * 32, BODY_MD5]),
    (dict(sha256_prefix="deadbeef"), ["deadbeef", BODY_SHA]),
    (dict(md5=BODY_MD5, sha256_prefix="deadbeef"), ["deadbeef", BODY_SHA]),
])
def test_fetch_hash_mismatch_leaves_nothing(server, tmp_path, kw, shown):
    url = server.serve("/f.bin", BODY)
    with pytest.raises(ChecksumError) as err:
        fetch(url, tmp_path / "f.bin", progress=False, **kw)
    msg = str(err.value)
    assert url in msg and "LABKIT_DATA" in msg and "root=" in msg
    for h in shown:                                                  # expected and actual
        assert h in msg
    assert isinstance(err.value, DownloadError) and isinstance(err.value, RuntimeError)
    assert leftovers(tmp_path) == []


def test_fetch_mismatch_keeps_existing_dest(server, tmp_path):
    url = server.serve("/f.bin", BODY)
    dest = tmp_path / "f.bin"
    dest.write_bytes(b"old")
    with pytest.raises(ChecksumError):
        fetch(url, dest, md5="0" * 32, progress=False)
    assert dest.read_bytes() == b"old"
    assert leftovers(tmp_path) == ["f.bin"]


def test_fetch_interrupted_transfer_leaves_nothing(server, tmp_path):
    url = server.serve("/f.bin", BODY, mode="truncate")
    with pytest.raises(DownloadError) as err:
        fetch(url, tmp_path / "f.bin", progress=False)               # no hash: the length check
    assert not isinstance(err.value, ChecksumError)
    assert url in str(err.value) and "interrupted" in str(err.value)
    assert leftovers(tmp_path) == []


def test_fetch_http_error(server, tmp_path):
    url = server.serve("/f.bin", BODY).replace("/f.bin", "/missing.bin")
    with pytest.raises(DownloadError, match="HTTP 404") as err:
        fetch(url, tmp_path / "f.bin", progress=False)
    assert url in str(err.value)
    assert leftovers(tmp_path) == []


def test_fetch_no_network(tmp_path):
    url = closed_port_url()
    with pytest.raises(DownloadError) as err:
        fetch(url, tmp_path / "x.bin", md5=BODY_MD5, progress=False, timeout=5)
    msg = str(err.value)
    assert url in msg and "LABKIT_DATA=/path/to/folder holding x.bin" in msg
    assert leftovers(tmp_path) == []


def test_fetch_keyboard_interrupt_cleans_up(server, tmp_path, monkeypatch):
    url = server.serve("/f.bin", BODY)
    seen = []

    class InterruptingBar:
        """Stands in for the progress bar: Ctrl-C after the first chunk is on disk."""
        def __init__(self, *a, **k):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, n):
            seen.append(leftovers(tmp_path))
            raise KeyboardInterrupt

    monkeypatch.setattr(download, "bar", InterruptingBar)
    with pytest.raises(KeyboardInterrupt):
        fetch(url, tmp_path / "f.bin", md5=BODY_MD5)
    assert len(seen) == 1 and len(seen[0]) == 1 and seen[0][0].endswith(".part")
    assert seen[0][0].startswith(".f.bin.")
    assert leftovers(tmp_path) == []                                 # the .part file is gone


def test_fetch_rejects_bad_hash_argument(tmp_path):
    with pytest.raises(ValueError, match="md5"):
        fetch("http://127.0.0.1:9/x", tmp_path / "x", md5="not-hex")
    assert leftovers(tmp_path) == []


# --------------------------------------------------------------------------- faults (issue 14)

FSIZE_CHILD = """
import resource, signal, sys
from labkit.download import fetch
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)          # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY))
try:
    fetch(sys.argv[1], sys.argv[2], progress=False)
    print("saved")
except Exception as e:
    print("failed", type(e).__name__, e)
"""


def test_fetch_cut_by_a_file_size_limit_keeps_the_old_file(server, tmp_path):
    import subprocess
    import sys

    url = server.serve("/f.bin", BODY)                  # 1 MiB: ten times the limit
    dest = tmp_path / "f.bin"
    dest.write_bytes(b"the previous good file")
    run = subprocess.run([sys.executable, "-c", FSIZE_CHILD, url, str(dest)], capture_output=True, text=True,
                         timeout=120)
    assert run.stdout.startswith("failed DownloadError") and "File too large" in run.stdout, run.stderr
    assert dest.read_bytes() == b"the previous good file"
    assert leftovers(tmp_path) == ["f.bin"]


def test_fetch_into_a_folder_that_is_a_file_says_so(tmp_path):
    (tmp_path / "data").write_text("a file")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        fetch("http://127.0.0.1:9/x", tmp_path / "data" / "x.bin", progress=False)
