"""Quantization: both formulas against an independent numpy quantizer and the symmetric one against
torch.fake_quantize_per_tensor_affine; level counts, idempotence, range; the straight-through
gradient; quantizers stacked with pruning masks (either order, through training, saving, loading);
which layers are quantized; codes that reproduce the weights; errors on bad input."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize

from labkit import checkpoints, models, prune, quant
from labkit import train as train_mod
from labkit.layers import prunable_layers
from labkit.quant import (Quantize, bits_of, bits_table, codes, encode, quantizable_layers, quantize,
                          quantized, quantizer_of, set_bits)
from labkit.train import train
from test_prune import LAYERS, SmallNet, batch, step, toy_data   # the same small model and data as pruning's tests


# --- the independent reference -------------------------------------------------------------------

def np_quantize(w, bits, symmetric=False, mask=None):
    """The course's formulas in numpy float32, over the kept entries; the others are 0."""
    w = np.asarray(w, dtype=np.float32)
    keep = np.ones(w.shape, dtype=bool) if mask is None else np.asarray(mask)
    out = np.zeros_like(w)
    if bits == 0 or not keep.any():
        return out
    v = w[keep]
    if symmetric:
        s = np.float32(np.abs(v).max() / np.float32(2 ** (bits - 1) - 1))
        out[keep] = v if s == 0 else s * np.round(v / s)
    else:
        n = np.float32(2 ** bits - 1)
        alpha, beta = np.float32(v.max() - v.min()), v.min()
        out[keep] = v if alpha == 0 else alpha * (np.round((v - beta) / alpha * n) / n) + beta
    return out


def tensors():
    """Random float32 tensors of several shapes and distributions (seeded)."""
    g = torch.Generator().manual_seed(0)
    yield torch.randn(1000, generator=g)
    yield torch.rand(16, 8, 3, 3, generator=g) * 3 - 0.5          # all of one sign mostly
    yield torch.randn(64, 32, generator=g) ** 3                      # heavy tails, outliers
    yield torch.randn(7, generator=g) * 1e-3


def random_mask(w, p=0.7, seed=1):
    return torch.rand(w.shape, generator=torch.Generator().manual_seed(seed)) > p


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("masked", [False, True])
def test_asymmetric_matches_numpy(bits, masked):
    for w in tensors():
        mask = random_mask(w) if masked else None
        expected = np_quantize(w.numpy(), bits, mask=None if mask is None else mask.numpy())
        np.testing.assert_array_equal(quantize(w, bits, mask=mask).numpy(), expected)


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("masked", [False, True])
def test_symmetric_matches_numpy(bits, masked):
    for w in tensors():
        mask = random_mask(w) if masked else None
        expected = np_quantize(w.numpy(), bits, symmetric=True, mask=None if mask is None else mask.numpy())
        np.testing.assert_array_equal(quantize(w, bits, symmetric=True, mask=mask).numpy(), expected)


def test_rounding_is_half_to_even_as_numpy():
    w = torch.tensor([0.0, 0.5, 1.5, 2.5, 3.0])   # 2 bits: alpha = 3, n = 3, so w_s n = w exactly
    assert quantize(w, 2).tolist() == [0.0, 0.0, 2.0, 2.0, 3.0]
    np.testing.assert_array_equal(quantize(w, 2).numpy(), np_quantize(w.numpy(), 2))
    v = torch.tensor([-3.0, -2.5, -0.5, 0.5, 1.5, 3.0])   # symmetric 3 bits: s = 1
    assert quantize(v, 3, symmetric=True).tolist() == [-3.0, -2.0, -0.0, 0.0, 2.0, 3.0]


@pytest.mark.parametrize("bits", range(2, 9))
def test_symmetric_matches_torch_fake_quantize(bits):
    m = 2 ** (bits - 1) - 1
    for w in tensors():
        s = w.abs().max() / m
        expected = torch.fake_quantize_per_tensor_affine(w, s.item(), 0, -m, m)
        assert torch.equal(quantize(w, bits, symmetric=True), expected)


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("bits", [1, 2, 3, 4, 6, 8])
def test_level_count_idempotence_and_range(bits, symmetric):
    if symmetric and bits == 1:
        return
    levels = 2 ** bits - (1 if symmetric else 0)
    for w in tensors():
        for mask in (None, random_mask(w)):
            w_q = quantize(w, bits, symmetric=symmetric, mask=mask)
            kept = w if mask is None else w[mask]
            kept_q = w_q if mask is None else w_q[mask]
            assert kept_q.unique().numel() <= levels
            assert w_q.unique().numel() <= levels + (mask is not None)   # + the pruned zeros
            if mask is not None:
                assert (w_q[~mask] == 0).all()
            # idempotent: quantizing again picks the same levels (to float rounding of the scale)
            again = quantize(w_q, bits, symmetric=symmetric, mask=mask)
            torch.testing.assert_close(again, w_q, rtol=0, atol=1e-6 * kept.abs().max().item())
            c1, _ = encode(w_q, bits, symmetric=symmetric, mask=mask)
            c0, _ = encode(w, bits, symmetric=symmetric, mask=mask)
            assert torch.equal(c1, c0)
            # range kept: the extremes are levels
            top = kept.abs().max() if symmetric else kept.max()
            assert (kept_q.abs().max() if symmetric else kept_q.max()).item() == pytest.approx(top.item(), rel=1e-6)
            if not symmetric:
                assert kept_q.min() == kept.min()


