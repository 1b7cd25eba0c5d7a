"""labkit.data: CIFAR-10 loading (real offline copy and a fake one served over local HTTP),
the restricted unpickler, batched augmentation against a loop reference, and batches()."""
import dataclasses
import hashlib
import io
import os
import pickle
import shlex
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from labkit import data as D
from labkit.data import Split, augment, batches, cifar10
from labkit.download import ChecksumError, DownloadError

# the local HTTP server fixture and helpers of test_download (tests/ is on sys.path)
from test_download import closed_port_url, leftovers, server  # noqa: F401

CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck"]
FAKE_FILES = [*D.TRAIN_FILES, D.TEST_FILE]


# --------------------------------------------------------------------------- a fake CIFAR-10

def write_fake_cifar(folder: Path, n_per_file=3, seed=0) -> dict:
    """Write cifar-10-batches-py/ as the official files are laid out (protocol-2 pickles,
    bytes keys); returns {file name: (data (n, 3072) uint8, labels list)}."""
    rng = np.random.default_rng(seed)
    out = folder / D.FOLDER
    out.mkdir(parents=True)
    content = {}
    for i, name in enumerate(FAKE_FILES):
        data = rng.integers(0, 256, (n_per_file, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n_per_file)]
        content[name] = (data, labels)
        with open(out / name, "wb") as f:
            pickle.dump({b"batch_label": f"batch {i}".encode(), b"labels": labels,
                         b"data": data}, f, protocol=2)
    with open(out / D.META_FILE, "wb") as f:
        pickle.dump({b"num_cases_per_batch": n_per_file, b"num_vis": 3072,
                     b"label_names": [c.encode() for c in CLASSES]}, f, protocol=2)
    return content


def make_tarball(tmp_path: Path, n_per_file=3) -> tuple[bytes, dict]:
    src = tmp_path / "src"
    content = write_fake_cifar(src, n_per_file)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(src / D.FOLDER, arcname=D.FOLDER)
    return buf.getvalue(), content


def expected_split(content, names):
    data = np.concatenate([content[n][0] for n in names]).reshape(-1, 3, 32, 32)
    labels = np.concatenate([content[n][1] for n in names])
    return data, labels


def assert_matches(ds, content):
    img, lab = expected_split(content, D.TRAIN_FILES)
    np.testing.assert_array_equal(ds.train.images.numpy(), img)
    np.testing.assert_array_equal(ds.train.labels.numpy(), lab)
    img, lab = expected_split(content, [D.TEST_FILE])
    np.testing.assert_array_equal(ds.test.images.numpy(), img)
    np.testing.assert_array_equal(ds.test.labels.numpy(), lab)
    assert ds.classes == CLASSES


@pytest.fixture
def served_tarball(server, tmp_path, monkeypatch):
    """Serve a fake cifar-10-python.tar.gz and point labkit.data at it; returns a setter."""
    body, content = make_tarball(tmp_path)

    def setup(mode="ok", md5=None):
        url = server.serve("/cifar-10-python.tar.gz", body, mode)
        monkeypatch.setattr(D, "CIFAR10_URL", url)
        monkeypatch.setattr(D, "CIFAR10_MD5", md5 or hashlib.md5(body).hexdigest())
        return url, content, body

    return setup


# --------------------------------------------------------------------------- download path

def test_cifar10_downloads_extracts_and_loads(served_tarball, server, tmp_path, capsys):
    url, content, _ = served_tarball()
    root = tmp_path / "root"
    ds = cifar10(root=root, download=True, verbose=True)
    assert_matches(ds, content)
    folder = (root / D.FOLDER).absolute()
    # where the folder came from, never the machine's path (notebook outputs are published)
    assert capsys.readouterr().out.strip() == "CIFAR-10: 15 train / 3 test images (folder from the root= argument)"
    # the downloaded tarball is removed; only the extracted folder remains
    assert leftovers(root) == [D.FOLDER]
    assert sorted(os.listdir(folder)) == sorted([*FAKE_FILES, D.META_FILE])
    # a second call reads the folder: no new request
    hits = len(server.hits)
    assert_matches(cifar10(root=root, verbose=False), content)
    assert len(server.hits) == hits == 1


