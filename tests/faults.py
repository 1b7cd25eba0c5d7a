"""Real faults for the reliability tests: a save run in a fresh interpreter whose files may not
grow past a size limit (``resource.setrlimit(RLIMIT_FSIZE)``), as on a full disk or under a quota."""
import subprocess
import sys

LIMIT = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)          # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
"""


def save_under_size_limit(statement: str, limit: int, *, setup: str = "") -> subprocess.CompletedProcess:
    """Run ``setup`` (imports), then ``statement`` with files limited to ``limit`` bytes. When the
    statement raises, the child prints ``failed: <exception type> <message>`` and exits with 3."""
    script = (setup + LIMIT.format(limit=limit) + f"try:\n    {statement}\nexcept Exception as e:\n"
              "    print('failed:', type(e).__name__, e)\n    sys.exit(3)\n")
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)


def flip_bit(path, record: str, *, byte: int = 0, bit: int = 6) -> None:
    """Flip one bit of the data of the zip record whose name ends with ``record`` (e.g. ``'data/0'``,
    a tensor's bytes in torch's archive), in place: real damaged bytes, as a bad disk or copy leaves."""
    import struct
    import zipfile

    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if i.filename.endswith(record))
    with open(path, "r+b") as f:
        f.seek(info.header_offset + 26)
        name, extra = struct.unpack("<HH", f.read(4))      # the local header's name and extra lengths
        at = info.header_offset + 30 + name + extra + byte
        f.seek(at)
        value = f.read(1)[0]
        f.seek(at)
        f.write(bytes([value ^ (1 << bit)]))