def test_more_bits_are_closer():
    w = next(tensors())
    errors = [(quantize(w, b) - w).abs().max().item() for b in range(1, 9)]
    assert all(e1 > e2 for e1, e2 in zip(errors, errors[1:]))
    alpha = (w.max() - w.min()).item()
    assert all(e <= alpha / (2 ** b - 1) / 2 * (1 + 1e-5) for b, e in zip(range(1, 9), errors))  # half a step


@pytest.mark.parametrize("symmetric", [False, True])
def test_special_cases(symmetric):
    w = torch.randn(50)
    assert quantize(w, None) is w
    assert torch.equal(quantize(w, 0, symmetric=symmetric), torch.zeros(50))
    for value in (0.0, 0.3, -2.5):
        const = torch.full((3, 4), value)
        # alpha = 0: no NaN; asymmetric gives the value back exactly, symmetric to within round-off of s * m
        check = torch.equal if not symmetric else (lambda x, y: torch.allclose(x, y, rtol=1e-6, atol=0))
        assert check(quantize(const, 4, symmetric=symmetric), const)
        assert check(quantize(const, 4, symmetric=symmetric, mask=const != 0), const)
    nothing_kept = torch.zeros(50, dtype=torch.bool)
    assert torch.equal(quantize(w, 4, symmetric=symmetric, mask=nothing_kept), torch.zeros(50))


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_gradient_passes_straight_through(symmetric, masked):
    w = torch.randn(6, 5, requires_grad=True)
    mask = random_mask(w, 0.5) if masked else None
    upstream = torch.randn(6, 5)
    quantize(w, 3, symmetric=symmetric, mask=mask).backward(upstream)
    assert torch.equal(w.grad, upstream)


@pytest.mark.parametrize("bits", [-1, 17, 2.0, True, "4", 4.5])
def test_bad_bits_are_rejected(bits):
    w = torch.randn(5)
    with pytest.raises(ValueError, match="bits must be None .* int in 0..16"):
        quantize(w, bits)
    net = SmallNet()
    before = copy.deepcopy(net.state_dict())
    with pytest.raises(ValueError, match="bits must be None"):
        set_bits(net, bits, layers=["conv1", "conv2"])
    assert not any(parametrize.is_parametrized(m) for m in net.modules())
    assert state_equal(net.state_dict(), before)


def test_other_bad_input_is_rejected():
    w = torch.randn(5)
    with pytest.raises(ValueError, match="bits=1 with symmetric=True"):
        quantize(w, 1, symmetric=True)
    with pytest.raises(ValueError, match="mask must be None or a bool tensor of the weight's shape"):
        quantize(w, 4, mask=torch.ones(5))
    with pytest.raises(ValueError, match="mask must be"):
        quantize(w, 4, mask=torch.ones(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="symmetric must be True or False"):
        quantize(w, 4, symmetric=1)
    with pytest.raises(ValueError, match="mask_aware must be True or False"):
        set_bits(SmallNet(), 4, mask_aware="yes", layers=["conv1"])
    with pytest.raises(ValueError, match="layer 'conv9' is not a module"):
        set_bits(SmallNet(), 4, layers=["conv9"])
    with pytest.raises(ValueError, match="no residual-stage convolution"):
        set_bits(SmallNet(), 4)
    with pytest.raises(ValueError, match="has no quantizer"):
        codes(SmallNet().conv1)


# --- in a model --------------------------------------------------------------------------------

def state_equal(a, b):
    """Equal state dicts, quantizers' extra state (dicts, a schedule's mask tensor among them) included."""
    def same(x, y):
        if isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
            return isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and torch.equal(x, y)
        if isinstance(x, dict) and isinstance(y, dict):
            return x.keys() == y.keys() and all(same(x[k], y[k]) for k in x)
        return x == y
    return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)


def test_residual_stages_quantized_first_and_last_layers_not():
    net = quant.quantized(models.resnet20(), 4)
    names = [name for name, _ in prunable_layers(net)]
    quantized = [name for name, _ in quantizable_layers(net)]
    assert len(quantized) == 18 and names == ["conv1"] + quantized + ["fc"]
    assert all(bits_of(getattr_path(net, n)) == 4 for n in quantized)
    assert bits_of(net.conv1) is None and bits_of(net.fc) is None
    for name in quantized:   # the effective weight is the quantized float weight
        layer = getattr_path(net, name)
        original = layer.parametrizations.weight.original
        assert torch.equal(layer.weight, quantize(original, 4))


def getattr_path(net, name):
    return dict(net.named_modules())[name]


def test_set_bits_changes_bits_in_place_and_none_restores_the_float_model():
    net = SmallNet()
    float_net = copy.deepcopy(net)
    params = list(net.parameters())
    X, _ = batch()
    set_bits(net, 2, layers=LAYERS)
    assert not torch.equal(net(X), float_net(X))
    set_bits(net, 5, symmetric=True, mask_aware=False, layers=["conv1"])
    q = quantizer_of(net.conv1)
    assert (q.bits, q.symmetric, q.mask_aware) == (5, True, False) and bits_of(net.conv2) == 2
    assert len(net.conv1.parametrizations.weight) == 1
    set_bits(net, None, layers=LAYERS)
    assert not any(parametrize.is_parametrized(m) for m in net.modules())
    assert {id(p) for p in net.parameters()} == {id(p) for p in params}   # the same Parameters throughout
    assert torch.equal(net(X), float_net(X))
    assert state_equal(net.state_dict(), float_net.state_dict())


