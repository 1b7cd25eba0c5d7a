"""Deep Compression's storage format, for real (Lab 4): what a pruned, quantized ResNet-20 costs
in bytes on disk, and a file that holds exactly that.

The accounting follows Han, Mao & Dally, "Deep Compression" (ICLR 2016), section 2 and Fig. 2-3.
For every Conv2d and Linear weight W (flattened in PyTorch's row-major order, n elements):

- dense: every element, 32 bits (float) or w bits (quantized: a w-bit code into a codebook);
- CSR with relative indices: only the non-zero entries, each with its code (32 bits for a float
  layer, w bits for a quantized one) and the gap g (zeros skipped since the previous entry) in
  k = `index_bits` bits. A gap g > 2^k - 1 does not fit: a *filler zero* (an entry of value 0
  with gap 2^k - 1) is inserted, as many as needed: floor(g / 2^k) fillers before the entry.
  So a layer costs (nnz + fillers) (w + k) bits, plus the codebook (32 bits per level);
- Huffman coding (`labkit.huffman`) of the codes and of the gaps, per layer and stream, with its
  code table (one byte per symbol of the alphabet) when that is smaller than fixed width.

Each layer is stored the cheaper of dense and CSR. Quantized layers (`labkit.quant`) store the
codes of `quant.codes(module)`: the codebook keeps only the levels the stream uses, and the code
width is w = ceil(log2(levels)). A mask-aware asymmetric b-bit quantizer has 2^b non-zero
levels, plus zero for the filler zeros: b + 1 bits, unless a level is unused, as the levels
inside a magnitude-pruned band (-t, t) usually are. Batch-norm tensors (scale, shift, running mean and variance, step
count), biases and the input normalisation stay float32 (int64 for the step count).

The parts of `SizeReport` (bits): codes (stored entries of CSR layers and codes of dense
quantized layers), indices, codebooks, float (dense float weights, biases, input normalisation),
batchnorm, tables (Huffman code tables). The file adds a header and padding (`header_bytes`).

File layout (little-endian, no pickle): MAGIC (8 bytes), format version (u16), file length
(u64), index_bits (u8), record count (u16); one record per module with tensors (name, kind,
tensor count, then per tensor: ndim, shape, encoding, data); SHA-256 of all that (32 bytes).
`load` checks magic, version, length and checksum before reading anything, so a truncated,
corrupted or foreign file raises ValueError. It returns a plain ResNet-20 (no masks, no
quantizers): effective weights and batch-norm state bit-identical to the saved model's, except
that zeros not stored (pruned or quantized to zero) load as +0.0. Shapes come from the file,
so a channel-pruned ResNet-20 (narrower inner convs) loads too.
"""
from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import checks, files, models, quant
from .huffman import Coded
from .huffman import decode as huffman_decode
from .huffman import encode as huffman_encode
from .tables import table

__all__ = ["MAGIC", "VERSION", "PARTS", "LayerSize", "SizeReport", "relative_indices",
           "size_report", "save", "load"]

MAGIC = b"\x89LABKIT\n"  # a non-ASCII first byte and a newline: text-mode copies break it
VERSION = 1
PARTS = ("codes", "indices", "codebooks", "float", "batchnorm", "tables")
_HEAD = struct.Struct("<8sHQBH")  # magic, version, file length, index_bits, record count
_SUM = 32                         # SHA-256 at the end
_MAX_ELEMENTS = 1 << 26           # per tensor: a damaged shape must not allocate gigabytes
# record kinds -> (module class, the tensors stored, in this order); a trailing bias may be absent
_ROOT, _CONV, _LINEAR, _BN = range(4)
_KINDS = {_ROOT: (models.ResNet, ("mean", "std")),
          _CONV: (nn.Conv2d, ("weight", "bias")),
          _LINEAR: (nn.Linear, ("weight", "bias")),
          _BN: (nn.BatchNorm2d, ("weight", "bias", "running_mean", "running_var",
                                 "num_batches_tracked"))}
RAW_F32, RAW_I64, DENSE_CODES, SPARSE_F32, SPARSE_CODES = range(5)  # tensor encodings
FIXED, HUFFMAN = range(2)                                            # symbol stream encodings


# --- the report -------------------------------------------------------------------------------

