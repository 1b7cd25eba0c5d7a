"""Huffman coding: round trips, code lengths against the `dahuffman` package, optimality and the
size bound, canonical codes that form a prefix code, and corrupted streams rejected."""
import math

import numpy as np
import pytest
from dahuffman import HuffmanCodec

from labkit.huffman import MAX_ALPHABET, Coded, canonical_codes, code_lengths, decode, encode


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


@pytest.mark.parametrize("symbols, match", [
    ([1.7, 2.2], "integers, got 1.7"),           # issue 14 #8: decoded as [1, 2] before
    (np.array([0.0, np.nan]), "integers, got nan"),
    ([1.0, np.inf], "integers, got inf"),
    ([-1, 2], "non-negative"),
    (np.array([-0.5]), "integers"),
    (["a", "b"], "dtype"),
    (np.array([True, False]), "dtype bool"),
])
def test_non_integer_or_negative_symbols_refused(symbols, match):
    with pytest.raises(ValueError, match=match):
        encode(symbols)


def test_whole_floats_are_their_integers():
    np.testing.assert_array_equal(decode(encode([1.0, 2.0, 2.0])), [1, 2, 2])
    np.testing.assert_array_equal(decode(encode(np.array([3, 0], dtype=np.uint8))), [3, 0])


def test_huge_symbols_refused_before_allocating_their_alphabet():
    """Issue 14 #8: encode([10**9]) took 21 s and 9 GB (a count and a table entry per symbol of the
    alphabet). Under a 1.5 GB address-space limit the old code dies of MemoryError; now it refuses
    at once with a clear error, the alphabet's limit named."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import resource, time
        import numpy as np
        resource.setrlimit(resource.RLIMIT_AS, (3 << 29, 3 << 29))
        from labkit.huffman import encode
        for args in (([10**9],), ([0], 10**9), (np.array([2**63], dtype=np.uint64),)):
            start = time.perf_counter()
            try:
                encode(*args)
                print("accepted")
            except ValueError as e:
                print("refused", round(time.perf_counter() - start, 1), e)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    assert len(lines) == 3 and all(line.startswith("refused 0.0 ") for line in lines), r.stdout
    assert "MAX_ALPHABET = 1048576" in lines[0] and "np.unique" in lines[0]
    assert "alphabet must be an int in 0..1048576" in lines[1]
    x = [0, MAX_ALPHABET - 1]                     # the limit itself is coded
    assert MAX_ALPHABET == 1 << 20 and decode(encode(x)).tolist() == x
