"""Shared fixtures: where the CIFAR-10 copy and the pretrained checkpoint are found."""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _offline_data() -> Path | None:
    """$LABKIT_DATA if set, else ../shared/data beside the checkout (the course's offline copy)."""
    candidates = [os.environ.get("LABKIT_DATA"), REPO.parent / "shared" / "data"]
    for c in candidates:
        if c and (Path(c) / "cifar-10-batches-py" / "test_batch").is_file():
            return Path(c)
    return None


@pytest.fixture(scope="session")
def data_root() -> Path:
    """Folder holding cifar-10-batches-py/ and resnet20-12fca82f.th; skips the test when absent."""
    root = _offline_data()
    if root is None:
        pytest.skip("CIFAR-10 not found: set LABKIT_DATA to a folder holding cifar-10-batches-py/ "
                    "(and resnet20-12fca82f.th) to run the tests that need real data")
    return root


@pytest.fixture(scope="session")
def subset_root(data_root) -> Path:
    """Like ``data_root``, but only the course's offline subset (5085 / 1017 images), whose exact
    counts and accuracies some tests assert; skips for other CIFAR-10 data (e.g. the full set)."""
    from labkit.data import is_reference_subset

    if not is_reference_subset(data_root):
        pytest.skip(f"{data_root} holds CIFAR-10 but not the course's offline subset (5085 train / "
                    f"1017 test) that this test's exact numbers are for")
    return data_root


def _build_book(tmp_path_factory, site: str) -> Path:
    """The course site built strictly, as CI builds it (any Sphinx warning fails):
    ``LABKIT_SITE=<site> jupyter-book build . -W -n --keep-going``. Returns its ``_build/html`` folder."""
    import os
    import shutil
    import subprocess
    import sys

    # the jupyter-book script installed beside this Python (jupyter_book has no __main__)
    exe = shutil.which("jupyter-book", path=str(Path(sys.executable).parent)) or shutil.which("jupyter-book")
    if exe is None:
        pytest.fail("jupyter-book is not installed: run `make install`")
    out = tmp_path_factory.mktemp(f"book-{site}")
    cmd = [exe, "build", str(REPO), "--path-output", str(out), "-W", "-n", "--keep-going"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=dict(os.environ, LABKIT_SITE=site))
    if result.returncode != 0:
        pytest.fail(f"the strict book build ({site} site) failed:\n" + result.stdout[-4000:] + result.stderr[-4000:])
    return out / "_build" / "html"


@pytest.fixture(scope="session")
def book_html(tmp_path_factory) -> Path:
    """The solutions site (the default), built once per session."""
    return _build_book(tmp_path_factory, "solutions")


@pytest.fixture(scope="session")
def handout_html(tmp_path_factory) -> Path:
    """The handout site (``make book SITE=handout``), built once per session."""
    return _build_book(tmp_path_factory, "handout")


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module of tests on tiny tensors: faster, and far faster on a busy
    machine (no threads waiting on each other); the previous count restored after."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
