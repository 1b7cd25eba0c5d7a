"""The Deep Compression storage format: bit-exact round trips (dense, pruned, quantized, pruned +
quantized, channel-pruned), the size report's parts against counts computed here, filler zeros on
hand-made gaps, and truncated, corrupted and foreign files rejected."""
import hashlib
import io
import math
import struct

import numpy as np
import pytest
import torch

from labkit import compress, models, prune, quant, structured
from labkit.compress import PARTS, load, relative_indices, save, size_report
from labkit.layers import prunable_layers
from faults import save_under_size_limit


def random_resnet(seed=0, **kwargs) -> models.ResNet:
    """A ResNet-20 with random weights and random batch-norm state (as after training)."""
    torch.manual_seed(seed)
    net = models.ResNet(**kwargs)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_()
                m.running_mean.normal_()
                m.running_var.uniform_(0.1, 2.0)
                m.num_batches_tracked.fill_(1234)
        net.fc.bias.normal_()
    return net


def make(kind: str, seed=0) -> models.ResNet:
    """dense / pruned (80 %, masks) / quantized (4 bits) / pruned+quantized (mask-aware)."""
    net = random_resnet(seed)
    if "pruned" in kind:
        prune.prune_by_percentage(net, 0.8)
    if "quantized" in kind:
        quant.set_bits(net, 4)
    return net


def bits_of(t: torch.Tensor) -> torch.Tensor:
    """The bit pattern of a float32 tensor, with -0.0 read as +0.0 (x + 0.0 maps -0 to +0)."""
    return (t.detach() + 0.0).view(torch.int32) if t.is_floating_point() else t.detach()


def assert_same_model(net, loaded):
    """Effective weights, biases, batch-norm state and input normalisation bit for bit."""
    own = {name: m for name, m in net.named_modules() if "parametrizations" not in name}
    for name, m in loaded.named_modules():
        for t in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked", "mean", "std"):
            value = getattr(m, t, None)
            if isinstance(value, torch.Tensor):
                torch.testing.assert_close(bits_of(value), bits_of(getattr(own[name], t)), rtol=0, atol=0,
                                           msg=f"{name}.{t}")
    X = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded.eval()(X), net.eval()(X))


# --- round trips ------------------------------------------------------------------------------

@pytest.mark.parametrize("huffman", [True, False])
@pytest.mark.parametrize("kind", ["dense", "pruned", "quantized", "pruned+quantized"])
def test_round_trip_bit_exact(tmp_path, kind, huffman):
    net = make(kind)
    report = save(net, tmp_path / "m.lkdc", huffman=huffman)
    loaded = load(tmp_path / "m.lkdc")
    assert type(loaded) is models.ResNet and loaded.training
    assert prune.masks(loaded) == {} and quant.bits_of(loaded.stage1[0].conv1) is None  # plain model
    assert_same_model(net, loaded)
    assert report.file_bytes == (tmp_path / "m.lkdc").stat().st_size


@pytest.mark.parametrize("zero", ["float", "schedule", "zero_point"])
def test_round_trip_of_each_quantizer_variant_while_weights_regrow(tmp_path, zero):
    """Lab 3 (e)'s three quantizer variants, after a pruning step that holds nothing and regrowth:
    stored as codes + codebook and loaded bit for bit."""
    net = random_resnet(3)
    quant.set_bits(net, 4, zero=zero)
    schedule = prune.IterativePruning(0.8, 2, scope="global")
    schedule.on_epoch_begin(0, net, None)                 # prunes 40 %, holds nothing
    with torch.no_grad():                                 # the pruned weights regrow a little
        for _, m in prunable_layers(net):
            m.weight.add_(1e-3 * torch.randn(m.weight.shape, generator=torch.Generator().manual_seed(7)))
    report = save(net, tmp_path / "m.lkdc")
    assert_same_model(net, load(tmp_path / "m.lkdc"))
    layers = {layer.name: layer for layer in report.layers}
    for name, m in quant.quantizable_layers(net):
        c, codebook = quant.codes(m)
        assert torch.equal(torch.where(m.weight != 0, codebook[c], 0.0), m.weight)
        if zero == "schedule":
            assert torch.equal(m.weight == 0, ~schedule.keep[name])
        assert "codes" in layers[name].stored_as


@pytest.mark.parametrize("index_bits", [1, 3, 8])
def test_round_trip_other_index_widths(tmp_path, index_bits):
    net = make("pruned+quantized", seed=1)
    save(net, tmp_path / "m.lkdc", index_bits=index_bits)
    assert_same_model(net, load(tmp_path / "m.lkdc"))