def test_cifar10_md5_mismatch_leaves_nothing(served_tarball, tmp_path):
    url, _, body = served_tarball(md5="0" * 32)
    root = tmp_path / "root"
    with pytest.raises(ChecksumError) as err:
        cifar10(root=root, verbose=False)
    msg = str(err.value)
    assert url in msg and "0" * 32 in msg and hashlib.md5(body).hexdigest() in msg
    assert str(root.absolute()) in msg and "root= argument" in msg and "LABKIT_DATA" in msg
    assert leftovers(root) == []          # no tarball, no .part, no cifar-10-batches-py


def test_cifar10_interrupted_download_leaves_nothing(served_tarball, tmp_path):
    url, _, _ = served_tarball(mode="truncate")
    root = tmp_path / "root"
    with pytest.raises(DownloadError, match="interrupted"):
        cifar10(root=root, verbose=False)
    assert leftovers(root) == []


def test_cifar10_no_network_says_how_to_work_offline(monkeypatch, tmp_path):
    monkeypatch.setattr(D, "CIFAR10_URL", closed_port_url("/cifar-10-python.tar.gz"))
    monkeypatch.setenv("LABKIT_DATA", str(tmp_path / "envroot"))
    (tmp_path / "envroot").mkdir()                                  # LABKIT_DATA must name a folder
    with pytest.raises(DownloadError) as err:
        cifar10(verbose=False)
    msg = str(err.value)
    assert "LABKIT_DATA=" in msg and "root=" in msg
    assert str((tmp_path / "envroot" / D.FOLDER).absolute()) in msg and "$LABKIT_DATA" in msg
    assert leftovers(tmp_path / "envroot") == []


def test_cifar10_missing_without_download(monkeypatch, tmp_path):
    monkeypatch.setattr(D, "CIFAR10_URL", "http://unused.invalid/")  # must not be contacted
    with pytest.raises(FileNotFoundError) as err:
        cifar10(root=tmp_path, download=False, verbose=False)
    msg = str(err.value)
    assert str(tmp_path.absolute() / D.FOLDER) in msg and "download=False" in msg
    assert "LABKIT_DATA" in msg and "data_batch_1" in msg
    assert leftovers(tmp_path) == []


def tarball_placed_by_hand(monkeypatch, tmp_path):
    """A folder ``root`` holding a small official-layout tarball (its MD5 made the expected one),
    as a student who downloaded it by hand has; returns (root, content)."""
    body, content = make_tarball(tmp_path / "build")
    root = tmp_path / "root"
    root.mkdir()
    (root / D.TARBALL).write_bytes(body)
    monkeypatch.setattr(D, "CIFAR10_MD5", hashlib.md5(body).hexdigest())
    return root, content


def test_cifar10_uses_a_tarball_placed_by_hand(monkeypatch, tmp_path):
    root, content = tarball_placed_by_hand(monkeypatch, tmp_path)
    assert_matches(cifar10(root=root, download=False, verbose=False), content)
    assert sorted(leftovers(root)) == sorted([D.FOLDER, D.TARBALL])  # the user's copy is kept


@pytest.mark.parametrize("evil", ["../escaped.txt", "/tmp/labkit-absolute-evil.txt",
                                  "cifar-10-batches-py/../../escaped.txt", "link"])
def test_extraction_refuses_paths_outside_the_folder(tmp_path, evil):
    _, _ = make_tarball(tmp_path / "build")
    tarball = tmp_path / "evil.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(tmp_path / "build" / "src" / D.FOLDER, arcname=D.FOLDER)
        info = tarfile.TarInfo(evil)
        if evil == "link":
            info.name, info.type, info.linkname = f"{D.FOLDER}/link", tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
        else:
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(ValueError, match="unexpected member"):
        D._safe_extract(tarball, root)
    assert leftovers(root) == []
    assert not (tmp_path / "escaped.txt").exists()
    assert not Path("/tmp/labkit-absolute-evil.txt").exists()


# --------------------------------------------------------------------------- restricted unpickler

class _Evil:
    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