@dataclass(frozen=True)
class LayerSize:
    """One module's share: `bits` {part: bits} as written (Huffman-coded where that was used),
    `fixed` the same with codes and indices at fixed width. weights: elements of its weight (0
    for batch norm and the input normalisation); entries: stored weight entries (all of them
    when dense, non-zeros + fillers in CSR); fillers: the filler zeros among them."""

    name: str
    stored_as: str
    weights: int
    entries: int
    fillers: int
    bits: dict
    fixed: dict

    @property
    def total(self) -> int:
        return sum(self.bits.values())


@dataclass(frozen=True)
class SizeReport:
    """Sizes of a model in this format, per module and part (`PARTS`), in bits.

    file_bytes is the exact size of the file `save` writes; header_bytes = file_bytes minus the
    parts (magic, version, names, shapes, lengths, byte padding, checksum).
    """

    layers: tuple
    index_bits: int
    huffman: bool
    file_bytes: int

    @property
    def parts(self) -> dict[str, int]:
        """{part: bits} summed over the modules, in `PARTS` order."""
        return {p: sum(layer.bits[p] for layer in self.layers) for p in PARTS}

    @property
    def parts_bytes(self) -> dict[str, float]:
        return {p: bits / 8 for p, bits in self.parts.items()}

    @property
    def total_bits(self) -> int:
        return sum(self.parts.values())

    @property
    def total_bytes(self) -> float:
        return self.total_bits / 8

    @property
    def fixed_bits(self) -> int:
        """The total with codes and indices at fixed width (no Huffman coding)."""
        return sum(sum(layer.fixed.values()) for layer in self.layers)

    @property
    def header_bytes(self) -> float:
        return self.file_bytes - self.total_bytes

    def table(self) -> str:
        """Text table: one row per module, its parts in bits, a total row and the file size."""
        rows = [[layer.name or "(input normalisation)", layer.stored_as, layer.weights,
                 layer.entries, layer.fillers] + [layer.bits[p] for p in PARTS] + [layer.total]
                for layer in self.layers]
        rows.append(["total", "", sum(r[2] for r in rows), sum(r[3] for r in rows),
                     sum(r[4] for r in rows)] + list(self.parts.values()) + [self.total_bits])
        text = table(rows, ["layer", "stored as", "weights", "entries", "fillers", *PARTS, "total"])
        lines = [f"Sizes in bits; relative indices of {self.index_bits} bits, Huffman coding "
                 f"{'on' if self.huffman else 'off'}", text,
                 f"parts: {self.total_bytes:,.0f} bytes; file: {self.file_bytes:,} bytes "
                 f"({self.header_bytes:,.0f} of header, shapes, lengths, padding, checksum)"]
        if self.huffman:
            lines.append(f"without Huffman coding the parts would be {self.fixed_bits / 8:,.0f} bytes")
        return "\n".join(lines)


# --- relative indices -------------------------------------------------------------------------

