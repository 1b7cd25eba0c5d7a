"""labkit.footprint: bytes on disk stage by stage; every stage's parts add up to a real file's size."""
import os

import pytest
import torch

from labkit import compress, footprint, models, prune, quant


def _net(q=None, bits=None, seed=0):
    torch.manual_seed(seed)
    net = models.resnet20()
    if q is not None:
        prune.prune_by_percentage(net, q)
    if bits is not None:
        quant.set_bits(net, bits)
    return net


def test_torch_save_parts(tmp_path):
    dense, pruned = _net(), _net(q=0.8)
    d = footprint.torch_save_parts(dense, tmp_path / "d.pt")
    p = footprint.torch_save_parts(pruned, tmp_path / "p.pt")
    assert sum(d.values()) == os.path.getsize(tmp_path / "d.pt")
    assert sum(p.values()) == os.path.getsize(tmp_path / "p.pt")
    weights = sum(m.weight.numel() for _, m in models.prunable_layers(dense))
    bn = sum(4 * m.num_features for m in dense.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert d["masks"] == 0 and p["masks"] == weights                 # one byte per weight
    assert d["float"] == p["float"] == 4 * (weights + 10 + 6)        # + fc bias, mean and std
    assert d["batchnorm"] == 4 * bn + 8 * 19                         # + num_batches_tracked (int64)
    assert 0 < d["header"] < 0.05 * sum(d.values())
    assert sum(p.values()) > sum(d.values())                         # the masks make it bigger


def test_stages_add_up_to_the_files(tmp_path):
    net = _net(q=0.8, bits=4)
    st = footprint.stages(net, tmp_path, "m")
    assert list(st) == list(footprint.STAGES)
    t = footprint.totals(st)
    assert t["torch.save"] == os.path.getsize(tmp_path / "m.pt")
    assert t["+ Huffman"] == os.path.getsize(tmp_path / "m.lkc")
    assert t["+ quantization"] == compress.size_report(net, huffman=False).file_bytes
    assert t["torch.save"] > t["CSR"] > t["+ quantization"] > t["+ Huffman"]
    assert st["CSR"]["codebooks"] == 0 < st["+ quantization"]["codebooks"]   # CSR: float values


def test_stages_leave_the_model_working(tmp_path):
    """Baking a copy must not remove the parametrizations of the original (their class is shared)."""
    net = _net(q=0.5, bits=4)
    x = torch.rand(2, 3, 32, 32)
    before = net.eval()(x)
    footprint.stages(net, tmp_path, "m")
    torch.testing.assert_close(net(x), before, rtol=0, atol=0)
    assert quant.bits_of(net.stage1[0].conv1) == 4 and prune.masks(net)


def test_float_model_is_unchanged_by_quantization_stage(tmp_path):
    st = footprint.stages(_net(q=0.8), tmp_path, "f")
    assert st["CSR"] == st["+ quantization"]


def test_table_and_plot(tmp_path):
    st = {"dense": footprint.stages(_net(), tmp_path, "d")}
    ref = footprint.totals(st["dense"])["torch.save"]
    text = footprint.stage_table(st, reference=ref)
    assert "dense" in text and text.strip().endswith("x")
    fig = footprint.plot_stages(st, reference=ref)
    assert len(fig.axes[0].patches) >= len(footprint.STAGES)
    with pytest.raises(ValueError, match="no model"):
        footprint.plot_stages({})
