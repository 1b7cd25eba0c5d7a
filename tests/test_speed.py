"""labkit.speed: CSR layers equal the dense masked ones, FlopCounterMode's MACs equal a count from the
layer shapes, latency measurements are sane (no timed assertions)."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from labkit import models, prune, speed, structured


def _macs_from_shapes(net, nonzero=False) -> int:
    """MACs per image from each layer's shapes: output positions x (weights per output), for every
    Conv2d and Linear; with nonzero=True only the non-zero weights count."""
    outputs, hooks = {}, []
    for name, m in models.prunable_layers(net):
        hooks.append(m.register_forward_hook(lambda m, i, o, name=name: outputs.__setitem__(name, o.shape)))
    with torch.no_grad():
        net.eval()(torch.zeros(1, 3, 32, 32))
    for h in hooks:
        h.remove()
    total = 0
    for name, m in models.prunable_layers(net):
        out = outputs[name]
        if isinstance(m, nn.Conv2d):
            positions = out[2] * out[3]                        # (1, C_out, H, W)
            per_position = int((m.weight != 0).sum()) if nonzero else m.weight.numel()
        else:
            positions = 1                                      # (1, out_features)
            per_position = int((m.weight != 0).sum()) if nonzero else m.weight.numel()
        total += positions * per_position
    return total


def test_resnet20_macs():
    net = models.resnet20()
    macs = speed.count_macs(net)
    assert macs == _macs_from_shapes(net)
    assert round(macs / 1e6, 2) == 40.55                      # the figure of the issue, per image
    assert speed.count_macs(net, (4, 3, 32, 32)) == macs       # per image, whatever the batch


@pytest.mark.parametrize("keep", [0.5, 0.25])
def test_channel_pruned_macs(keep):
    small = structured.prune_channels(models.resnet20(), keep)
    assert speed.count_macs(small) == _macs_from_shapes(small)
    assert speed.count_macs(small) < speed.count_macs(models.resnet20())


def test_masked_counts_dense_macs_and_csr_counts_nonzeros():
    net = models.resnet20()
    prune.prune_by_percentage(net, 0.8)
    assert speed.count_macs(net) == _macs_from_shapes(net)     # dense kernels multiply the zeros
    csr = speed.to_csr(net)
    assert speed.count_macs(csr) == _macs_from_shapes(net, nonzero=True)


def test_count_params():
    net = models.resnet20()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.bias.uniform_(0.1, 0.2)                      # non-zero, as after training
    weights = sum(m.weight.numel() for _, m in models.prunable_layers(net))
    bn = sum(2 * m.num_features for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    assert speed.count_params(net) == weights + bn + net.fc.bias.numel()
    prune.prune_by_percentage(net, 0.8)
    zeros = sum(prune.sparsity(net).zeros.values())
    assert speed.count_params(net, nonzero=True) == weights - zeros + bn + net.fc.bias.numel()
    assert speed.count_params(net, weights_only=True) == weights
    assert speed.count_params(net, nonzero=True, weights_only=True) == weights - zeros


@pytest.mark.parametrize("kw", [dict(), dict(stride=2), dict(padding=0), dict(padding=2, dilation=2),
                                dict(bias=True, stride=(2, 1), padding=(1, 0)), dict(kernel_size=1)])
def test_csr_conv_equals_masked_conv(kw):
    torch.manual_seed(0)
    kw = {"kernel_size": 3, "padding": 1, "bias": False} | kw
    conv = nn.Conv2d(6, 5, **kw)
    prune.prune_by_percentage(conv, 0.7, layers=[("", conv)])  # a masked layer, as in the labs
    sparse = speed.CSRConv2d.from_dense(conv)
    x = torch.randn(3, 6, 11, 9)
    with torch.no_grad():
        expected = F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation)
        torch.testing.assert_close(sparse(x), expected, rtol=1e-5, atol=1e-5)
    assert sparse.nnz == int((conv.weight != 0).sum())


def test_im2col_equals_unfold():
    x = torch.randn(2, 3, 7, 8)
    for kw in (dict(kernel_size=3, padding=1), dict(kernel_size=(3, 2), stride=2, dilation=(1, 2))):
        cols = F.unfold(x, **kw)                               # (B, C*k*k, L)
        expected = cols.transpose(0, 1).reshape(cols.shape[1], -1)
        torch.testing.assert_close(speed.im2col(x, **kw), expected, rtol=0, atol=0)


def test_csr_linear_equals_masked_linear():
    torch.manual_seed(0)
    lin = nn.Linear(20, 7)
    prune.prune_by_percentage(lin, 0.9, layers=[("", lin)])
    sparse = speed.CSRLinear.from_dense(lin)
    x = torch.randn(5, 20)
    torch.testing.assert_close(sparse(x), lin(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("q", [0.5, 0.95])
def test_to_csr_model_equals_masked_model(q):
    torch.manual_seed(0)
    net = models.resnet20()
    prune.prune_by_percentage(net, q)
    net.eval()
    csr = speed.to_csr(net)
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(csr(x), net(x), rtol=1e-4, atol=1e-4)
    layers = models.prunable_layers(csr)
    assert len(layers) == 20 and all(isinstance(m, (speed.CSRConv2d, speed.CSRLinear)) for _, m in layers)
    assert isinstance(models.prunable_layers(net)[0][1], nn.Conv2d)    # the original is untouched
    assert not isinstance(models.prunable_layers(net)[0][1], speed.CSRConv2d)
    twin = copy.deepcopy(csr).to(torch.float64)                       # copies and moves
    torch.testing.assert_close(twin(x.double()).float(), csr(x), rtol=1e-4, atol=1e-4)


def test_csr_conv_refuses_groups():
    with pytest.raises(ValueError, match="groups"):
        speed.CSRConv2d(4, 4, 3, groups=2)


def test_measure_is_sane():
    torch.manual_seed(0)
    net = models.resnet20().train()
    small = structured.prune_channels(net, 0.5)
    results = speed.measure({("dense", 0.0): net, ("channels", 0.5): small}, batch_sizes=(1, 2),
                            threads=(1,), rounds=2, min_run_time=0.01, progress=False)
    assert set(results) == {(k, b, 1) for k in [("dense", 0.0), ("channels", 0.5)] for b in (1, 2)}
    for (key, b, t), lat in results.items():
        assert lat.batch_size == b and lat.threads == 1 and lat.device == "cpu"
        assert 0 < lat.median < 60 and math.isfinite(lat.median)
        q1, q3 = lat.quartiles
        assert 0 < q1 <= lat.median <= q3 and lat.iqr == pytest.approx(q3 - q1)
        assert len(lat.times) >= 2                       # at least one block per round
    assert net.training and small.training               # modes restored
    text = speed.latency_table(results, baseline=("dense", 0.0))
    assert "speed-up" in text and "channels 50%" in text
    fig = speed.plot_latency(results, baseline=("dense", 0.0))
    assert len(fig.axes) == 2                                # one panel per batch size and thread count
    assert [line.get_label() for line in fig.axes[0].lines][0] == "dense"   # the baseline's line


def test_thread_settings():
    assert speed.thread_settings("cpu")[0] == 1
    assert speed.thread_settings("cpu")[-1] == torch.get_num_threads()
    assert speed.thread_settings("cuda") == (None,)


@pytest.mark.parametrize("kw, match", [(dict(rounds=0), "rounds"), (dict(batch_sizes=(0,)), "batch_sizes"),
                                       (dict(threads=(0,)), "threads")])
def test_measure_bad_input(kw, match):
    with pytest.raises(ValueError, match=match):
        speed.measure({"m": nn.Linear(3, 3)}, **kw, progress=False)
    with pytest.raises(ValueError, match="non-empty"):
        speed.measure({})


def test_bad_input_shape():
    with pytest.raises(ValueError, match="input_shape"):
        speed.count_macs(models.resnet20(), (0, 3, 32, 32))


def test_plot_latency_needs_kind_sparsity_keys():
    lat = speed.measure({"plain": nn.Linear(3, 3)}, batch_sizes=(1,), threads=(1,), rounds=1,
                        min_run_time=0.001, image_shape=(3,), progress=False)
    with pytest.raises(ValueError, match="kind, sparsity"):
        speed.plot_latency(lat)


def _fake(times_by_key) -> dict:
    """Results of `measure` with given per-call times (seconds), batch 1, one thread."""
    from torch.utils.benchmark.utils.common import Measurement, TaskSpec

    out = {}
    for key, times in times_by_key.items():
        m = Measurement(1, list(times), TaskSpec("run()", "pass", num_threads=1))
        out[(key, 1, 1)] = speed.Latency(key, 1, 1, "cpu", m)
    return out


def test_speedup_and_its_range():
    res = _fake({"base": [4.0, 5.0, 6.0, 7.0, 8.0], "fast": [1.0, 2.0, 2.0, 2.0, 3.0]})
    s = speed.speedup(res, "fast", "base", 1, 1)
    assert s.median == pytest.approx(6.0 / 2.0)
    assert s.low == pytest.approx(5.0 / 2.0) and s.high == pytest.approx(7.0 / 2.0)   # q1/q3, q3/q1
    with pytest.raises(ValueError, match="no measurement"):
        speed.speedup(res, "fast", "base", 256, 1)


def test_crossover():
    base = [1.0] * 3
    res = _fake({("dense", 0.0): base, ("CSR", 0.5): [3.0] * 3, ("CSR", 0.8): [0.9] * 3,
                 ("CSR", 0.9): [1.1] * 3, ("CSR", 0.95): [0.5] * 3})
    assert speed.crossover(res, "CSR", ("dense", 0.0)) == {(1, 1): 0.95}   # 0.9 is slower again
    res[(("CSR", 0.95), 1, 1)] = _fake({("CSR", 0.95): [2.0] * 3})[(("CSR", 0.95), 1, 1)]
    assert speed.crossover(res, "CSR", ("dense", 0.0)) == {(1, 1): None}


def test_machine_load():
    import os

    line = speed.machine_load()
    if hasattr(os, "getloadavg"):
        assert line.startswith("load average") and f"on {os.cpu_count()} CPUs" in line
