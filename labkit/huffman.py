"""Huffman coding of small-integer symbols (the third stage of Deep Compression, Lab 4).

A stream of n symbols from the alphabet {0, ..., A-1} (quantization codes, relative indices)
whose symbol s occurs c_s times costs n * ceil(log2 A) bits at fixed width. A prefix code that
gives s a code word of l_s bits costs sum_s c_s l_s bits; Huffman's algorithm (1952) finds the
lengths l_s that minimise that sum, and no prefix code does better (their mean length is
within one bit of the entropy -sum_s p_s log2 p_s, p_s = c_s / n):

1. put every symbol with c_s > 0 in a priority queue as a leaf of weight c_s;
2. take out the two lightest nodes, join them under a new node of their summed weight, put it back;
3. repeat until one node is left: l_s is the depth of leaf s.

Ties between equal weights are broken by the symbol of the subtree's first leaf (smaller first),
as the reference package `dahuffman` does, so the lengths are reproducible. A lone symbol gets one
bit (a code word cannot be empty); symbols that do not occur get length 0 (no code word).

Symbols are non-negative integers: fractions, NaN and negative values are refused, not rounded.
An alphabet has at most `MAX_ALPHABET` symbols (its code table takes a byte per symbol, and the
counting memory in proportion): renumber sparse large symbols 0, 1, 2, ... first.

Canonical codes: only the lengths are stored (the "code table", one byte per symbol of the
alphabet). Code words are then assigned in order of (length, symbol), each the previous one
plus 1, shifted left when the length grows, so the decoder rebuilds them from the lengths.
Bits are written most significant first and the stream is padded with zeros to whole bytes.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from .checks import integer

MAX_LENGTH = 56  # code words are decoded through 64-bit windows; far above what 2^32 symbols need
MAX_ALPHABET = 1 << 20  # symbols of an alphabet: its code table takes a byte each (labkit's use 2^16 at most)

__all__ = ["MAX_ALPHABET", "Coded", "code_lengths", "canonical_codes", "encode", "decode"]


@dataclass(frozen=True)
class Coded:
    """A Huffman-coded stream: everything `decode` needs.

    lengths: (A,) uint8, the code length of each symbol of the alphabet (0: the symbol is absent);
    data: the code words, most significant bit first, zero-padded to whole bytes;
    nbits: how many bits of `data` are code words (sum over the stream of l_s);
    n: how many symbols the stream holds.
    """

    lengths: np.ndarray
    data: bytes
    nbits: int
    n: int

    @property
    def table_bits(self) -> int:
        """Size of the code table as stored: one byte per symbol of the alphabet."""
        return 8 * len(self.lengths)


def code_lengths(counts) -> np.ndarray:
    """Huffman code lengths (A,) uint8 for the symbol counts (A,) (non-negative integers).

    Returns l with sum_s counts[s] * l[s] minimal over all prefix codes; l[s] = 0 where
    counts[s] = 0; a single occurring symbol gets l = 1. Ties as the module docstring says.
    """
    counts = np.asarray(counts)
    if counts.ndim != 1 or (counts.size and (counts.dtype.kind not in "iu" or counts.min() < 0)):
        raise ValueError(f"counts must be a 1-D array of non-negative integers, got "
                         f"dtype {counts.dtype}, shape {counts.shape}")
    lengths = np.zeros(len(counts), dtype=np.int64)
    present = np.flatnonzero(counts).tolist()
    if len(present) == 1:
        lengths[present[0]] = 1
    # A heap entry is (weight, first leaf's symbol, leaves of the subtree); the first leaf of a
    # joined node is the first leaf of its lighter part, so the second key stays unique.
    heap = [(int(counts[s]), s, [s]) for s in present]
    heapq.heapify(heap)
    while len(heap) > 1:
        wa, first, a = heapq.heappop(heap)
        wb, _, b = heapq.heappop(heap)
        lengths[a] += 1  # every leaf under the new node is one level deeper
        lengths[b] += 1
        heapq.heappush(heap, (wa + wb, first, a + b))
    if lengths.max(initial=0) > MAX_LENGTH:
        raise ValueError(f"a Huffman code word would be {lengths.max()} bits long, more than "
                         f"{MAX_LENGTH}: the stream is too long for this coder")
    return lengths.astype(np.uint8)


def canonical_codes(lengths) -> np.ndarray:
    """The canonical code word (A,) uint64 of each symbol, from its length (0: no code word)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    codes = np.zeros(len(lengths), dtype=np.uint64)
    code, previous = 0, 0
    for s in sorted(np.flatnonzero(lengths).tolist(), key=lambda s: (lengths[s], s)):
        code <<= int(lengths[s]) - previous
        previous = int(lengths[s])
        codes[s] = code
        code += 1
    if previous and code > (1 << previous):  # sum_s 2^-l_s > 1
        raise ValueError("the code lengths violate Kraft's inequality: not a prefix code")
    return codes


