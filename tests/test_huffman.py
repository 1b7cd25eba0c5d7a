"""Huffman coding: round trips, code lengths against the `dahuffman` package, optimality and the
size bound, canonical codes that form a prefix code, and corrupted streams rejected."""
import math

import numpy as np
import pytest
from dahuffman import HuffmanCodec

from labkit.huffman import Coded, canonical_codes, code_lengths, decode, encode


def skewed(seed, alphabet, n, concentration=0.3):
    """n symbols of [0, alphabet) drawn from a random, usually skewed distribution."""
    rng = np.random.default_rng(seed)
    return rng.choice(alphabet, size=n, p=rng.dirichlet(np.full(alphabet, concentration)))


def dahuffman_lengths(counts) -> dict[int, int]:
    """{symbol: code length} of dahuffman's code for the counts (its end-of-file symbol is
    made one of ours, so that it adds no symbol of its own)."""
    present = {int(s): int(c) for s, c in enumerate(counts) if c > 0}
    table = HuffmanCodec.from_frequencies(present, eof=next(iter(present))).get_code_table()
    return {s: bits for s, (bits, _) in table.items()}


@pytest.mark.parametrize("seed", range(40))
def test_round_trip(seed):
    alphabet = [1, 2, 3, 16, 17, 256][seed % 6]
    x = skewed(seed, alphabet, n=[0, 1, 7, 1000, 5000][seed % 5])
    coded = encode(x, alphabet)
    assert len(coded.lengths) == alphabet
    np.testing.assert_array_equal(decode(coded), x)


@pytest.mark.parametrize("seed", range(40))
def test_lengths_equal_dahuffman(seed):
    alphabet = [2, 3, 5, 16, 31, 64][seed % 6]
    counts = np.bincount(skewed(seed, alphabet, n=2000), minlength=alphabet)
    if np.count_nonzero(counts) < 2:
        counts[:2] += 1
    ours = code_lengths(counts)
    ref = dahuffman_lengths(counts)
    assert {s: int(ours[s]) for s in ref} == ref
    assert np.all(ours[counts == 0] == 0)


def test_lengths_equal_dahuffman_with_ties():
    """Equal counts everywhere: many trees are optimal, the tie rule picks the same one."""
    for counts in ([5] * 16, [1] * 7, [1, 1, 2, 2, 4, 4, 8, 8], [3, 3, 3, 1, 1, 1]):
        ours = code_lengths(np.array(counts))
        assert {s: int(ours[s]) for s in range(len(counts))} == dahuffman_lengths(counts)


@pytest.mark.parametrize("seed", range(20))
def test_optimal_and_within_the_size_bound(seed):
    """Coded size = sum_s c_s l_s (what dahuffman's code costs too), between the entropy and the
    entropy + 1 bit per symbol, and never above the fixed-width size plus the code table."""
    alphabet = [4, 16, 32, 256][seed % 4]
    x = skewed(seed, alphabet, n=3000, concentration=[0.1, 1.0, 100.0][seed % 3])
    coded = encode(x, alphabet)
    counts = np.bincount(x, minlength=alphabet)
    ref = dahuffman_lengths(counts)
    assert coded.nbits == sum(counts[s] * ref[s] for s in ref)
    assert len(coded.data) == math.ceil(coded.nbits / 8)
    p = counts[counts > 0] / len(x)
    entropy = -(p * np.log2(p)).sum() * len(x)
    assert entropy - 1e-6 <= coded.nbits <= entropy + len(x)
    fixed = len(x) * math.ceil(math.log2(alphabet))
    assert coded.nbits <= fixed + coded.table_bits


def test_one_symbol_gets_one_bit():
    coded = encode(np.full(10, 3), alphabet=5)
    assert coded.lengths.tolist() == [0, 0, 0, 1, 0]
    assert coded.nbits == 10
    np.testing.assert_array_equal(decode(coded), np.full(10, 3))


def test_canonical_codes_are_a_prefix_code():
    lengths = code_lengths(np.bincount(skewed(3, 40, 5000), minlength=40))
    codes = canonical_codes(lengths)
    words = [format(int(codes[s]), f"0{lengths[s]}b") for s in range(40) if lengths[s]]
    assert len(set(words)) == len(words)
    assert not any(a != b and b.startswith(a) for a in words for b in words)
    assert sum(2.0 ** -len(w) for w in words) <= 1.0  # Kraft
    with pytest.raises(ValueError, match="Kraft"):
        canonical_codes([1, 1, 1])


def test_corrupted_streams_rejected():
    coded = encode(skewed(1, 16, 500), 16)
    with pytest.raises(ValueError, match="corrupted"):  # fewer bits than the symbols need
        decode(Coded(coded.lengths, coded.data[: len(coded.data) // 2], coded.nbits // 2, coded.n))
    with pytest.raises(ValueError, match="corrupted"):  # a symbol too many
        decode(Coded(coded.lengths, coded.data, coded.nbits, coded.n + 1))
    with pytest.raises(ValueError, match="corrupted"):  # bits that match no code word
        decode(Coded(np.array([1, 0], dtype=np.uint8), b"\xff", 8, 8))


def test_bad_input_rejected():
    with pytest.raises(ValueError, match="alphabet"):
        encode(np.array([0, 5]), alphabet=4)
    with pytest.raises(ValueError, match="counts"):
        code_lengths(np.array([1.5, 2.0]))
    with pytest.raises(ValueError, match="counts"):
        code_lengths(np.array([3, -1]))