def test_round_trip_channel_pruned(tmp_path):
    """Narrower inner convs (labkit.structured's channel pruning, then 50 % unstructured and
    4 bits on top): the shapes come from the file."""
    net = structured.prune_channels(random_resnet(2), 0.5)
    prune.prune_by_percentage(net, 0.5)
    quant.set_bits(net, 4)
    save(net, tmp_path / "m.lkdc")
    loaded = load(tmp_path / "m.lkdc")
    assert structured.inner_widths(loaded) == structured.inner_widths(net) == (8,) * 3 + (16,) * 3 + (32,) * 3
    assert_same_model(net, loaded)
    odd = random_resnet(5, inner=(8, 4, 16, 16, 8, 32, 32, 20, 64))  # any widths, one per block
    save(odd, tmp_path / "o.lkdc")
    assert_same_model(odd, load(tmp_path / "o.lkdc"))


def test_negative_zeros_load_as_zeros(tmp_path):
    """-0.0 weights are zeros: not stored in CSR, loaded as +0.0; the values are equal."""
    net = random_resnet(3)
    with torch.no_grad():
        for _, m in prunable_layers(net):
            w = m.weight
            w[w.abs() < w.abs().quantile(0.8)] = -0.0
    report = save(net, tmp_path / "m.lkdc")
    assert all(layer.stored_as.startswith("CSR") for layer in report.layers if layer.weights)
    loaded = load(tmp_path / "m.lkdc")
    assert_same_model(net, loaded)


# --- the size report ----------------------------------------------------------------------------

def reference_fillers(w: np.ndarray, index_bits: int) -> int:
    """Filler zeros counted by walking the flat weight: after 2^k - 1 skipped zeros the next zero
    must be stored (as a filler) when a later non-zero still has to be reached."""
    pending = fillers = run = 0
    for v in w:
        if v == 0:
            run += 1
            if run == 2 ** index_bits:   # the gap would be 2^k: this zero becomes a filler
                pending, run = pending + 1, 0
        else:
            fillers, pending, run = fillers + pending, 0, 0
    return fillers


def header_bound(net) -> int:
    """An upper bound on what the file adds to the parts: magic (8), version (2), length (8),
    index bits (1), record count (2), checksum (32); per module its name and 3 bytes; per tensor
    its shape (1 + 4 per dimension), encoding, counts and stream headers (at most 20 bytes) and
    at most 2 bytes of padding."""
    bound = 8 + 2 + 8 + 1 + 2 + 32
    for name, m in net.named_modules():
        if "parametrizations" in name:
            continue
        tensors = [t for t in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked",
                               "mean", "std") if isinstance(getattr(m, t, None), torch.Tensor)]
        if tensors and not list(m.children()) or isinstance(m, models.ResNet):
            bound += 3 + len(name) + sum(1 + 4 * getattr(m, t).dim() + 20 + 2 for t in tensors)
    return bound


@pytest.mark.parametrize("kind", ["dense", "pruned", "quantized", "pruned+quantized"])
def test_parts_add_up_to_the_file(tmp_path, kind):
    net = make(kind)
    for huffman in (False, True):
        report = save(net, tmp_path / "m.lkdc", huffman=huffman)
        size = (tmp_path / "m.lkdc").stat().st_size
        assert size == report.file_bytes == size_report(net, huffman=huffman).file_bytes
        assert report.total_bytes <= size <= report.total_bytes + header_bound(net)
        assert report.total_bits == sum(report.parts.values()) == sum(l.total for l in report.layers)
        assert report.total_bits <= report.fixed_bits


def test_parts_of_a_dense_float_model():
    """Everything float32: weights, fc bias and the input normalisation in 'float'; batch norm
    32 bits per scale, shift, mean, variance and 64 for the step count."""
    net = random_resnet()
    report = size_report(net)
    weights = sum(m.weight.numel() for _, m in prunable_layers(net))
    bn = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert report.parts == {"codes": 0, "indices": 0, "codebooks": 0,
                            "float": 32 * (weights + 10 + 6),
                            "batchnorm": sum(4 * 32 * m.num_features + 64 for m in bn), "tables": 0}
    assert all(layer.stored_as == "dense fp32" for layer in report.layers if layer.weights)


@pytest.mark.parametrize("index_bits", [2, 4, 5])
def test_parts_of_a_pruned_float_model(index_bits):
    """CSR at fixed width: (non-zeros + fillers) x 32 bits of values and x k bits of indices."""
    net = make("pruned")
    report = size_report(net, index_bits=index_bits, huffman=False)
    layers = {layer.name: layer for layer in report.layers}
    for name, m in prunable_layers(net):
        w = m.weight.detach().flatten().numpy()
        entries = np.count_nonzero(w) + reference_fillers(w, index_bits)
        layer = layers[name]
        assert layer.stored_as == "CSR fp32"
        assert layer.fillers == reference_fillers(w, index_bits)
        assert layer.bits["codes"] == 32 * entries and layer.bits["indices"] == index_bits * entries