def test_set_bits_none_keeps_the_mask():
    net = SmallNet()
    prune.prune_by_percentage(net, 0.5)
    pruned = copy.deepcopy(net)
    set_bits(net, 3, layers=LAYERS)
    set_bits(net, None, layers=LAYERS)
    assert all(quantizer_of(getattr(net, n)) is None for n in LAYERS)
    assert state_equal(net.state_dict(), pruned.state_dict())


@pytest.mark.parametrize("order", ["prune, then quantize", "quantize, then prune"])
@pytest.mark.parametrize("symmetric", [False, True])
def test_mask_aware_quantizer_keeps_pruned_weights_zero_in_either_order(order, symmetric):
    reference = SmallNet()
    prune.prune_by_percentage(reference, 0.8)
    set_bits(reference, 3, symmetric=symmetric, layers=LAYERS)
    net = SmallNet()
    if order == "prune, then quantize":
        prune.prune_by_percentage(net, 0.8)
        set_bits(net, 3, symmetric=symmetric, layers=LAYERS)
    else:
        set_bits(net, 3, symmetric=symmetric, layers=LAYERS)
        prune.prune_by_percentage(net, 0.8)
    for name in LAYERS:
        layer = getattr(net, name)
        kinds = [type(p).__name__ for p in layer.parametrizations.weight]
        assert kinds == ["Mask", "Quantize"]                     # the mask first, either way
        keep = prune.masks(net)[name]
        W = layer.weight
        assert (W[~keep] == 0).all()
        original = layer.parametrizations.weight.original
        expected = np_quantize(original.detach().numpy(), 3, symmetric, keep.numpy())   # min/max over kept
        np.testing.assert_array_equal(W.detach().numpy(), expected)
    assert state_equal(net.state_dict(), reference.state_dict())


def test_sparsity_unchanged_by_set_bits_and_the_naive_quantizer_unprunes():
    net = models.resnet20()
    prune.prune_by_percentage(net, 0.8)
    before = prune.sparsity(net)
    set_bits(net, 4)
    assert prune.sparsity(net).zeros == before.zeros
    set_bits(net, 4, mask_aware=False)   # the trap: min/max over the zeros too, and Q(0) != 0
    naive = prune.sparsity(net, layers=quantizable_layers(net))
    assert naive.total < 0.05
    set_bits(net, 4, symmetric=True, mask_aware=False)   # zero is a level: nothing is un-pruned
    for name, module in quantizable_layers(net):
        assert (module.weight[~prune.masks(net)[name]] == 0).all()


@pytest.mark.parametrize("symmetric", [False, True])
def test_masked_zeros_stay_zero_through_qat_steps(symmetric):
    net = SmallNet()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.875, weight_decay=1e-4)
    prune.prune_by_percentage(net, 0.6, optimizer=optimizer)
    set_bits(net, 3, symmetric=symmetric, layers=LAYERS)
    keep = {n: m.clone() for n, m in prune.masks(net).items()}
    start = {n: getattr(net, n).parametrizations.weight.original.detach().clone() for n in LAYERS}
    for k in range(5):
        step(net, optimizer, seed=k)
    for name in LAYERS:
        layer = getattr(net, name)
        original = layer.parametrizations.weight.original
        assert (layer.weight[~keep[name]] == 0).all() and (original[~keep[name]] == 0).all()
        assert not torch.equal(original[keep[name]], start[name][keep[name]])   # the kept ones trained
        assert layer.weight[keep[name]].unique().numel() <= 2 ** 3


def test_optimizer_built_before_set_bits_trains_the_float_weights():
    net = SmallNet()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    set_bits(net, 2, layers=LAYERS)
    original = net.conv2.parametrizations.weight.original
    start = original.detach().clone()
    step(net, optimizer)
    assert original.grad is not None and not torch.equal(original, start)
    assert net.conv2.weight.unique().numel() <= 4


def test_training_under_bf16_autocast():
    net = SmallNet()
    set_bits(net, 4, layers=LAYERS)
    X, y = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = F.cross_entropy(net(X), y)
    loss.backward()
    assert net.conv1.parametrizations.weight.original.grad.abs().sum() > 0


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("mask_aware", [False, True])
def test_codes_reproduce_the_weight_bit_for_bit(symmetric, mask_aware):
    net = models.resnet20()
    prune.global_prune_by_percentage(net, 0.7)
    set_bits(net, 3, symmetric=symmetric, mask_aware=mask_aware)
    for name, layer in quantizable_layers(net):
        c, codebook = codes(layer)
        W = layer.weight.detach()
        assert c.dtype == torch.int64 and c.shape == W.shape and codebook.dtype == torch.float32
        assert codebook.numel() == (7 if symmetric else 8) and 0 <= c.min() and c.max() < codebook.numel()
        assert torch.equal(torch.where(W != 0, codebook[c], 0.0), W)
        if symmetric or not mask_aware:
            assert torch.equal(codebook[c], W)
        if mask_aware:
            assert (W[~prune.masks(net)[name]] == 0).all()