def relative_indices(positions, index_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Deep Compression's relative indices with filler zeros.

    positions: increasing flat positions (n,) of the non-zero entries of a layer.
    Returns (gaps, filler), both (n + fillers,): gaps[j] = zeros skipped before entry j, in
    [0, 2^k - 1]; filler[j] True for a filler zero. Before an entry whose gap is g come
    floor(g / 2^k) fillers (each covers 2^k positions: 2^k - 1 skipped zeros and itself), then
    the entry with gap g mod 2^k. Inverse: entry positions = cumsum(gaps + 1) - 1.
    """
    positions = np.asarray(positions, dtype=np.int64)
    span = 1 << index_bits
    gap = np.diff(positions, prepend=-1) - 1        # (n,) zeros before each non-zero
    if gap.size and gap.min() < 0:
        raise ValueError("positions must be strictly increasing and >= 0")
    fill = gap // span                              # (n,) fillers before each non-zero
    at = np.cumsum(fill + 1) - 1                    # (n,) where each non-zero lands
    gaps = np.full(int(at[-1]) + 1 if at.size else 0, span - 1, dtype=np.int64)
    filler = np.ones(gaps.size, dtype=bool)
    gaps[at], filler[at] = gap % span, False
    return gaps, filler


# --- writing ------------------------------------------------------------------------------------

def _pack(x: np.ndarray, width: int) -> bytes:
    """x (n,) non-negative ints as `width`-bit fields, most significant bit first, padded."""
    shifts = np.arange(width - 1, -1, -1, dtype=np.int64)
    return np.packbits(((x[:, None] >> shifts) & 1).astype(np.uint8)).tobytes()  # (n*width,) bits


def _put_stream(out: bytearray, x: np.ndarray, width: int, alphabet: int, huffman: bool):
    """Write symbols x (n,) in [0, alphabet): Huffman-coded if asked and smaller than `width`
    bits each, else fixed width. Returns (payload bits, code table bits, fixed-width bits)."""
    fixed = x.size * width
    if huffman:
        coded = huffman_encode(x, alphabet)
        if coded.nbits + coded.table_bits < fixed:
            out += struct.pack("<BI", HUFFMAN, coded.nbits) + coded.lengths.tobytes() + coded.data
            return coded.nbits, coded.table_bits, fixed
    out += struct.pack("<B", FIXED) + _pack(x, width)
    return fixed, 0, fixed


def _quantized(name: str, module: nn.Module, W: torch.Tensor):
    """(codes (n,) int64, codebook (K,) float32) with codebook[codes] = W flattened, for a
    quantized layer; None for a float one. `quant.codes` leaves the codes of zero weights
    meaningless (a mask-aware asymmetric quantizer has no level 0): they get the code of a +0.0
    level, appended to the codebook when it has none."""
    if quant.bits_of(module) is None:
        return None
    codes, codebook = quant.codes(module)
    w = W.flatten()
    codes, codebook = codes.detach().cpu().flatten().long(), codebook.detach().cpu().float().flatten()
    zero = torch.nonzero((codebook == 0) & ~codebook.signbit()).flatten()
    if zero.numel() == 0:
        codebook, zero = torch.cat([codebook, codebook.new_zeros(1)]), torch.tensor([len(codebook)])
    codes = torch.where(w != 0, codes, zero[0])
    if codes.shape != w.shape or not torch.equal(codebook[codes], w):
        raise ValueError(f"layer {name!r}: quant.codes(module) does not give back its weight "
                         f"(codebook[codes] != weight); cannot store it as codes")
    return codes.numpy(), codebook.numpy()


def _encode_weight(name, module, W, index_bits, huffman):
    """The cheaper of dense and CSR for the effective weight W of `module`:
    (bytes, bits, fixed, stored_as, entries, fillers)."""
    W = W.detach().cpu()
    if W.dtype != torch.float32:
        raise ValueError(f"layer {name!r} has {W.dtype} weights; this format stores float32 "
                         f"models: call net.float() first")
    q = _quantized(name, module, W)
    w = W.flatten().numpy()
    gaps, filler = relative_indices(np.flatnonzero(w), index_bits)
    at = np.cumsum(gaps + 1) - 1                               # (m,) flat position of each entry
    options = []
    for sparse in (False, True):
        out, bits = bytearray(), dict.fromkeys(PARTS, 0)
        fixed = dict(bits)
        if q is None and not sparse:
            out += struct.pack("<B", RAW_F32) + w.astype("<f4").tobytes()
            bits["float"] = fixed["float"] = 32 * w.size
            label = "dense fp32"
        elif q is None:
            values = w[at] + np.float32(0.0)                   # fillers: +0.0 whatever the sign
            out += struct.pack("<BI", SPARSE_F32, at.size) + values.astype("<f4").tobytes()
            bits["codes"] = fixed["codes"] = 32 * at.size
            label = "CSR fp32"
        else:
            codes, codebook = q
            used, symbols = np.unique(codes[at] if sparse else codes, return_inverse=True)
            width = max(1, (len(used) - 1).bit_length())
            out += struct.pack("<BI", SPARSE_CODES if sparse else DENSE_CODES, len(used))
            out += codebook[used].astype("<f4").tobytes() + struct.pack("<B", width)
            if sparse:
                out += struct.pack("<I", at.size)
            bits["codebooks"] = fixed["codebooks"] = 32 * len(used)
            bits["codes"], bits["tables"], fixed["codes"] = _put_stream(
                out, symbols.reshape(-1), width, len(used), huffman)
            label = f"{'CSR' if sparse else 'dense'}, {width}-bit codes"
        if sparse:
            bits["indices"], table, fixed["indices"] = _put_stream(
                out, gaps, index_bits, 1 << index_bits, huffman)
            bits["tables"] += table
        if bits["tables"]:
            label += " + Huffman"
        entries = at.size if sparse else w.size
        options.append((bytes(out), bits, fixed, label, entries, int(filler.sum()) if sparse else 0))
    return min(options, key=lambda o: sum(o[1].values()))  # ties: dense


def _modules(net: nn.Module) -> list[tuple[str, int, nn.Module]]:
    """(name, kind, module) of every module with tensors to store, in model order."""
    found = []
    for name, m in net.named_modules():
        if "parametrizations" in name.split("."):
            continue  # the masks and quantizers: the effective weight is stored instead
        kind = next((k for k, (cls, _) in _KINDS.items() if isinstance(m, cls)), None)
        if kind is not None:
            found.append((name, kind, m))
        elif any(True for _ in m.parameters(recurse=False)) or any(True for _ in m.buffers(recurse=False)):
            raise ValueError(f"module {name!r} ({type(m).__name__}) holds tensors this format does "
                             f"not store: it stores Conv2d, Linear, BatchNorm2d and ResNet modules")
    return found


def _encode(net: nn.Module, index_bits: int, huffman: bool) -> tuple[bytes, SizeReport]:
    """The file's bytes and its report (the layout: module docstring)."""
    index_bits = checks.integer("index_bits", index_bits, minimum=1, maximum=16)
    huffman = checks.flag("huffman", huffman)
    body, layers = bytearray(), []
    records = _modules(net)
    for name, kind, module in records:
        encoded = name.encode("utf-8")
        tensors = [(t, getattr(module, t, None)) for t in _KINDS[kind][1]]
        if tensors[-1][1] is None and kind in (_CONV, _LINEAR):
            tensors.pop()  # no bias
        if any(value is None for _, value in tensors):
            raise ValueError(f"module {name!r} lacks {[t for t, v in tensors if v is None]}; "
                             f"batch norm must have affine parameters and running statistics")
        body += struct.pack("<B", len(encoded)) + encoded + struct.pack("<BB", kind, len(tensors))
        size = LayerSize(name, "fp32", 0, 0, 0, dict.fromkeys(PARTS, 0), dict.fromkeys(PARTS, 0))
        for t, value in tensors:
            body += struct.pack(f"<B{value.dim()}I", value.dim(), *value.shape)
            if t == "weight" and kind in (_CONV, _LINEAR):  # the first tensor of its record
                data, bits, fixed, label, entries, fillers = _encode_weight(
                    name, module, value, index_bits, huffman)
                size = LayerSize(name, label, value.numel(), entries, fillers, bits, fixed)
                body += data
                continue
            part = "batchnorm" if kind == _BN else "float"
            code, dtype = (RAW_I64, torch.int64) if t == "num_batches_tracked" else (RAW_F32, torch.float32)
            if value.dtype != dtype:
                raise ValueError(f"{name}.{t} is {value.dtype}; this format stores {dtype} there: "
                                 f"call net.float() first")
            raw = value.detach().cpu().numpy()
            body += struct.pack("<B", code) + raw.astype(raw.dtype.newbyteorder("<")).tobytes()
            size.bits[part] += 8 * raw.nbytes
            size.fixed[part] += 8 * raw.nbytes
        layers.append(size)
    length = _HEAD.size + len(body) + _SUM
    blob = _HEAD.pack(MAGIC, VERSION, length, index_bits, len(records)) + bytes(body)
    blob += hashlib.sha256(blob).digest()
    return blob, SizeReport(tuple(layers), index_bits, huffman, len(blob))


def size_report(net: nn.Module, *, index_bits: int = 4, huffman: bool = True) -> SizeReport:
    """The size of `net` in this format, per module and part, without writing a file.

    index_bits: bits k per relative index (int in 1..16); huffman: Huffman-code the codes and
    indices where that is smaller. ValueError for other values, non-float32 weights, or modules
    whose tensors the format does not store.
    """
    return _encode(net, index_bits, huffman)[1]


def save(net: nn.Module, path, *, index_bits: int = 4, huffman: bool = True) -> SizeReport:
    """Write `net` to `path` in this format; returns its `SizeReport` (file_bytes = file size).

    `net` must be a ResNet-20 (``models.ResNet`` with three blocks per stage, channel-pruned or
    not): what `load` rebuilds. The bytes are read back (as `load` reads them) before anything is
    written, so a file that `load` would reject is never written; the file is then written
    atomically (``labkit.files``): a failed save leaves the previous file as it was."""
    if not isinstance(net, models.ResNet):
        raise ValueError(f"compress.save stores a ResNet-20 (labkit.models.ResNet), which load "
                         f"rebuilds; got {type(net).__name__}")
    bad = files.non_finite(net.state_dict())
    if bad:                                # load refuses them: what is saved loads, and a saved model is finite
        raise ValueError(f"not saving {path}: these tensors hold inf or NaN, and a saved model must be finite "
                         f"(the training diverged, or a value overflowed): {bad[:10]}"
                         f"{f' and {len(bad) - 10} more' if len(bad) > 10 else ''}")
    blob, report = _encode(net, index_bits, huffman)
    _build(_parse(blob, path), path)       # what load will do: refused here rather than there
    files.write_bytes(path, blob)
    return report


# --- reading ----------------------------------------------------------------------------------

class _Reader:
    """Reads fields of `buf` in order; running past `end` is a ValueError, never a short read."""

    def __init__(self, buf: bytes, pos: int, end: int, path):
        self.buf, self.pos, self.end, self.path = buf, pos, end, path

    def fail(self, what: str):
        raise ValueError(f"{self.path} is not a valid labkit compressed model: {what} (at byte "
                         f"{self.pos}); it may have been written by another version or damaged")

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.end:
            self.fail(f"a field of {n} bytes runs past the end of the data")
        self.pos += n
        return self.buf[self.pos - n:self.pos]

    def unpack(self, fmt: str):
        s = struct.Struct("<" + fmt)
        return s.unpack(self.take(s.size))

    def array(self, dtype: str, count: int) -> np.ndarray:
        dtype = np.dtype(dtype)
        return np.frombuffer(self.take(count * dtype.itemsize), dtype=dtype).astype(dtype.newbyteorder("="))


def _get_stream(r: _Reader, n: int, width: int, alphabet: int) -> np.ndarray:
    (method,) = r.unpack("B")
    if method == FIXED:
        bits = np.unpackbits(np.frombuffer(r.take(math.ceil(n * width / 8)), dtype=np.uint8))
        x = bits[:n * width].reshape(n, width).astype(np.int64) @ (1 << np.arange(width - 1, -1, -1))
    elif method == HUFFMAN:
        (nbits,) = r.unpack("I")
        lengths = r.array("u1", alphabet)
        x = huffman_decode(Coded(lengths, r.take(math.ceil(nbits / 8)), nbits, n))
    else:
        r.fail(f"unknown stream encoding {method}")
    if x.size and x.max() >= alphabet:
        r.fail(f"a code {x.max()} beyond its codebook of {alphabet}")
    return x


def _get_weight(r: _Reader, code: int, numel: int, index_bits: int) -> np.ndarray:
    """The float32 weight (numel,) of one tensor record."""
    if code == RAW_F32:
        return r.array("<f4", numel)
    if code not in (DENSE_CODES, SPARSE_F32, SPARSE_CODES):
        r.fail(f"unknown tensor encoding {code}")
    if code != SPARSE_F32:
        (levels,) = r.unpack("I")
        codebook = r.array("<f4", levels)
        (width,) = r.unpack("B")
        if not (1 <= width <= 32 and levels <= 1 << width):
            r.fail(f"{levels} levels do not fit {width}-bit codes")
    if code == DENSE_CODES:
        if levels == 0 and numel:
            r.fail(f"a codebook of 0 levels for a weight of {numel} elements")
        return codebook[_get_stream(r, numel, width, levels)]
    (m,) = r.unpack("I")
    if m > numel:
        r.fail(f"{m} entries for a weight of {numel} elements")
    if code == SPARSE_CODES and levels == 0 and m:
        r.fail(f"a codebook of 0 levels for {m} stored entries")   # 0 levels: an all-zero weight
    values = r.array("<f4", m) if code == SPARSE_F32 else codebook[_get_stream(r, m, width, levels)]
    at = np.cumsum(_get_stream(r, m, index_bits, 1 << index_bits) + 1) - 1   # (m,) positions
    if m and at[-1] >= numel:
        r.fail(f"relative indices run to position {at[-1]} of a weight of {numel} elements")
    w = np.zeros(numel, dtype=np.float32)
    w[at] = values
    return w


def _parse(buf: bytes, path) -> list[tuple[str, int, list[np.ndarray]]]:
    """Check the envelope (magic, version, length, SHA-256), then read every record."""
    if len(buf) < _HEAD.size + _SUM or buf[:len(MAGIC)] != MAGIC:
        raise ValueError(f"{path} is not a labkit compressed model (it does not start with "
                         f"{MAGIC!r}); write one with labkit.compress.save")
    _, version, length, index_bits, count = _HEAD.unpack_from(buf)
    if version != VERSION:
        raise ValueError(f"{path} has format version {version}; this labkit reads version {VERSION}")
    if len(buf) != length:
        raise ValueError(f"{path} has {len(buf)} bytes but its header says {length}: the file is "
                         f"{'truncated' if len(buf) < length else 'followed by extra bytes'}")
    if hashlib.sha256(buf[:-_SUM]).digest() != buf[-_SUM:]:
        raise ValueError(f"{path} is corrupted: its SHA-256 checksum does not match its contents")
    r = _Reader(buf, _HEAD.size, len(buf) - _SUM, path)
    if not 1 <= index_bits <= 16:
        r.fail(f"index_bits = {index_bits}")
    records = []
    for _ in range(count):
        (n,) = r.unpack("B")
        name = r.take(n).decode("utf-8", errors="replace")
        kind, ntensors = r.unpack("BB")
        if kind not in _KINDS or ntensors > len(_KINDS[kind][1]):
            r.fail(f"record {name!r} of unknown kind {kind} or with {ntensors} tensors")
        tensors = []
        for _ in range(ntensors):
            (ndim,) = r.unpack("B")
            shape = r.unpack(f"{ndim}I")
            (code,) = r.unpack("B")
            numel = math.prod(shape)
            if numel > _MAX_ELEMENTS:
                r.fail(f"record {name!r} has a tensor of shape {shape}, beyond {_MAX_ELEMENTS} elements")
            if code == RAW_I64:
                value = r.array("<i8", numel)
            else:
                value = _get_weight(r, code, numel, index_bits)
            tensors.append(value.reshape(shape))
        records.append((name, kind, tensors))
    if r.pos != r.end:
        r.fail(f"{r.end - r.pos} bytes left after the last record")
    return records


def _build(records, path) -> models.ResNet:
    """models.ResNet with the records' shapes: `inner` widths from each block's conv1 (a
    channel-pruned ResNet-20), num_classes from fc; then every record must fit it exactly."""
    shapes = {name: tensors[0].shape for name, _, tensors in records}
    blocks = [f"stage{s}.{i}.conv1" for s in (1, 2, 3) for i in range(3)]
    if any(b not in shapes or len(shapes[b]) != 4 for b in blocks + ["conv1"]) \
            or len(shapes.get("fc", ())) != 2:
        raise ValueError(f"{path} does not hold the layers of a ResNet-20 (conv1, stageN.i.conv1, "
                         f"fc): it holds {list(shapes)}")
    net = models.ResNet((3, 3, 3), num_classes=shapes["fc"][0], inner=[shapes[b][0] for b in blocks])
    expected = {name: (kind, m) for name, kind, m in _modules(net)}
    if sorted(expected) != sorted(shapes) or len(records) != len(shapes):
        raise ValueError(f"{path} holds other modules than ResNet-20: missing "
                         f"{sorted(set(expected) - set(shapes))}, unexpected "
                         f"{sorted(set(shapes) - set(expected))} (or a module twice)")
    with torch.no_grad():
        for name, kind, tensors in records:
            own_kind, m = expected[name]
            fields = [t for t in _KINDS[own_kind][1] if getattr(m, t, None) is not None]
            if kind != own_kind or len(tensors) != len(fields):
                raise ValueError(f"{path}: module {name!r} is stored as {_KINDS[kind][0].__name__} "
                                 f"with {len(tensors)} tensors; ResNet-20's is "
                                 f"{type(m).__name__} with {fields}")
            for t, value in zip(fields, tensors):
                target = getattr(m, t)
                if tuple(target.shape) != value.shape:
                    raise ValueError(f"{path}: {name}.{t} has shape {value.shape}; in a ResNet-20 "
                                     f"with these block widths it is {tuple(target.shape)}")
                target.copy_(torch.from_numpy(value))
    return net


def load(path) -> models.ResNet:
    """Read a file written by `save`: a ResNet-20 on the CPU, in train mode, without masks or
    quantizers, its weights and batch-norm state those of the saved model (see the module
    docstring). ValueError for a truncated, corrupted or foreign file, naming it; also for a file
    whose weights hold inf or NaN (named)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no labkit compressed model at {Path(path).absolute()}"
                                f"{' (a folder)' if Path(path).is_dir() else ''}")
    try:
        buf = Path(path).read_bytes()
    except OSError as e:
        raise OSError(e.errno, f"cannot read the compressed model {path}: {e.strerror}", str(path)) from e
    try:
        net = _build(_parse(buf, path), path)
    except ValueError as e:     # huffman's errors (a corrupted stream) do not know the file
        if str(path) in str(e):
            raise
        raise ValueError(f"{path} is damaged: {e}") from e
    bad = files.non_finite(net.state_dict())
    if bad:
        raise ValueError(f"{path} holds inf or NaN in {bad[:10]}: a damaged file, or a model saved after it diverged")
    return net