def test_parts_of_a_quantized_model():
    """Dense 4-bit codes: the codebook holds the levels used, the codes ceil(log2 levels) bits."""
    net = make("quantized")
    report = size_report(net, huffman=False)
    layers = {layer.name: layer for layer in report.layers}
    for name, m in prunable_layers(net):
        if quant.bits_of(m) is None:
            continue
        levels = len(torch.unique(m.weight.detach()))
        assert 2 <= levels <= 16
        assert layers[name].bits["codebooks"] == 32 * levels
        assert layers[name].bits["codes"] == m.weight.numel() * math.ceil(math.log2(levels))


def test_huffman_shrinks_the_codes():
    net = make("pruned+quantized")
    fixed, coded = size_report(net, huffman=False), size_report(net, huffman=True)
    assert coded.parts["codes"] + coded.parts["indices"] < fixed.parts["codes"] + fixed.parts["indices"]
    assert coded.fixed_bits == fixed.total_bits
    assert coded.parts["tables"] > 0 and fixed.parts["tables"] == 0


def test_table_lists_every_module_and_the_totals():
    report = size_report(make("pruned"))
    text = report.table()
    assert "stage3.2.conv2" in text and "stage3.2.bn2" in text and "CSR fp32" in text
    total = [line for line in text.splitlines() if line.startswith("total")][0].split()
    assert int(total[-1]) == report.total_bits and f"{report.file_bytes:,}" in text
    assert [int(v) for v in total[-7:-1]] == list(report.parts.values())


# --- relative indices and filler zeros --------------------------------------------------------

def test_filler_zeros_on_hand_made_gaps():
    """k = 2: gaps up to 3 fit; a gap of 4 needs one filler, a gap of 11 two (11 = 4 + 4 + 3)."""
    gaps, filler = relative_indices([0, 3, 8, 20], index_bits=2)
    assert gaps.tolist() == [0, 2, 3, 0, 3, 3, 3]
    assert filler.tolist() == [False, False, True, False, True, True, False]
    np.testing.assert_array_equal(np.cumsum(gaps + 1) - 1, [0, 3, 7, 8, 12, 16, 20])
    gaps, filler = relative_indices([3, 7], index_bits=2)  # gaps of exactly 3 and 3
    assert gaps.tolist() == [3, 3] and not filler.any()
    gaps, filler = relative_indices([], index_bits=4)
    assert gaps.size == 0 and filler.size == 0


def test_filler_zeros_in_a_layer(tmp_path):
    """fc (10 x 64 = 640 weights) with hand-placed non-zeros; k = 3 (span 8)."""
    net = random_resnet(4)
    positions = [0, 7, 8, 16, 17, 100, 639]  # gaps 0, 6, 0, 7, 0, 82, 538
    with torch.no_grad():
        w = torch.zeros(640)
        w[positions] = torch.arange(1.0, 8.0)
        net.fc.weight.copy_(w.view(10, 64))
    report = save(net, tmp_path / "m.lkdc", index_bits=3, huffman=False)
    fc = next(layer for layer in report.layers if layer.name == "fc")
    fillers = 82 // 8 + 538 // 8
    assert (fc.stored_as, fc.entries, fc.fillers) == ("CSR fp32", 7 + fillers, fillers)
    assert fc.bits["codes"] == 32 * (7 + fillers) and fc.bits["indices"] == 3 * (7 + fillers)
    assert fc.fillers == reference_fillers(w.numpy(), 3)
    assert_same_model(net, load(tmp_path / "m.lkdc"))


# --- bad files and bad arguments --------------------------------------------------------------