def test_save_load_and_make_permanent_of_a_pruned_quantized_model(tmp_path):
    net = models.resnet20()
    set_bits(net, 4)
    prune.global_prune_by_percentage(net, 0.8)
    set_bits(net, 2, symmetric=True, layers=["fc"])   # a quantized layer after the default ones
    set_bits(net, 6, layers=["conv1"])
    path = tmp_path / "pq.pt"
    torch.save(net.state_dict(), path)
    loaded = checkpoints.load(path, models.resnet20())
    X = torch.rand(4, 3, 32, 32)
    net.eval(), loaded.eval()
    assert torch.equal(loaded(X), net(X))
    assert state_equal(loaded.state_dict(), net.state_dict())
    assert [bits_of(m) for _, m in prunable_layers(loaded)] == [6] + [4] * 18 + [2]
    assert quantizer_of(loaded.fc).symmetric
    effective = {name: m.weight.detach().clone() for name, m in prunable_layers(net)}
    prune.make_permanent(net)
    assert not any(parametrize.is_parametrized(m) for m in net.modules())
    assert all(torch.equal(m.weight, effective[name]) for name, m in prunable_layers(net))


def test_load_of_a_quantized_model_without_masks():
    net = quantized(models.resnet20(), 3)
    loaded = checkpoints.load(net.state_dict(), models.resnet20())
    assert state_equal(loaded.state_dict(), net.state_dict())
    with pytest.raises(ValueError, match="already pruned or quantized"):
        models.load_weights(loaded, net.state_dict())


def test_quantization_aware_training_during_global_iterative_pruning():
    """Lab 3 (e): the schedule of Lab 2 (e) on a quantized model, in the training loop."""
    net = SmallNet()
    set_bits(net, 4, layers=LAYERS)
    schedule = prune.IterativePruning(target=0.6, steps=3, scope="global")
    history = train(net, toy_data(), epochs=5, batch_size=16, lr=0.05, progress=False, callbacks=[schedule])
    assert history.column("eligible") == [False, False, True, True, True]
    s = prune.sparsity(net)
    assert abs(s.total - 0.6) < 0.01 and history.records[-1]["sparsity"] == s.total
    for name in LAYERS:
        layer = getattr(net, name)
        assert [type(p).__name__ for p in layer.parametrizations.weight] == ["Mask", "Quantize"]
        keep = prune.masks(net)[name]
        assert (layer.weight[~keep] == 0).all()
        assert layer.weight[keep].unique().numel() <= 16


def test_bits_table_lists_bits_levels_and_sparsity():
    net = quantized(models.resnet20(), 2)
    text = bits_table(net)
    lines = text.splitlines()
    assert len(lines) == 2 + 20
    assert lines[2].split()[:3] == ["conv1", "432", "float"]
    assert lines[3].split()[:5] == ["stage1.0.conv1", "2304", "2", "asymmetric", "4/4"]


# --- a quantized model without undoing anything -----------------------------------------------

def test_quantized_is_a_copy_and_the_original_stays_float():
    net = models.resnet20()
    before = copy.deepcopy(net.state_dict())
    q = quantized(net, 3, symmetric=True, layers="conv1")
    assert q is not net and bits_of(q.conv1) == 3 and quantizer_of(q.conv1).symmetric
    assert [bits_of(m) for _, m in prunable_layers(net)] == [None] * 20
    assert state_equal(net.state_dict(), before)
    assert torch.equal(q.conv1.weight, quantize(net.conv1.weight, 3, symmetric=True))
    with pytest.raises(ValueError, match="bits must be None"):
        quantized(net, 99)
    with pytest.raises(ValueError, match="layer 'conv9' is not a module"):
        quantized(net, 4, layers=["conv9"])


def test_quantized_widths_gives_each_layer_its_own_width_on_a_copy():
    """Lab 3 (g)'s mixed-precision model: each named layer's weight is the quantizer of its own
    float weight at its own width (mask-aware on a pruned model, naive when asked); the rest and
    the original are untouched; bad names or widths are refused before anything is copied."""
    net = SmallNet()
    prune.prune_by_percentage(net, 0.5)
    before = copy.deepcopy(net.state_dict())
    q = quant.quantized_widths(net, {"conv1": 2, "fc": 5})
    assert q is not net and [bits_of(getattr(q, n)) for n in LAYERS] == [2, None, 5]
    assert state_equal(net.state_dict(), before) and [bits_of(getattr(net, n)) for n in LAYERS] == [None] * 3
    for name, b in (("conv1", 2), ("fc", 5)):
        w = getattr(net, name).weight.detach()              # the masked float weight
        assert torch.equal(getattr(q, name).weight, quantize(w, b, mask=w != 0))
        assert (getattr(q, name).weight[w == 0] == 0).all()  # pruned weights stay pruned
    assert torch.equal(q.conv2.weight, net.conv2.weight)
    naive = quant.quantized_widths(net, {"conv1": 3}, mask_aware=False)
    assert torch.equal(naive.conv1.weight, quantize(net.conv1.weight.detach(), 3))
    assert not quantizer_of(naive.conv1).mask_aware
    float_conv2 = net.conv2.weight.detach().clone()                     # masked, float
    set_bits(net, 4, symmetric=True, layers=["conv2", "fc"])          # a model with quantizers already
    again = quant.quantized_widths(net, {"conv2": None, "conv1": 3})
    assert [bits_of(getattr(again, n)) for n in LAYERS] == [3, None, 4]   # None: float; fc not named: kept
    assert quantizer_of(again.fc).symmetric and bits_of(net.conv2) == 4
    assert torch.equal(again.conv2.weight, float_conv2) and not torch.equal(net.conv2.weight, float_conv2)
    set_bits(net, None, layers=["conv2", "fc"])
    before = copy.deepcopy(net.state_dict())
    for widths, match in (({"conv9": 4}, "layer 'conv9' is not a module"), ({"conv1": 17}, r"widths\['conv1'\]"),
                          ({}, "non-empty mapping"), ([("conv1", 4)], "non-empty mapping")):
        with pytest.raises(ValueError, match=match):
            quant.quantized_widths(net, widths)
    assert state_equal(net.state_dict(), before)


