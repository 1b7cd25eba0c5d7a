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