@pytest.mark.parametrize("make", ["os.system", "builtins.open"])
def test_unpickler_refuses_code_and_runs_nothing(tmp_path, make):
    marker = tmp_path / "pwned"
    if make == "os.system":
        payload = _Evil(os.system, (f"touch {shlex.quote(str(marker))}",))
    else:
        payload = _Evil(open, (str(marker), "w"))
    blob = pickle.dumps({b"data": payload, b"labels": []}, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load global") as err:
        D._restricted_load(io.BytesIO(blob))
    assert ("system" if make == "os.system" else "open") in str(err.value)
    assert not marker.exists()
    # the same through the public loader
    folder = tmp_path / "root" / D.FOLDER
    write_fake_cifar(tmp_path / "root")
    (folder / "data_batch_3").write_bytes(blob)
    with pytest.raises(pickle.UnpicklingError):
        cifar10(root=tmp_path / "root", download=False, verbose=False)
    assert not marker.exists()


def test_unpickler_refuses_codecs_other_than_latin1():
    import _codecs
    blob = pickle.dumps(_Evil(_codecs.encode, ("abc", "rot13")), protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="latin-1"):
        D._restricted_load(io.BytesIO(blob))


def test_unpickler_reads_real_batch_like_pickle(data_root):
    path = data_root / D.FOLDER / "data_batch_1"
    with open(path, "rb") as f:
        ref = pickle.load(f, encoding="bytes")      # the standard, unrestricted reference
    got = D._restricted_load(path)
    assert sorted(got) == sorted(ref)
    np.testing.assert_array_equal(got[b"data"], ref[b"data"])
    assert got[b"labels"] == ref[b"labels"] and got[b"batch_label"] == ref[b"batch_label"]


# --------------------------------------------------------------------------- validation

@pytest.mark.parametrize("bad, pattern", [
    ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, "uint8"),
    ({b"data": np.zeros((2, 3000), np.uint8), b"labels": [0, 1]}, "3072"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "2 images"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, "0..9"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [-1, 3]}, "0..9"),
    ({b"data": np.zeros((2, 3072), np.uint8)}, "labels"),
    ([1, 2, 3], "dict"),
])
def test_bad_batch_contents_are_named(tmp_path, bad, pattern):
    write_fake_cifar(tmp_path)
    path = tmp_path / D.FOLDER / "data_batch_2"
    path.write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(ValueError, match=pattern) as err:
        cifar10(root=tmp_path, download=False, verbose=False)
    assert "data_batch_2" in str(err.value)


# --------------------------------------------------------------------------- real offline data

def test_real_cifar10_offline_copy(subset_root, capsys):
    ds = cifar10(root=subset_root, download=False, verbose=True)
    folder = (subset_root / D.FOLDER).absolute()
    assert capsys.readouterr().out.strip() == \
        "CIFAR-10: 5085 train / 1017 test images (folder from the root= argument)"
    assert ds.train.images.shape == (5085, 3, 32, 32) and ds.test.images.shape == (1017, 3, 32, 32)
    assert ds.train.images.dtype == torch.uint8 and ds.train.labels.dtype == torch.int64
    assert len(ds.train) == 5085 and len(ds.test) == 1017
    for s in (ds.train, ds.test):
        assert s.labels.min() >= 0 and s.labels.max() <= 9
        assert len(torch.unique(s.labels)) == 10
    assert ds.classes == CLASSES
    # independent decode with the standard unpickler: first image of batch 1, first image of
    # batch 2 (index 1017 after concatenation), last test image, and all labels
    def ref(name):
        with open(folder / name, "rb") as f:
            d = pickle.load(f, encoding="bytes")
        return d[b"data"].reshape(-1, 3, 32, 32), np.array(d[b"labels"])
    x1, y1 = ref("data_batch_1")
    x2, y2 = ref("data_batch_2")
    xt, yt = ref("test_batch")
    np.testing.assert_array_equal(ds.train.images[0].numpy(), x1[0])
    np.testing.assert_array_equal(ds.train.images[1017].numpy(), x2[0])
    np.testing.assert_array_equal(ds.test.images[-1].numpy(), xt[-1])
    np.testing.assert_array_equal(ds.train.labels[:2034].numpy(), np.concatenate([y1, y2]))
    np.testing.assert_array_equal(ds.test.labels.numpy(), yt)
    # red, green, blue planes in that order: channel 0 of image 0 = first 1024 bytes
    np.testing.assert_array_equal(ds.train.images[0, 0].flatten().numpy(), x1[0, 0].ravel())


# --------------------------------------------------------------------------- Split