def test_bits_context_restores_the_previous_quantizers():
    net = SmallNet()
    prune.prune_by_percentage(net, 0.5)
    set_bits(net, 5, symmetric=True, layers=["conv2"])
    before = copy.deepcopy(net.state_dict())
    X, _ = batch()
    y = net(X)
    with quant.bits(net, 2, layers=LAYERS) as inside:
        assert inside is net and [bits_of(getattr(net, n)) for n in LAYERS] == [2, 2, 2]
        assert not quantizer_of(net.conv2).symmetric
        assert not torch.equal(net(X), y)
    assert [bits_of(getattr(net, n)) for n in LAYERS] == [None, 5, None]
    assert quantizer_of(net.conv2).symmetric
    assert state_equal(net.state_dict(), before) and torch.equal(net(X), y)
    with pytest.raises(RuntimeError, match="inside"):    # restored when the block raises too
        with quant.bits(net, None, layers=LAYERS):
            assert bits_of(net.conv2) is None
            raise RuntimeError("inside")
    assert state_equal(net.state_dict(), before)


def test_one_layer_name_as_a_string_is_that_layer():
    """Issue 14 #8: layers='conv1' was read letter by letter ("layer 'c' is not a module")."""
    net = SmallNet()
    set_bits(net, 4, layers="conv1")
    assert [bits_of(getattr(net, n)) for n in LAYERS] == [4, None, None]


def test_a_deep_copy_is_independent_of_its_original():
    """Issue 14 #5: set_bits(copy, None) removed the last parametrization of the copy, and with
    it the weight property of the class the original shares (AttributeError on net(x))."""
    net = SmallNet()
    set_bits(net, 3, layers=LAYERS)
    X, _ = batch()
    y = net(X)
    c = copy.deepcopy(net)
    set_bits(c, None, layers=LAYERS)
    assert torch.equal(net(X), y) and bits_of(net.conv1) == 3
    c2 = copy.deepcopy(net)
    prune.make_permanent(prune.prune_by_percentage(c2, 0.5) and c2)
    assert torch.equal(net(X), y)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("bits", [4, 9, 12, 16])
def test_half_precision_weights_are_quantized_on_a_float32_grid(dtype, symmetric, bits):
    """Issue 14 #6: the grid was computed in bf16/fp16 (IndexError at 9 bits, bf16 12-bit
    symmetric off by 7.7). Now: the float32 quantizer's result, rounded once to the dtype."""
    w = torch.randn(4096, generator=torch.Generator().manual_seed(bits)).to(dtype)
    w_q = quantize(w, bits, symmetric=symmetric)
    assert w_q.dtype == dtype
    assert torch.equal(w_q, quantize(w.float(), bits, symmetric=symmetric).to(dtype))
    c, codebook = encode(w, bits, symmetric=symmetric)
    assert codebook.dtype == torch.float32 and 0 <= c.min() and c.max() < codebook.numel()
    step_size = (w.float().abs().max() / (2 ** (bits - 1) - 1) if symmetric
                 else (w.float().max() - w.float().min()) / (2 ** bits - 1))
    ulp = 2.0 ** -7 if dtype == torch.bfloat16 else 2.0 ** -10         # relative rounding to dtype
    bound = step_size / 2 + ulp * w.float().abs().max()
    assert (w_q.float() - w.float()).abs().max() <= bound * (1 + 1e-6)
    mask = w != 0
    assert torch.equal(quantize(w, bits, symmetric=symmetric, mask=mask),
                       quantize(w.float(), bits, symmetric=symmetric, mask=mask).to(dtype))


def test_a_half_precision_layer_quantizes_like_its_float32_copy():
    net = SmallNet()
    set_bits(net, 9, layers=LAYERS)
    half = copy.deepcopy(net).to(torch.bfloat16)
    for name in LAYERS:
        layer = getattr(half, name)
        stored = layer.parametrizations.weight.original.detach()
        assert stored.dtype == torch.bfloat16
        expected = quantize(stored.float(), 9, mask=stored != 0).to(torch.bfloat16)
        assert layer.weight.dtype == torch.bfloat16 and torch.equal(layer.weight, expected)


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
def test_non_finite_input_is_refused_clearly(bad):
    """Issue 14 #6: one inf element turned the whole quantized tensor NaN, silently."""
    w = torch.randn(100)
    w[17] = bad
    for call in (lambda: quantize(w, 4), lambda: quantize(w, 4, symmetric=True),
                 lambda: encode(w, 4), lambda: quantize(w, 4, mask=torch.ones(100, dtype=torch.bool))):
        with pytest.raises(ValueError, match="NaN or infinite entries"):
            call()


def test_an_empty_tensor_is_refused_clearly():
    for call in (lambda: quantize(torch.empty(0), 4), lambda: encode(torch.empty(3, 0), 4, symmetric=True)):
        with pytest.raises(ValueError, match=r"w is empty \(shape"):
            call()
    with pytest.raises(ValueError, match="floating-point tensor"):
        quantize(torch.arange(5), 4)


def test_quantize_module_reports_its_settings():
    q = Quantize(3, symmetric=True)
    assert q.get_extra_state() == {"bits": 3, "symmetric": True, "mask_aware": True}
    with pytest.raises(ValueError, match="bits must be None"):
        q.set_extra_state({"bits": 99, "symmetric": False, "mask_aware": True})
    assert q.bits == 3   # unchanged by the rejected state


