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


DIRECTORY_FIELDS = {"flags": 8, "method": 10, "crc": 16, "external_attributes": 38, "offset": 42}


def flip_directory_bit(path, record: str, field: str, *, bit: int, byte: int = 0) -> None:
    """Flip one bit of a field (``DIRECTORY_FIELDS``) of the central-directory entry of the zip record
    whose name ends with ``record``, in place: the archive's table of contents, which no CRC covers."""
    import struct

    data = bytearray(open(path, "rb").read())
    end = data.rfind(b"PK\x05\x06")
    count, _, pos = struct.unpack("<HII", data[end + 10:end + 20])
    if pos == 0xFFFFFFFF:                                   # zip64: the offset is in the zip64 end record
        z64 = data.rfind(b"PK\x06\x06")
        pos = struct.unpack("<Q", data[z64 + 48:z64 + 56])[0]
    while data[pos:pos + 4] == b"PK\x01\x02":
        name_len, extra_len, comment_len = struct.unpack("<HHH", data[pos + 28:pos + 34])
        if data[pos + 46:pos + 46 + name_len].decode().endswith(record):
            data[pos + DIRECTORY_FIELDS[field] + byte] ^= 1 << bit
            open(path, "wb").write(bytes(data))
            return
        pos += 46 + name_len + extra_len + comment_len
    raise ValueError(f"no record ending with {record!r} in {path}")