def test_split_len_to_getitem_and_checks():
    s = Split(torch.zeros(5, 3, 32, 32, dtype=torch.uint8), torch.arange(5))
    assert len(s) == 5 and s.device == torch.device("cpu")
    t = s.to("cpu")
    assert isinstance(t, Split) and t is not s and torch.equal(t.labels, s.labels)
    assert s[1:3].labels.tolist() == [1, 2]
    assert s[torch.tensor([4, 0])].labels.tolist() == [4, 0]
    with pytest.raises(TypeError):
        s[0]
    with pytest.raises(ValueError, match="uint8"):
        Split(torch.zeros(5, 3, 32, 32), torch.arange(5))
    with pytest.raises(ValueError, match="int64"):
        Split(torch.zeros(5, 3, 32, 32, dtype=torch.uint8), torch.arange(5).int())
    with pytest.raises(ValueError, match="5 images but 4 labels"):
        Split(torch.zeros(5, 3, 32, 32, dtype=torch.uint8), torch.arange(4))


# --------------------------------------------------------------------------- augment

def reference_augment(images: np.ndarray, dy, dx, flip, pad=4) -> np.ndarray:
    """One image at a time with numpy: zero-pad, crop the window at (dy, dx), maybe mirror."""
    out = np.empty_like(images)
    H, W = images.shape[2:]
    for b in range(len(images)):
        p = np.pad(images[b], ((0, 0), (pad, pad), (pad, pad)))   # zeros
        crop = p[:, dy[b]:dy[b] + H, dx[b]:dx[b] + W]
        out[b] = crop[:, :, ::-1] if flip[b] else crop
    return out


def test_augment_with_matches_loop_reference():
    g = torch.Generator().manual_seed(1)
    images = torch.randint(1, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=g)
    dy = torch.randint(0, 9, (64,), generator=g)
    dx = torch.randint(0, 9, (64,), generator=g)
    dy[:4], dx[:4] = torch.tensor([0, 8, 0, 8]), torch.tensor([0, 8, 8, 0])  # extreme shifts
    flip = torch.rand(64, generator=g) < 0.5
    flip[:2] = torch.tensor([True, False])
    got = D._augment_with(images, dy, dx, flip)
    ref = reference_augment(images.numpy(), dy.numpy(), dx.numpy(), flip.numpy())
    assert got.dtype == torch.uint8 and got.shape == images.shape
    np.testing.assert_array_equal(got.numpy(), ref)
    # no shift, no flip is the identity; a flip only is a mirror
    none = torch.full((64,), 4)
    no = torch.zeros(64, dtype=torch.bool)
    assert torch.equal(D._augment_with(images, none, none, no), images)
    assert torch.equal(D._augment_with(images, none, none, ~no), images.flip(3))