# --- the lab's plots -----------------------------------------------------------------------------

def test_plot_quantized_weights_draws_each_value_count_and_marks_every_level():
    import matplotlib.pyplot as plt
    from labkit import plots

    w = torch.randn(2000, generator=torch.Generator().manual_seed(0))
    w[:1500] = 0.0                                        # a pruned tensor
    keep = w != 0
    panels = {"aware": (quantize(w, 3, mask=keep), encode(w, 3, mask=keep)[1]),
              "naive": (quantize(w, 3), encode(w, 3)[1])}
    fig = plots.plot_quantized_weights(w, panels, log=True)
    try:
        assert len(fig.axes) == 3 and fig.axes[1].get_yscale() == "log"
        for ax, (w_q, codebook) in zip(fig.axes[1:], panels.values()):
            values, counts = np.unique(w_q.numpy(), return_counts=True)
            segments = ax.collections[-1].get_segments()     # the stems: one per distinct value
            np.testing.assert_allclose(sorted(s[0][0] for s in segments), values)
            np.testing.assert_array_equal([s[1][1] for s in sorted(segments, key=lambda s: s[0][0])], counts)
            marked = np.concatenate([ln.get_xdata() for ln in ax.lines])   # every level, used or not
            np.testing.assert_allclose(np.sort(marked), np.sort(codebook.numpy()))
            used = np.isin(codebook.numpy(), values).sum()
            assert f"{used} of {codebook.numel()} levels used" in ax.get_title()
        with pytest.raises(ValueError, match="pair"):
            plots.plot_quantized_weights(w, {"x": quantize(w, 3)})
    finally:
        plt.close("all")


def test_plot_accuracy_vs_bits_draws_the_given_points():
    import matplotlib.pyplot as plt
    from labkit import plots

    curves = {"PTQ": {6: 0.91, 2: 0.1, 4: 0.88, 5: 0.9}, "QAT": {4: 0.9, 3: 0.85}}
    fig = plots.plot_accuracy_vs_bits(curves, dense=0.92)
    try:
        ax = fig.axes[0]
        # the given points in increasing bits; a NaN breaks the line where a width was not measured
        expected = {"PTQ": ([2, np.nan, 4, 5, 6], [10.0, np.nan, 88.0, 90.0, 91.0]), "QAT": ([3, 4], [85.0, 90.0])}
        for line, (x, y) in zip(ax.lines, expected.values()):
            np.testing.assert_array_equal(line.get_xdata(), x)
            np.testing.assert_allclose(line.get_ydata(), y)
        assert ax.lines[-1].get_ydata()[0] == pytest.approx(92.0)
        with pytest.raises(ValueError, match="curves must be"):
            plots.plot_accuracy_vs_bits({"PTQ": {}})
    finally:
        plt.close("all")


# --- Lab 3 (e): which weights are exactly zero (the three quantizer variants) -----------------------

def ao_qparams(w, bits, mask=None):
    """scale and zero point as torch.ao's MinMaxObserver computes them (the range holds 0)."""
    v = w if mask is None else w[mask]
    lo, hi = min(v.min().item(), 0.0), max(v.max().item(), 0.0)
    scale = (torch.tensor(hi, dtype=torch.float32) - torch.tensor(lo, dtype=torch.float32)) / (2 ** bits - 1)
    zero_point = int(torch.clamp(-torch.round(torch.tensor(lo, dtype=torch.float32) / scale), 0, 2 ** bits - 1))
    return scale.item(), zero_point


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 6, 8, 12, 16])
@pytest.mark.parametrize("masked", [False, True])
def test_zero_point_matches_torch_fake_quantize(bits, masked):
    n = 2 ** bits - 1
    for w in [*tensors(), torch.rand(300) + 0.5, -torch.rand(300)]:     # one sign only: z clamped to 0 or n
        mask = random_mask(w) if masked else None
        scale, z = ao_qparams(w, bits, mask)
        expected = torch.fake_quantize_per_tensor_affine(w, scale, z, 0, n)
        if mask is not None:
            expected = torch.where(mask, expected, 0.0)
        assert torch.equal(quantize(w, bits, zero_point=True, mask=mask), expected)
        codes_, codebook = encode(w, bits, zero_point=True, mask=mask)
        assert codebook.numel() == n + 1 and codebook[z] == 0 and torch.equal(codebook[codes_], expected)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_zero_point_matches_torch_ao_fake_quantize_module(bits):
    from torch.ao.quantization import FakeQuantize, MinMaxObserver

    for w in tensors():
        fq = FakeQuantize(observer=MinMaxObserver, quant_min=0, quant_max=2 ** bits - 1, dtype=torch.quint8,
                          qscheme=torch.per_tensor_affine)
        assert torch.equal(quantize(w, bits, zero_point=True), fq(w))


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
def test_zero_point_grid_has_zero_and_rounds_small_weights_to_it(bits):
    for w in tensors():
        scale, z = ao_qparams(w, bits)
        w_q = quantize(w, bits, zero_point=True)
        assert (w_q[w.abs() < scale / 2] == 0).all()
        assert (w_q[w.abs() > scale / 2 * (1 + 1e-6)] != 0).all() or bits == 1
        assert torch.equal(quantize(torch.where(w.abs() < 0.1, 0.0, w), bits, zero_point=True)[w.abs() < 0.1],
                           torch.zeros(int((w.abs() < 0.1).sum())))   # exact zeros stay zero without a mask
    assert torch.equal(quantize(torch.zeros(5), 4, zero_point=True), torch.zeros(5))   # no NaN
    w = torch.randn(6, 5, requires_grad=True)
    upstream = torch.randn(6, 5)
    quantize(w, 3, zero_point=True).backward(upstream)
    assert torch.equal(w.grad, upstream)                                     # straight through
    with pytest.raises(ValueError, match="exclude each other"):
        quantize(w, 3, symmetric=True, zero_point=True)