@pytest.fixture(scope="module")
def good_file(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("c") / "m.lkdc"
    save(make("pruned+quantized"), path)
    return path.read_bytes()


def resealed(blob: bytes) -> bytes:
    """The file with its checksum recomputed: a damaged file that the checksum does not catch."""
    return blob[:-32] + hashlib.sha256(blob[:-32]).digest()


def test_truncated_files_rejected(tmp_path, good_file):
    for cut in (1, 31, 33, len(good_file) // 2, len(good_file) - 30):
        (tmp_path / "t.lkdc").write_bytes(good_file[:cut])
        with pytest.raises(ValueError, match="truncated|not a labkit"):
            load(tmp_path / "t.lkdc")
    (tmp_path / "t.lkdc").write_bytes(good_file + b"\0")
    with pytest.raises(ValueError, match="extra bytes"):
        load(tmp_path / "t.lkdc")


@pytest.mark.parametrize("where", [0.3, 0.6, 0.999])
def test_corrupted_files_rejected(tmp_path, good_file, where):
    blob = bytearray(good_file)
    blob[int(where * (len(blob) - 1))] ^= 0x10
    (tmp_path / "c.lkdc").write_bytes(blob)
    with pytest.raises(ValueError, match="corrupted"):
        load(tmp_path / "c.lkdc")


def test_foreign_files_rejected(tmp_path, good_file):
    buffer = io.BytesIO()
    torch.save(random_resnet().state_dict(), buffer)
    for name, blob in [("pt", buffer.getvalue()), ("empty", b""), ("text", b"hello\n" * 20)]:
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(ValueError, match="not a labkit compressed model"):
            load(tmp_path / name)
    newer = bytearray(good_file)
    newer[8:10] = struct.pack("<H", compress.VERSION + 1)
    (tmp_path / "v").write_bytes(newer)
    with pytest.raises(ValueError, match="version"):
        load(tmp_path / "v")


def test_damaged_records_rejected_even_with_a_valid_checksum(tmp_path, good_file):
    """Bytes changed inside the records, checksum recomputed: structural fields (the first
    record's kind, ndim, encoding) raise ValueError; random flips anywhere either raise
    ValueError or give a ResNet-20 (a flipped float value is still a model): nothing else escapes."""
    first = 21  # after magic (8), version (2), length (8), index bits (1), record count (2)
    assert good_file[first:first + 4] == bytes([0, 0, 2, 4])  # root: no name, kind 0, 2 tensors, ndim 4
    for at, value in [(first + 1, 1), (first + 3, 5), (first + 4 + 16, 9)]:
        blob = bytearray(good_file)
        blob[at] = value
        (tmp_path / "d.lkdc").write_bytes(resealed(bytes(blob)))
        with pytest.raises(ValueError, match="not a valid labkit|not hold|ResNet-20"):
            load(tmp_path / "d.lkdc")
    rng = np.random.default_rng(0)
    for i in range(60):
        blob = bytearray(good_file)
        at = int(rng.integers(first, 400)) if i % 2 else int(rng.integers(first, len(blob) - 32))
        blob[at] ^= 1 << int(rng.integers(8))
        (tmp_path / "d.lkdc").write_bytes(resealed(bytes(blob)))
        try:
            assert isinstance(load(tmp_path / "d.lkdc"), models.ResNet)
        except ValueError:
            pass


def test_other_architectures_rejected_at_save_time(tmp_path):
    """Issue 14 #1: save used to write models that load then refused; now save refuses them and
    writes nothing."""
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    with pytest.raises(ValueError, match="ResNet-20"):
        save(net, tmp_path / "s.lkdc")
    deeper = models.ResNet((3, 3, 4))                  # a ResNet, but not the ResNet-20 load builds
    with pytest.raises(ValueError, match="ResNet-20"):
        save(deeper, tmp_path / "s.lkdc")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="does not store"):
        size_report(torch.nn.Sequential(torch.nn.LayerNorm(4)))


@pytest.mark.parametrize("huffman", [True, False])
@pytest.mark.parametrize("case", ["all-zero quantized layer", "bits=0", "all-zero float layer"])
def test_a_saved_model_always_loads(tmp_path, case, huffman):
    """Issue 14 #1: an all-zero quantized layer was written with a codebook of 0 levels, and load
    then called the file damaged ("0 levels do not fit 1-bit codes"); set_bits(n, 0) the same."""
    net = random_resnet(6)
    if case == "all-zero quantized layer":
        prune.prune_by_percentage(net, 1.0, layers=["stage3.2.conv2"])
        quant.set_bits(net, 4)
    elif case == "bits=0":
        quant.set_bits(net, 0)
    else:
        prune.prune_by_percentage(net, 1.0, layers=["fc"])
    report = save(net, tmp_path / "m.lkdc", huffman=huffman)
    assert report.file_bytes == (tmp_path / "m.lkdc").stat().st_size
    assert_same_model(net, load(tmp_path / "m.lkdc"))


def test_a_failed_save_leaves_the_previous_file(tmp_path):
    """Issue 14 #2: save wrote over the destination in place; under a file-size limit a failed
    save cut a good file short. The limit is real (RLIMIT_FSIZE in a subprocess)."""
    path = tmp_path / "m.lkdc"
    save(make("pruned+quantized"), path)
    good = path.read_bytes()
    done = save_under_size_limit(f"compress.save(models.ResNet(), {str(path)!r})", 20_000,   # dense: about 1.1 MB
                                 setup="from labkit import compress, models\n")
    assert done.returncode == 3 and "File too large" in done.stdout, done.stdout + done.stderr
    assert path.read_bytes() == good and sorted(p.name for p in tmp_path.iterdir()) == ["m.lkdc"]
    assert_same_model(make("pruned+quantized"), load(path))


def test_bad_arguments_rejected():
    net = random_resnet()
    for bad in (0, 17, 4.0, True, "4"):
        with pytest.raises(ValueError, match="index_bits must be an int in 1..16"):
            size_report(net, index_bits=bad)
    with pytest.raises(ValueError, match="huffman must be True or False"):
        size_report(net, huffman="yes")
    with pytest.raises(ValueError, match="float32"):
        size_report(random_resnet().double())


# --- the goal ------------------------------------------------------------------------------------

def test_80_percent_sparse_4_bit_resnet20_is_15x_smaller(tmp_path, data_root):
    """The pretrained ResNet-20, 80 % pruned per layer, residual stages 4-bit mask-aware: its file
    is >= 15x smaller than torch.save of the dense fp32 state dict, and loads back bit-identical."""
    net = models.resnet20(pretrained=True, root=data_root)
    dense = (tmp_path / "dense.pt")
    torch.save(net.state_dict(), dense)
    dense = dense.stat().st_size
    prune.prune_by_percentage(net, 0.8)
    torch.save(net.state_dict(), tmp_path / "pruned.pt")
    assert (tmp_path / "pruned.pt").stat().st_size > dense  # masks make the naive file bigger
    quant.set_bits(net, 4)
    report = save(net, tmp_path / "m.lkdc")
    ratio = dense / report.file_bytes
    print(f"\ndense torch.save {dense:,} bytes; compressed {report.file_bytes:,} bytes: {ratio:.1f}x")
    assert ratio >= 15
    assert_same_model(net, load(tmp_path / "m.lkdc"))


def test_every_damaged_record_error_names_the_file_and_no_non_finite_model_loads(tmp_path, good_file):
    """Issue 27: a corrupted Huffman stream (checksum resealed) raised huffman's message without the
    file; a flipped exponent bit could give a model with inf weights, silently."""
    first = 21
    rng = np.random.default_rng(1)
    path = tmp_path / "d.lkdc"
    errors = 0
    for _ in range(150):
        blob = bytearray(good_file)
        blob[int(rng.integers(first, len(blob) - 32))] ^= 1 << int(rng.integers(8))
        path.write_bytes(resealed(bytes(blob)))
        try:
            net = load(path)
        except ValueError as e:
            errors += 1
            assert str(path) in str(e), str(e)
        else:
            assert all(torch.isfinite(v).all() for v in net.state_dict().values() if v.is_floating_point())
    assert errors > 10


def test_a_non_finite_model_is_refused_at_save_time_and_nothing_is_written(tmp_path):
    """Issue 27, adversarial probe: compress.save wrote a model holding NaN or inf, which load
    then refused: what is saved loads, and a saved model is finite."""
    path = tmp_path / "m.lkc"
    save(make("pruned+quantized"), path)
    good = path.read_bytes()
    for where, value in (("fc.bias", float("inf")), ("stage1.0.bn1.running_var", float("nan"))):
        net = make("pruned")
        with torch.no_grad():
            net.state_dict()[where].view(-1)[0] = value
        with pytest.raises(ValueError, match=rf"not saving {path}: .*inf or NaN.*{where}"):
            save(net, path)
    net = make("pruned")
    with torch.no_grad():
        next(m for _, m in prunable_layers(net)).parametrizations.weight.original.view(-1)[0] = float("nan")
    with pytest.raises(ValueError, match="inf or NaN.*parametrizations.weight.original"):
        save(net, path)
    assert path.read_bytes() == good and [p.name for p in tmp_path.iterdir()] == ["m.lkc"]


def test_a_missing_file_a_folder_or_a_link_loop_is_named(tmp_path):
    """Issue 27, adversarial probe: load raised Python's own errors from read_bytes."""
    loop = tmp_path / "loop.lkc"
    loop.symlink_to(loop)
    dangling = tmp_path / "dangling.lkc"
    dangling.symlink_to(tmp_path / "gone.lkc")
    for path in (tmp_path / "none.lkc", tmp_path, loop, dangling):
        with pytest.raises(FileNotFoundError, match=f"no labkit compressed model at {path}"):
            load(path)