def test_augment_draws_then_applies():
    images = torch.randint(0, 256, (50, 3, 32, 32), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    out = augment(images, torch.Generator().manual_seed(7))
    params = D._draw(50, torch.Generator().manual_seed(7))
    assert torch.equal(out, D._augment_with(images, *params))


def test_augment_draw_distribution():
    dy, dx, flip = D._draw(45_000, torch.Generator().manual_seed(0))
    for d in (dy, dx):
        counts = Counter(d.tolist())
        assert sorted(counts) == list(range(9))                     # 0..8, pad 4 each side
        assert all(abs(c / 45_000 - 1 / 9) < 0.01 for c in counts.values())
    assert abs(flip.float().mean().item() - 0.5) < 0.01
    assert not torch.equal(dy, dx)                                   # independent draws


def index_images(B=40):
    """Channel 0 = image index + 1, channel 1 = row + 1, channel 2 = column + 1 (never 0)."""
    img = torch.empty(B, 3, 32, 32, dtype=torch.uint8)
    img[:, 0] = (torch.arange(B) + 1)[:, None, None]
    img[:, 1] = (torch.arange(32) + 1)[None, :, None]
    img[:, 2] = (torch.arange(32) + 1)[None, None, :]
    return img


def test_augment_outputs_are_crops_of_their_own_input():
    images = index_images()
    before = images.clone()
    out = augment(images, torch.Generator().manual_seed(3))
    assert out.shape == images.shape and out.dtype == torch.uint8
    assert torch.equal(images, before)                               # input untouched
    n_flipped = n_shifted = 0
    for b in range(len(out)):
        o = out[b].long()
        inside = o[1] > 0                                            # (32, 32) not padding
        assert (o[:, ~inside] == 0).all()                            # padding is zeros
        assert (o[0][inside] == b + 1).all()                         # its own image
        rows = o[1][inside].unique()
        cols = o[2][inside].unique()
        # the visible part is a window of >= 28 consecutive rows/cols of the source
        assert len(rows) >= 28 and len(cols) >= 28
        assert (rows.diff() == 1).all() and (cols.diff() == 1).all()
        r0 = inside.any(1).nonzero()[0, 0]
        row_vals = o[1, inside.any(1), :].max(1).values
        assert (row_vals.diff() == 1).all()                          # rows keep their order
        line = o[2, r0][o[2, r0] > 0]
        steps = line.diff()
        assert (steps == 1).all() or (steps == -1).all()             # straight or mirrored
        n_flipped += int((steps == -1).all())
        n_shifted += int(not inside.all())
    assert 5 < n_flipped < 35 and n_shifted > 20


def test_augment_seeded_is_reproducible():
    images = index_images()
    a = augment(images, torch.Generator().manual_seed(11))
    b = augment(images, torch.Generator().manual_seed(11))
    c = augment(images, torch.Generator().manual_seed(12))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_augment_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        augment(torch.zeros(3, 32, 32, dtype=torch.uint8))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_augment_generator_must_be_on_images_device():
    images = index_images().cuda()
    with pytest.raises(ValueError, match="torch.Generator"):
        augment(images, torch.Generator().manual_seed(0))            # a CPU generator
    out = augment(images, torch.Generator(device="cuda").manual_seed(0))
    assert out.device == images.device


# --------------------------------------------------------------------------- batches

def index_split(n=103):
    return Split(index_images(n), torch.arange(n))                 # label = index


@pytest.mark.parametrize("shuffle", [False, True])
def test_batches_cover_every_index_once(shuffle):
    s = index_split()
    seen = []
    sizes = []
    for X, y in batches(s, 16, shuffle=shuffle, generator=torch.Generator().manual_seed(0)):
        assert X.dtype == torch.float32 and y.dtype == torch.int64
        assert X.shape[1:] == (3, 32, 32) and len(X) == len(y)
        assert 0 <= X.min() and X.max() <= 1
        assert torch.equal(X, s.images[y].float() / 255)            # pairs kept, scaled by 255
        seen += y.tolist()
        sizes.append(len(y))
    assert sorted(seen) == list(range(103))
    assert sizes == [16] * 6 + [7]
    assert (seen == list(range(103))) != shuffle


def test_batches_drop_last_and_seeded_order():
    s = index_split()
    order = lambda seed: [y.tolist() for _, y in batches(
        s, 16, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(seed))]
    a, b, c = order(5), order(5), order(6)
    assert a == b and a != c
    assert [len(y) for y in a] == [16] * 6 and len(set(sum(a, []))) == 96
    # with one generator, successive epochs differ
    g = torch.Generator().manual_seed(5)
    e1 = [y.tolist() for _, y in batches(s, 16, shuffle=True, generator=g)]
    e2 = [y.tolist() for _, y in batches(s, 16, shuffle=True, generator=g)]
    assert e1 != e2


def test_batches_with_augment_keep_pairs():
    s = index_split(40)
    g1, g2 = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
    out1 = list(batches(s, 8, shuffle=True, augment=True, generator=g1))
    out2 = list(batches(s, 8, shuffle=True, augment=True, generator=g2))
    for (X, y), (X2, y2) in zip(out1, out2):
        assert torch.equal(X, X2) and torch.equal(y, y2)            # reproducible
        ch0 = (X[:, 0] * 255).round().long()                         # image index + 1 or 0
        for b in range(len(y)):
            vals = ch0[b][ch0[b] > 0].unique()
            assert vals.tolist() == [y[b].item() + 1]                # image still with its label
    assert any(not torch.equal(X, s.images[y].float() / 255) for X, y in out1)  # augmented


def test_batches_checks_arguments_eagerly():
    s = index_split(4)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="batch_size"):
            batches(s, bad)
    with pytest.raises(TypeError, match="Split"):
        batches(s.images, 2)


# --------------------------------------------------------------------------- damaged data (issue 14)

def truncate(path: Path, keep: float = 0.5) -> None:
    """Cut a file as an interrupted copy does."""
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])


@pytest.mark.parametrize("keep", [0.0, 0.01, 0.5, 0.999])
def test_a_truncated_batch_is_named_and_says_how_to_repair(tmp_path, monkeypatch, keep):
    monkeypatch.setattr(D, "CIFAR10_URL", "http://unused.invalid/")  # download=False: never contacted
    write_fake_cifar(tmp_path, n_per_file=50)
    truncate(tmp_path / D.FOLDER / "data_batch_3", keep)
    with pytest.raises(D.DamagedFileError, match="data_batch_3") as err:
        cifar10(root=tmp_path, download=False, verbose=False)
    assert isinstance(err.value, ValueError) and err.value.path.name == "data_batch_3"
    assert "download=True" in str(err.value) and "truncated" in str(err.value)