class Watch(train_mod.Callback):
    """After the schedule's records: the quantized layers' effective and input weights, per epoch."""

    def __init__(self, schedule):
        self.schedule, self.epochs = schedule, []

    def on_epoch_end(self, epoch, net, record):
        layers = {}
        for name in LAYERS:
            layer = getattr(net, name)
            plist = layer.parametrizations.weight
            W_in = plist.original.detach()
            for p in plist:
                if isinstance(p, Quantize):
                    break
                W_in = p(W_in)
            layers[name] = (layer.weight.detach().clone(), W_in.clone(), codes(layer)[1],
                            self.schedule.keep[name].clone())
        self.epochs.append((dict(record), layers))


def regrowth_run(zero):
    """SmallNet, 4 bits with the given zero option, global iterative pruning 0.6 in 3 steps, 5 epochs:
    the pruned weights regrow in float in epochs 1 and 2 (hold=False)."""
    net = SmallNet()
    set_bits(net, 4, zero=zero, layers=LAYERS)
    schedule = prune.IterativePruning(target=0.6, steps=3, scope="global")
    watch = Watch(schedule)
    train(net, toy_data(), epochs=5, batch_size=16, lr=0.05, augment=False, progress=False,
          callbacks=[schedule, watch])
    return net, watch.epochs


def test_course_quantizer_lets_regrown_weights_leave_zero():
    """zero="float" (the course's): between pruning steps the exact zeros fall below the scheduled
    sparsity (regrown weights are quantized to a level, and the max-min grid has no 0)."""
    _, epochs = regrowth_run("float")
    for record, layers in epochs[:2]:                       # before the last step: regrowth
        assert record["sparsity"] < record["sparsity_start"]
        for W, W_in, _, keep in layers.values():
            assert torch.equal(W == 0, W_in == 0)           # the zero set is the float weight's zeros
    for record, layers in epochs[2:]:                       # the mask holds from the last step on
        assert record["sparsity"] == record["sparsity_start"]


def test_schedule_mask_quantizer_keeps_the_scheduled_sparsity_exactly():
    """zero="schedule": the zeros of the quantized weight are exactly the positions the schedule's
    last step pruned, also while the float weights regrow there."""
    net, epochs = regrowth_run("schedule")
    for record, layers in epochs:
        assert record["sparsity"] == record["sparsity_start"]
        for W, W_in, _, keep in layers.values():
            assert torch.equal(W == 0, ~keep)
    regrown = sum(int(((W_in != 0) & ~keep).sum()) for _, W_in, _, keep in epochs[0][1].values())
    assert regrown > 0                                      # in float they did regrow
    assert all(torch.equal(quantizer_of(getattr(net, n)).keep, prune.masks(net)[n]) for n in LAYERS)


def test_zero_point_quantizer_rounds_every_small_weight_to_zero():
    """zero="zero_point": every weight with |w| < scale / 2 is exactly 0, regrown or not."""
    _, epochs = regrowth_run("zero_point")
    small = 0
    for record, layers in epochs:
        for W, W_in, codebook, _ in layers.values():
            scale = (codebook[1] - codebook[0]).item()
            assert (W[W_in.abs() < scale / 2] == 0).all()
            assert (W[W_in == 0] == 0).all()
            small += int(((W_in != 0) & (W_in.abs() < scale / 2)).sum())
    assert small > 0                                        # non-zero float weights rounded to 0 were seen


def test_schedule_quantizer_before_a_mask_acts_as_the_course_quantizer_and_straight_through():
    net = SmallNet()
    prune.prune_by_percentage(net, 0.5, hold=False)
    a, b = quantized(net, 3, layers=LAYERS), quantized(net, 3, zero="schedule", layers=LAYERS)
    assert all(torch.equal(getattr(a, n).weight, getattr(b, n).weight) for n in LAYERS)
    layer = b.conv2
    q = quantizer_of(layer)
    keep = torch.rand(layer.weight.shape, generator=torch.Generator().manual_seed(3)) > 0.5
    from labkit.layers import hand_schedule_mask
    assert hand_schedule_mask(layer, keep) == 1 and torch.equal(q.keep, keep)
    assert hand_schedule_mask(a.conv2, keep) == 1 and quantizer_of(a.conv2).keep is None   # "float" ignores it
    assert torch.equal(layer.weight == 0, ~keep)
    upstream = torch.randn(layer.weight.shape)
    layer.weight.backward(upstream)
    assert torch.equal(layer.parametrizations.weight.original.grad, upstream)   # also where ~keep
    set_bits(b, 3, layers=["conv2"])                          # back to "float": the mask is dropped
    assert q.zero == "float" and q.keep is None