def encode(symbols, alphabet: int | None = None) -> Coded:
    """Huffman-code a 1-D array of integer symbols in [0, alphabet) (default: max + 1).

    Symbols are non-negative integers: an integer array, or floats that are whole numbers
    (``[1.7, 2.2]``, NaN and negative values are refused, not rounded). The alphabet has at most
    `MAX_ALPHABET` symbols: the code table holds a length for every symbol of the alphabet, and
    counting them takes memory in proportion to it, whether a symbol occurs or not.
    """
    x = _symbols(symbols)
    if alphabet is None:
        alphabet = int(x.max(initial=-1)) + 1
    alphabet = integer("alphabet", alphabet, minimum=0, maximum=MAX_ALPHABET)
    if x.size and x.max() >= alphabet:
        raise ValueError(f"symbols must lie in [0, alphabet = {alphabet}), got values in "
                         f"[{x.min()}, {x.max()}]")
    lengths = code_lengths(np.bincount(x, minlength=alphabet))
    codes = canonical_codes(lengths)
    n_len = lengths.astype(np.int64)[x]                             # (n,) bits of each code word
    width = int(n_len.max(initial=0))
    # (n, width) bits of each code word, left-aligned; keep the first n_len[i] of row i
    shifts = np.arange(width - 1, -1, -1, dtype=np.int64)[None, :] - (width - n_len)[:, None]
    bits = (codes[x][:, None] >> np.maximum(shifts, 0).astype(np.uint64)) & np.uint64(1)
    stream = bits[shifts >= 0].astype(np.uint8)                     # (nbits,) row-major order
    return Coded(lengths=lengths, data=np.packbits(stream).tobytes(), nbits=int(stream.size),
                 n=int(x.size))


def _symbols(symbols) -> np.ndarray:
    """The symbols (n,) int64, checked: non-negative whole numbers below MAX_ALPHABET."""
    x = np.asarray(symbols).reshape(-1)
    if x.dtype.kind == "f":
        bad = ~np.isfinite(x) | (x != np.trunc(x))
        if bad.any():
            raise ValueError(f"symbols must be integers, got {x[bad][0].item()!r} among the {x.dtype} "
                             f"values: round or cast them to integers first")
    elif x.dtype.kind not in "iu" and x.size:
        raise ValueError(f"symbols must be integers, got an array of dtype {x.dtype}")
    if x.size and x.min() < 0:
        raise ValueError(f"symbols must be non-negative integers, got {x.min().item()!r}")
    if x.size and x.max() >= MAX_ALPHABET:
        raise ValueError(f"symbol {x.max().item()!r} is beyond the largest alphabet this coder takes, "
                         f"MAX_ALPHABET = {MAX_ALPHABET} symbols (its code table has a byte per "
                         f"symbol); map the symbols to 0, 1, 2, ... first (np.unique(x, return_inverse=True))")
    return x.astype(np.int64)


def decode(coded: Coded) -> np.ndarray:
    """The symbols (n,) int64 of a `Coded` stream; ValueError when the bits do not decode."""
    lengths = np.asarray(coded.lengths, dtype=np.int64)
    n, nbits = int(coded.n), int(coded.nbits)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if nbits > 8 * len(coded.data) or not lengths.any() or lengths.max() > MAX_LENGTH:
        raise ValueError("corrupted Huffman stream: its length or code table is impossible")
    width = int(lengths.max())
    # Canonical code words, left-aligned to `width` bits, increase in (length, symbol) order:
    # the code word starting at bit p is the last one whose left-aligned value <= the window at p.
    order = np.array(sorted(np.flatnonzero(lengths).tolist(), key=lambda s: (lengths[s], s)))
    starts = canonical_codes(lengths)[order].astype(np.int64) << (width - lengths[order])
    bits = np.unpackbits(np.frombuffer(coded.data, dtype=np.uint8))[:nbits]
    bits = np.concatenate([bits, np.zeros(width, dtype=np.uint8)]).astype(np.int64)
    window = np.zeros(nbits, dtype=np.int64)                         # (nbits,) width bits from p
    for j in range(width):
        window = (window << 1) | bits[j:j + nbits]
    k = np.searchsorted(starts, window, side="right") - 1            # (nbits,) code word at p
    step = lengths[order][k].tolist()
    # Follow the code words from bit 0: position i+1 = position i + length of word i.
    positions, p = [], 0
    for _ in range(n):
        if p >= nbits:
            raise ValueError(f"corrupted Huffman stream: {nbits} bits end before {n} symbols")
        positions.append(p)
        p += step[p]
    if p != nbits:
        raise ValueError(f"corrupted Huffman stream: {n} symbols take {p} bits, not {nbits}")
    k = k[positions]
    # An incomplete code (a lone symbol) leaves windows that match no code word: check each one.
    if np.any((window[positions] >> (width - lengths[order][k])) != (starts[k] >> (width - lengths[order][k]))):
        raise ValueError("corrupted Huffman stream: bits that are no code word")
    return order[k].astype(np.int64)