def test_download_true_repairs_a_truncated_batch(served_tarball, server, tmp_path, capsys):
    url, content, _ = served_tarball()
    root = tmp_path / "root"
    cifar10(root=root, verbose=False)
    truncate(root / D.FOLDER / D.TEST_FILE)
    ds = cifar10(root=root, download=True, verbose=True)
    assert_matches(ds, content)
    assert len(server.hits) == 2                                   # fetched again
    assert "test_batch is damaged" in capsys.readouterr().out
    assert leftovers(root) == [D.FOLDER]


def test_a_tarball_in_the_folder_repairs_a_truncated_batch(monkeypatch, tmp_path):
    root, content = tarball_placed_by_hand(monkeypatch, tmp_path)
    monkeypatch.setattr(D, "CIFAR10_URL", "http://unused.invalid/")  # must not be contacted
    cifar10(root=root, download=False, verbose=False)
    truncate(root / D.FOLDER / "data_batch_1", 0.3)
    assert_matches(cifar10(root=root, download=False, verbose=False), content)


def test_labkit_data_naming_a_file_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(D, "CIFAR10_URL", "http://unused.invalid/")
    not_a_folder = tmp_path / "data.txt"
    not_a_folder.write_text("not a folder")
    monkeypatch.setenv("LABKIT_DATA", str(not_a_folder))
    for download in (True, False):
        with pytest.raises(NotADirectoryError, match=r"data.txt \(from \$LABKIT_DATA\) is a file, not a folder"):
            cifar10(download=download, verbose=False)
    assert not_a_folder.read_text() == "not a folder"


def test_shrink_takes_a_profile():
    from labkit import settings

    ds = D.CIFAR10(index_split(2000), index_split(10), CLASSES)
    assert len(D.shrink(ds, settings.PROFILES["ci"]).train) == 1024
    assert D.shrink(ds, settings.PROFILES["full"]) is ds
    with pytest.raises(ValueError, match="Profile"):
        D.shrink(ds, "ci")
    with pytest.raises(ValueError, match="CIFAR10"):
        D.shrink(ds.train, settings.PROFILES["ci"])


# --------------------------------------------------------------------------- validation from the test images