@pytest.mark.parametrize("zero", ["float", "schedule", "zero_point"])
def test_each_variant_is_saved_and_loaded(tmp_path, zero):
    net, _ = regrowth_run(zero)
    path = checkpoints.save(net, tmp_path / f"{zero}.pt")
    loaded = checkpoints.load(path, SmallNet(seed=5))
    assert state_equal(loaded.state_dict(), net.state_dict())
    for name in LAYERS:
        a, b = quantizer_of(getattr(net, name)), quantizer_of(getattr(loaded, name))
        assert (b.bits, b.symmetric, b.mask_aware, b.zero) == (a.bits, a.symmetric, a.mask_aware, zero)
        assert (b.keep is None) == (zero != "schedule") and (b.keep is None or torch.equal(b.keep, a.keep))
        assert torch.equal(getattr(loaded, name).weight, getattr(net, name).weight)
    extra = net.state_dict()["conv1.parametrizations.weight.1._extra_state"]
    assert sorted(extra) == {"float": ["bits", "mask_aware", "symmetric"],
                             "schedule": ["bits", "keep", "mask_aware", "symmetric", "zero"],
                             "zero_point": ["bits", "mask_aware", "symmetric", "zero"]}[zero]


def test_bad_variants_are_refused_before_anything_changes():
    net = SmallNet()
    for kwargs, message in (({"zero": "exact"}, "zero must be one of"),
                            ({"zero": "zero_point", "symmetric": True}, "symmetric grid"),
                            ({"zero": "schedule", "mask_aware": False}, "naive")):
        with pytest.raises(ValueError, match=message):
            set_bits(net, 4, layers=LAYERS, **kwargs)
        with pytest.raises(ValueError, match=message):
            quantized(net, 4, layers=LAYERS, **kwargs)
    assert all(bits_of(getattr(net, n)) is None for n in LAYERS)
    q = Quantize(4, zero="schedule")
    with pytest.raises(ValueError, match="bool tensor"):
        q.set_extra_state({"bits": 4, "symmetric": False, "mask_aware": True, "zero": "schedule", "keep": 3})


def test_bits_table_names_the_variant():
    net = SmallNet()
    set_bits(net, 4, zero="schedule", layers=["conv1"])
    set_bits(net, 4, zero="zero_point", layers=["conv2"])
    set_bits(net, 3, symmetric=True, layers=["fc"])
    text = bits_table(net)
    assert "asymmetric, schedule mask (none yet)" in text and "asymmetric, zero point" in text
    prune.IterativePruning(0.5, 2).on_epoch_begin(0, net, None)
    assert "asymmetric, schedule mask " in bits_table(net) and "(none yet)" not in bits_table(net)
    assert "zero='schedule', schedule mask kept=" in repr(quantizer_of(net.conv1))


def test_bits_context_restores_a_schedule_quantizer():
    net = SmallNet()
    set_bits(net, 4, zero="schedule", layers=LAYERS)
    prune.IterativePruning(0.5, 2).on_epoch_begin(0, net, None)
    before = copy.deepcopy(net.state_dict())
    with quant.bits(net, 2, layers=LAYERS):
        assert quantizer_of(net.conv1).keep is None
    assert state_equal(net.state_dict(), before)


def test_a_students_quantizer_runs_in_the_layers_and_is_restored():
    from labkit import models
    calls = []
    def naive(w, bits):
        calls.append(("naive", bits))
        return quant.ste_quantize(w, bits)
    def aware(w, bits, mask):
        calls.append(("aware", bits))
        return quant.masked_quantize(w, bits, mask)
    net = models.resnet20().eval()
    ref = quant.quantized(net, 3, mask_aware=False)
    x = torch.rand(2, 3, 32, 32)
    q = quant.quantized(net, 3, mask_aware=False, fn=naive)
    assert torch.equal(q(x), ref(x)) and calls and set(calls) == {("naive", 3)}
    calls.clear()
    quant.set_bits(net, 2, fn=aware)
    net(x)
    assert set(calls) == {("aware", 2)}
    with quant.bits(net, 4, mask_aware=False, fn=naive):
        calls.clear(); net(x)
        assert set(calls) == {("naive", 4)}
    calls.clear(); net(x)
    assert set(calls) == {("aware", 2)}                   # the block's quantizer, fn included, restored
    with pytest.raises(ValueError, match="fn must be a function"):
        quant.set_bits(net, 2, fn=3)


# --- issue 27: numerics at the edge of float32 -------------------------------------------------------

def numpy_minmax(w, bits):
    """The asymmetric quantizer in float64 numpy (module docstring's formula)."""
    w = np.asarray(w, np.float64)
    n, lo, hi = 2 ** bits - 1, w.min(), w.max()
    return np.round((w - lo) / (hi - lo) * n) / n * (hi - lo) + lo


@pytest.mark.parametrize("values", [[3e38, -3e38, 0.5, 1e38], [-3.4e38, 3.4e38, 0.0], [3.3e38, -1.0, 2e38]])
def test_finite_weights_near_the_float32_limit_quantize_without_nan(values):
    w = torch.tensor(values, dtype=torch.float32)
    got = quant.quantize(w, 4)
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    np.testing.assert_allclose(got.numpy(), numpy_minmax(w.numpy(), 4).astype(np.float32), rtol=1e-6)
    for kwargs in (dict(symmetric=True), dict(zero_point=True)):
        assert torch.isfinite(quant.quantize(w, 4, **kwargs)).all(), kwargs
    codes, codebook = quant.encode(w, 4)
    assert torch.isfinite(codebook).all() and codes.max() <= 15


def test_the_symmetric_quantizer_refuses_one_bit_instead_of_nan():
    with pytest.raises(ValueError, match="bits=1 with symmetric=True"):
        quant.symmetric_quantize(torch.randn(10), 1)
