"""labkit.files: atomic writes that keep a file's permissions and links, name a full disk, refuse
non-finite tensors, check the archive's CRC-32s on load and replace several files together."""
import errno
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from labkit import files
from faults import flip_bit, flip_directory_bit, save_under_size_limit


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.mark.parametrize("write", [lambda p: files.write_bytes(p, b"abc"),
                                   lambda p: files.save_torch({"w": torch.ones(2)}, p)], ids=["bytes", "torch"])
def test_a_new_file_is_0644_and_a_replaced_one_keeps_its_mode(tmp_path, umask_022, write):
    """write_bytes wrote 0600 (mkstemp's mode): a shared data folder broke."""
    path = tmp_path / "f"
    write(path)
    assert path.stat().st_mode & 0o777 == 0o644
    os.chmod(path, 0o664)
    write(path)
    assert path.stat().st_mode & 0o777 == 0o664


@pytest.mark.parametrize("write", [lambda p: files.write_bytes(p, b"new"),
                                   lambda p: files.save_torch({"w": torch.ones(2)}, p)], ids=["bytes", "torch"])
def test_a_save_through_a_symbolic_link_writes_its_target_and_keeps_the_link(tmp_path, write):
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "f"
    target.write_bytes(b"old")
    link = tmp_path / "f"
    link.symlink_to(target)
    write(link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_bytes() != b"old" and sorted(p.name for p in target.parent.iterdir()) == ["f"]


def test_a_full_disk_says_no_space_left_and_names_the_file(tmp_path):
    path = tmp_path / "big.bin"
    path.write_bytes(b"good")
    done = save_under_size_limit(f"files.write_bytes({str(path)!r}, bytes(100_000))", 10_000,
                                 setup="from labkit import files\n")
    assert done.returncode == 3 and f"failed: OSError [Errno 28] no space left to write {path}" in done.stdout, \
        done.stdout + done.stderr
    assert path.read_bytes() == b"good" and [p.name for p in tmp_path.iterdir()] == ["big.bin"]


def test_non_finite_tensors_are_refused_by_name_and_nothing_is_written(tmp_path):
    state = {"a": torch.ones(3), "opt": {"state": {0: {"momentum_buffer": torch.tensor([1.0, float("nan")])}}}}
    with pytest.raises(ValueError, match=r"inf or NaN.*opt\.state\.0\.momentum_buffer"):
        files.save_torch(state, tmp_path / "s.pt")
    assert list(tmp_path.iterdir()) == []


def test_load_torch_names_a_flipped_bit_and_the_description_travels(tmp_path):
    path = files.save_torch({"w": torch.arange(8.0)}, tmp_path / "s.pt", description={"kind": "test"})
    assert files.read_description(path) == {"kind": "test"}
    assert torch.equal(files.load_torch(path)["w"], torch.arange(8.0))
    flip_bit(path, "data/0", byte=5)
    with pytest.raises(ValueError, match=rf"{path} is damaged.*'s/data/0'.*CRC-32"):
        files.load_torch(path)


def test_replace_together_puts_back_what_it_replaced_when_one_rename_fails(tmp_path):
    """A real failing rename: the second file lies on another file system (/dev/shm), which
    rename(2) refuses (EXDEV) after the first destination was already replaced."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on another file system than the test's folder")
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"old a")
    b.write_bytes(b"old b")
    os.chmod(b, 0o640)
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "a").write_bytes(b"new a")
    far = Path(tempfile.mkdtemp(dir=shm))
    try:
        (far / "b").write_bytes(b"new b")
        with pytest.raises(OSError) as err:
            files.replace_together({tmp_path / "new" / "a": a, far / "b": b})
        assert err.value.errno == errno.EXDEV
    finally:
        shutil.rmtree(far)
    assert a.read_bytes() == b"old a" and b.read_bytes() == b"old b" and b.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "new"]     # no backup left behind


def test_a_symbolic_link_loop_as_destination_is_named_and_kept(tmp_path):
    """Issue 27, adversarial probe: a link that points back to itself raised pathlib's own
    "[Errno 40] Too many levels of symbolic links" from deep inside the save."""
    loop = tmp_path / "loop.pt"
    loop.symlink_to(loop)
    for write in (lambda p: files.write_bytes(p, b"x"), lambda p: files.save_torch({"w": torch.ones(2)}, p)):
        with pytest.raises(OSError, match=rf"cannot write {loop}: Too many levels of symbolic links.*remove it") as err:
            write(loop)
        assert err.value.errno == errno.ELOOP
    assert loop.is_symlink() and [p.name for p in tmp_path.iterdir()] == ["loop.pt"]


def test_what_save_torch_writes_loads_back_numpy_numbers_included(tmp_path):
    """Issue 27, adversarial probe: numpy scalars (a TrainConfig(lr=np.float64(...)), a callback's
    record) were written as they were, and torch.load(weights_only=True) refused the file; an object
    that cannot load back is refused by name, nothing written."""
    import numpy as np
    obj = {"config": {"lr": np.float64(0.1), "seed": np.int64(3), "augment": np.bool_(True)},
           "records": [{"sparsity": np.float32(0.5)}], "pair": (np.int32(1), "a"), "w": torch.ones(2)}
    loaded = files.load_torch(files.save_torch(obj, tmp_path / "s.pt", description={"acc": np.float64(0.5)}))
    assert loaded["config"] == {"lr": 0.1, "seed": 3, "augment": True} and type(loaded["config"]["lr"]) is float
    assert loaded["records"] == [{"sparsity": 0.5}] and loaded["pair"] == (1, "a")
    assert files.read_description(tmp_path / "s.pt") == {"acc": 0.5}
    state = torch.nn.BatchNorm2d(2).state_dict()           # a state dict keeps its _metadata (module versions)
    state["numpy"] = np.int64(1)
    assert files.load_torch(files.save_torch(state, tmp_path / "b.pt"))._metadata == state._metadata
    (tmp_path / "b.pt").unlink()
    with pytest.raises(ValueError, match=rf"not saving {tmp_path / 'x.pt'}: it would not load back.*PosixPath"):
        files.save_torch({"where": tmp_path, "w": torch.ones(2)}, tmp_path / "x.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.pt"]


@pytest.mark.parametrize("field, bit", [("external_attributes", 4), ("method", 3), ("flags", 0)])
def test_a_flipped_bit_in_the_archives_directory_is_named_not_loaded(tmp_path, field, bit):
    """Issue 27, adversarial probe: the central directory carries no CRC. Its MS-DOS folder bit
    (external attributes 0x10) made torch's reader load a tensor as uninitialised memory while
    every CRC-32 matched (a momentum buffer of zeros and 4.6e-41 resumed without a word); the
    compression method and encryption flag raised zlib's or zipfile's own errors."""
    w = torch.arange(1.0, 65.0)
    path = files.save_torch({"w": w, "b": torch.ones(3)}, tmp_path / "s.pt", description={"kind": "test"})
    flip_directory_bit(path, "data/0", field, bit=bit)
    with pytest.raises(ValueError, match=rf"{path} (is damaged: its record 's/data/0'|is not a readable checkpoint)"):
        files.load_torch(path)
    with pytest.raises(ValueError, match=str(path)):
        files.read_description(path)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_save_killed_by_a_signal_keeps_the_file_and_the_next_save_removes_its_leftover(tmp_path, sig):
    """Issue 27, adversarial probe: SIGTERM (a scheduler's time limit, `kill`) or SIGKILL runs no
    cleanup, so every killed save left a hidden full-size copy beside the file, forever. The
    previous file stays whole; the next save removes what dead processes left (not a live one's)."""
    path = files.save_torch({"w": torch.ones(4)}, tmp_path / "m.pt")
    write = subprocess.Popen([sys.executable, "-c", f"""
import torch
from labkit import files
big = {{"w": torch.randn(40_000_000)}}       # 160 MB: a save long enough to be killed midway
print("saving", flush=True)
while True:
    files.save_torch(big, {str(path)!r})
    files.write_bytes({str(path)!r} + ".txt", bytes(200_000_000))
"""], stdout=subprocess.PIPE, text=True)
    try:
        assert write.stdout.readline() == "saving\n"
        deadline = time.monotonic() + 60
        while not any(p.name.endswith(".part") for p in tmp_path.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
    finally:
        write.send_signal(sig)
        write.wait(timeout=60)
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".part"))
    assert left, "the save was not killed midway"
    assert files.load_torch(path)["w"].shape in {(4,), (40_000_000,)}        # the previous file or the new one, whole
    live = tmp_path / f".m.pt.{os.getpid()}.abcdefgh.part"      # this process's own: never removed
    alive = tmp_path / f".m.pt.1.abcdefgh.part"                 # pid 1 runs: a save in progress elsewhere
    live.mkdir(), alive.mkdir()
    files.save_torch({"w": torch.zeros(2)}, path)
    files.write_bytes(str(path) + ".txt", b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, live.name, "m.pt", "m.pt.txt"])


def test_a_folder_that_cannot_be_written_is_named_not_the_hidden_temporary_file():
    """Issue 27, adversarial probe: a read-only folder raised PermissionError naming the hidden
    temporary file the system refused ('.m.pt.123.x1y2z3.part'), not the file or its folder. A real
    permission: a 0555 folder, written as an unprivileged user (uid 65534 when the tests run as root)."""
    folder = Path(tempfile.mkdtemp())
    try:
        (folder / "m.pt").write_bytes(b"old")
        os.chmod(folder / "m.pt", 0o666)
        os.chmod(folder, 0o555)
        drop = "import os\nos.setgid(65534)\nos.setuid(65534)\n" if os.geteuid() == 0 else ""   # root writes anywhere
        code = ("import torch\nfrom labkit import files\n" + drop +
                f"for write in (lambda p: files.write_bytes(p, b'x'), lambda p: files.save_torch({{'w': torch.ones(1)}}, p)):\n"
                f"    try:\n        write({str(folder / 'm.pt')!r})\n    except PermissionError as e:\n        print(e)\n")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                              cwd=Path(__file__).parent.parent)
        lines = done.stdout.splitlines()
        assert len(lines) == 2, done.stdout + done.stderr
        for line in lines:
            assert f"cannot write {folder / 'm.pt'}: its folder {folder} is not writable" in line and ".part" not in line
        assert (folder / "m.pt").read_bytes() == b"old" and [p.name for p in folder.iterdir()] == ["m.pt"]
    finally:
        os.chmod(folder, 0o755)
        shutil.rmtree(folder)