def balanced_index_split(counts) -> Split:
    """Images that carry their index (first pixel), labels by class in interleaved order."""
    labels = torch.tensor([c for i in range(max(counts)) for c, n in enumerate(counts) if i < n])
    images = torch.zeros(len(labels), 3, 32, 32, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(len(labels)) % 256
    images[:, 0, 0, 1] = torch.arange(len(labels)) // 256
    return Split(images, labels)


def ids(split: Split) -> list[int]:
    return (split.images[:, 0, 0, 0].long() + 256 * split.images[:, 0, 0, 1].long()).tolist()


def test_validation_from_test_is_disjoint_class_balanced_seeded_and_keeps_the_order():
    from labkit import settings

    test = balanced_index_split([101, 99, 102, 100])
    ds = D.CIFAR10(index_split(50), test, CLASSES[:4])
    tuned = D.validation_from_test(ds)
    assert tuned.train is ds.train and tuned.classes == ds.classes and ds.val is None   # ds unchanged
    ids_val, ids_test = ids(tuned.val), ids(tuned.test)
    assert not set(ids_val) & set(ids_test)                                     # disjoint
    assert sorted(ids_val + ids_test) == list(range(len(test)))                 # together: every test image
    assert ids_val == sorted(ids_val) and ids_test == sorted(ids_test)          # original order kept
    assert torch.equal(tuned.val.labels, test.labels[ids_val])
    per_class = Counter(tuned.val.labels.tolist())
    assert per_class == {c: round(n / 2) for c, n in enumerate([101, 99, 102, 100])}   # round(0.5 * count)
    again, other = D.validation_from_test(ds), D.validation_from_test(ds, seed=1)
    assert torch.equal(again.val.images, tuned.val.images)
    assert not torch.equal(other.val.images, tuned.val.images)
    assert Counter(D.validation_from_test(ds, 0.25).val.labels.tolist()) == {0: 25, 1: 25, 2: 26, 3: 25}
    assert tuned.protocol() == ("validation: 201 of the 402 test images (class-balanced, seed 0) choose "
                                "the epoch; reported on the other 201")
    assert ds.protocol().startswith("no validation images: no epoch is selected, the last one is reported")
    # moved and shrunk: validation and test images stay as they are
    moved = tuned.to("cpu")
    assert torch.equal(moved.val.images, tuned.val.images) and moved.val_origin == tuned.val_origin
    small = D.shrink(D.validation_from_test(D.CIFAR10(index_split(2000), test, CLASSES[:4])), settings.PROFILES["ci"])
    assert len(small.train) == 1024 and len(small.val) == 201 and len(small.test) == 201
    with pytest.raises(ValueError, match="validation images already"):
        D.validation_from_test(tuned)
    for bad in (0, 1.0, -0.1, True):
        with pytest.raises(ValueError, match="fraction"):
            D.validation_from_test(ds, bad)
    with pytest.raises(ValueError, match="CIFAR10"):
        D.validation_from_test(ds.test)


def test_validation_from_the_offline_test_images(subset_root):
    ds = cifar10(root=subset_root, download=False, verbose=False)
    tuned = D.validation_from_test(ds)
    assert len(tuned.train) == 5085 and len(tuned.val) + len(tuned.test) == 1017
    assert abs(len(tuned.val) - len(tuned.test)) <= 10
    counts = Counter(ds.test.labels.tolist())
    assert all(abs(2 * n - counts[c]) <= 1 for c, n in Counter(tuned.val.labels.tolist()).items())
    # every test image lands in exactly one part: match the images themselves
    key = lambda s: {bytes(x) for x in s.images.flatten(1).numpy()}           # noqa: E731
    assert not key(tuned.val) & key(tuned.test) and key(tuned.val) | key(tuned.test) == key(ds.test)
    assert tuned.protocol().startswith(f"validation: {len(tuned.val)} of the 1017 test images (class-balanced, "
                                       f"seed 0) choose the epoch; reported on the other {len(tuned.test)}")


# --------------------------------------------------------------------------- the course's subset

def _official_batch(path: Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f, encoding="bytes")


def write_larger_official_folder(subset_root: Path, dest: Path, extra: int, protocol=2) -> None:
    """dest/cifar-10-batches-py/ in the official layout, each batch the offline subset's images
    followed by ``extra`` other ones (a stand-in for the full 10 000-image batches)."""
    rng = np.random.default_rng(1)
    out = dest / D.FOLDER
    out.mkdir(parents=True)
    for name in FAKE_FILES:
        d = _official_batch(subset_root / D.FOLDER / name)
        more = rng.integers(0, 256, (extra, 3072), dtype=np.uint8)
        d[b"data"] = np.concatenate([d[b"data"], more])
        d[b"labels"] = list(d[b"labels"]) + [int(v) for v in rng.integers(0, 10, extra)]
        with open(out / name, "wb") as f:
            pickle.dump(d, f, protocol=protocol)
    (out / D.META_FILE).write_bytes((subset_root / D.FOLDER / D.META_FILE).read_bytes())


def test_the_course_subset_is_read_out_of_a_larger_official_folder(subset_root, tmp_path, capsys):
    write_larger_official_folder(subset_root, tmp_path, extra=40)
    offline = cifar10(subset_root, download=False, verbose=False)
    whole = cifar10(tmp_path, subset="all", download=False, verbose=False)
    assert (len(whole.train), len(whole.test)) == (5 * 1057, 1057)
    assert D.fingerprint(whole) != D.COURSE_SUBSET_SHA256 and not D.is_reference_subset(tmp_path, subset="all")
    course = cifar10(tmp_path, subset="course", download=False)
    assert "the course's subset, the first 1017 images of every batch" in capsys.readouterr().out
    for a, b in ((course.train, offline.train), (course.test, offline.test)):
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert D.fingerprint(course) == D.COURSE_SUBSET_SHA256
    assert D.is_reference_subset(tmp_path, subset="course")


def test_the_course_subset_of_the_offline_copy_is_the_copy_itself(subset_root, monkeypatch):
    offline = cifar10(subset_root, download=False, verbose=False)
    monkeypatch.setenv("LABKIT_SUBSET", "course")               # the environment setting
    course = cifar10(subset_root, download=False, verbose=False)
    assert torch.equal(course.train.images, offline.train.images) and torch.equal(course.test.labels, offline.test.labels)
    assert D.fingerprint(offline) == D.COURSE_SUBSET_SHA256 and D.is_reference_subset(subset_root)
    monkeypatch.setenv("LABKIT_SUBSET", "half")
    with pytest.raises(ValueError, match="LABKIT_SUBSET='half'"):
        cifar10(subset_root, download=False, verbose=False)


def test_the_subset_is_recognised_by_content_not_by_file_bytes(subset_root, tmp_path):
    write_larger_official_folder(subset_root, tmp_path / "p4", extra=0, protocol=4)    # other bytes, same images
    assert (tmp_path / "p4" / D.FOLDER / D.TEST_FILE).read_bytes() != \
        (subset_root / D.FOLDER / D.TEST_FILE).read_bytes()
    assert D.is_reference_subset(tmp_path / "p4")
    path = tmp_path / "p4" / D.FOLDER / D.TEST_FILE                                   # one pixel changed
    d = _official_batch(path)
    d[b"data"][5, 100] ^= 1
    path.write_bytes(pickle.dumps(d, protocol=2))
    assert not D.is_reference_subset(tmp_path / "p4")
    assert not D.is_reference_subset(tmp_path / "nothing-here")


def test_the_course_subset_needs_batches_that_hold_it(tmp_path):
    write_fake_cifar(tmp_path, n_per_file=5)
    with pytest.raises(ValueError, match=r"first 1017 images of every batch.*data_batch_1 \(5\)"):
        cifar10(tmp_path, subset="course", download=False, verbose=False)
    with pytest.raises(ValueError, match="subset must be one of"):
        cifar10(tmp_path, subset="first", download=False, verbose=False)
    with pytest.raises(ValueError, match="fingerprint needs"):
        D.fingerprint(tmp_path)


def test_the_fingerprint_covers_pixels_labels_and_order(tmp_path, data_root):
    write_fake_cifar(tmp_path, n_per_file=4)
    base = cifar10(tmp_path, download=False, verbose=False)
    changed_label = dataclasses.replace(base, test=Split(base.test.images, (base.test.labels + 1) % 10))
    swapped = dataclasses.replace(base, train=base.train[torch.tensor([1, 0, *range(2, 20)])])
    moved = dataclasses.replace(base, train=base.train[:19], test=Split(torch.cat([base.train.images[19:], base.test.images]),
                                                                         torch.cat([base.train.labels[19:], base.test.labels])))
    prints = {D.fingerprint(d) for d in (base, changed_label, swapped, moved)}
    assert len(prints) == 4
    # the offline copy with the course's counts must be recognised (else every subset_root test would skip)
    offline = cifar10(data_root, download=False, verbose=False)
    if (len(offline.train), len(offline.test)) == (5085, 1017):
        assert D.fingerprint(offline) == D.COURSE_SUBSET_SHA256


# --- issue 27: bad input refused early, by name ----------------------------------------------------

@pytest.mark.parametrize("labels", [[None] * 4, ["a", "b", "c", "d"], [1, "a", 2, 3]], ids=["none", "str", "mixed"])
def test_a_batch_with_non_integer_labels_is_named(tmp_path, labels):
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({"data": np.zeros((4, 3072), np.uint8), "labels": labels}))
    with pytest.raises(D.DamagedFileError, match=rf"{path}: labels must be integers in 0..9, got an array of dtype"):
        D._load_batch(path)


def test_labkit_data_that_names_no_folder_makes_nothing_and_downloads_nothing(monkeypatch, tmp_path):
    monkeypatch.setattr(D, "CIFAR10_URL", "http://unused.invalid/")   # must not be contacted
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LABKIT_DATA", str(tmp_path / "typo"))
    with pytest.raises(FileNotFoundError, match=r"LABKIT_DATA=.*typo' names no folder"):
        cifar10(verbose=False)
    monkeypatch.setenv("LABKIT_DATA", "relative/typo")
    with pytest.raises(FileNotFoundError, match="names no folder"):
        cifar10(verbose=False)
    assert list(tmp_path.iterdir()) == []


def test_labkit_data_is_stripped_like_every_variable(monkeypatch, tmp_path, data_root):
    from labkit import settings
    monkeypatch.setenv("LABKIT_DATA", f"  {data_root}\n")
    assert settings.data_folder()[0] == data_root
    monkeypatch.setenv("LABKIT_DATA", "   ")
    assert settings.data_folder()[1] != "$LABKIT_DATA"              # blank: unset, the default cache
