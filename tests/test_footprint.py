"""labkit.footprint: bytes on disk stage by stage; every stage's parts add up to a real file's size."""
import os

import pytest
import torch

from labkit import compress, footprint, models, prune, quant
from labkit.layers import prunable_layers
from faults import save_under_size_limit


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
    weights = sum(m.weight.numel() for _, m in prunable_layers(dense))
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
    assert st["CSR"]["codes"] == 0 < st["CSR"]["float values"]                 # ... named so


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


def test_a_failed_torch_save_leaves_the_previous_file(tmp_path):
    """Issue 14 #2: the footprint's torch.save wrote over the destination in place; under a
    file-size limit (RLIMIT_FSIZE, for real, in a subprocess) a good file was cut short."""
    path = tmp_path / "m.pt"
    small = models.ResNet(inner=(1,) * 9)
    parts = footprint.torch_save_parts(small, path)
    good = path.read_bytes()
    assert sum(parts.values()) == len(good) < 200_000
    done = save_under_size_limit(f"footprint.torch_save_parts(models.resnet20(), {str(path)!r})", 200_000,
                                 setup="from labkit import footprint, models\n")   # about 1.1 MB
    assert done.returncode == 3 and f"failed: OSError [Errno 28] no space left to write {path}" in done.stdout, \
        done.stdout + done.stderr
    assert path.read_bytes() == good and [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def test_the_torch_save_file_is_what_torch_save_writes(tmp_path):
    """Written atomically, but byte for byte torch.save(state, path) (whose size depends on the
    file's name): the stage's numbers are those of the plain call."""
    net = _net(q=0.5, bits=4)
    footprint.torch_save_parts(net, tmp_path / "a.pt")
    (tmp_path / "plain").mkdir()
    torch.save(net.state_dict(), tmp_path / "plain" / "a.pt")
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "plain" / "a.pt").read_bytes()


def test_the_csr_stage_bakes_a_copy_without_channel_pruning(tmp_path, monkeypatch):
    """The CSR stage measures a baked deep copy (copies are independent now), not
    structured.prune_channels(net, 1.0) used as a copy."""
    from labkit import structured

    def refuse(*args, **kwargs):
        raise AssertionError("footprint must not copy through channel pruning")

    monkeypatch.setattr(structured, "prune_channels", refuse)
    net = _net(q=0.8, bits=4)
    st = footprint.stages(net, tmp_path, "m")
    assert st["CSR"]["codebooks"] == 0 and st["CSR"]["float values"] > st["+ quantization"]["codes"]


def test_the_csr_stage_stores_the_effective_weights(tmp_path):
    """Baked, not merely stripped: a 2-bit symmetric quantizer rounds many weights to 0, and the
    CSR stage stores only the non-zero effective weights, as the plain model compress.load gives."""
    net = _net(bits=None)
    quant.set_bits(net, 2, symmetric=True)
    st = footprint.stages(net, tmp_path, "s")
    plain = compress.load(tmp_path / "s.lkc")
    report = compress.size_report(plain, huffman=False)
    values = sum(layer.bits["codes"] for layer in report.layers) / 8        # every layer float, CSR or dense
    assert st["CSR"] == {**report.parts_bytes, "codes": 0, "float values": values, "header": report.header_bytes}
    assert st["CSR"]["float values"] < 0.9 * footprint.stages(_net(), tmp_path, "d")["CSR"]["float"]


def test_stage_parts_are_named_by_what_they_hold(tmp_path):
    """Issue 15: float32 CSR values are "float values", never "codes"; codes only where a layer is
    quantized (the 18 residual convolutions; the first conv and fc stay float values)."""
    float_sparse = footprint.stages(_net(q=0.8), tmp_path, "f")
    quantized = footprint.stages(_net(q=0.8, bits=4), tmp_path, "q")
    for stage in footprint.STAGES[1:]:
        assert float_sparse[stage]["codes"] == 0 and float_sparse[stage]["float values"] > 0
    assert quantized["CSR"]["codes"] == 0 < quantized["CSR"]["float values"]
    report = compress.size_report(_net(q=0.8, bits=4), huffman=False)
    first_last = sum(layer.bits["codes"] for layer in report.layers if layer.name in ("conv1", "fc")) / 8
    assert quantized["+ quantization"]["float values"] == first_last > 0
    assert quantized["+ quantization"]["codes"] > 0
    assert all(sum(p.values()) == footprint.totals(quantized)[s] for s, p in quantized.items())


def test_plot_stages_draws_a_bar_only_for_a_measured_part(tmp_path):
    """Every bar is one (model, stage, part) of more than 0 bytes, at its size, coloured and
    labelled as that part; every such part has its bar."""
    models_ = {"dense": footprint.stages(_net(), tmp_path, "d"),
               "pruned 80 %, 4 bits": footprint.stages(_net(q=0.8, bits=4), tmp_path, "q")}
    ax = footprint.plot_stages(models_, reference=footprint.totals(models_["dense"])["torch.save"]).axes[0]
    bars = [(round(p.get_x() + p.get_width() / 2, 9), round(p.get_y(), 9), round(p.get_height(), 9), p.get_facecolor())
            for p in ax.patches]
    colors = {}
    legend = {t.get_text(): h for t, h in zip(ax.get_legend().get_texts(), ax.get_legend().legend_handles)}
    expected = []
    width = 0.8 / len(footprint.STAGES)
    for g, st in enumerate(models_.values()):
        for i, stage in enumerate(footprint.STAGES):
            x, bottom = g + (i - (len(footprint.STAGES) - 1) / 2) * width, 0.0
            for part, size in st[stage].items():
                if size > 0:
                    expected.append((round(x, 9), round(bottom, 9), round(size / 1e3, 9), part))
                    bottom += size / 1e3
    assert len(bars) == len(expected)
    for (x, y, h, color), (ex, ey, eh, part) in zip(bars, expected):
        assert (x, y, h) == (ex, ey, eh)
        colors.setdefault(part, color)
        assert color == colors[part]                               # one colour per part
        assert legend[footprint.PART_LABELS[part]].get_facecolor() == color
    assert set(legend) == {footprint.PART_LABELS[p] for *_, p in expected}   # only parts drawn are named
    dense_csr = [part for (x, *_ , part) in expected if x < 0.5 and part in ("codes", "codebooks")]
    assert dense_csr == []                                         # a float model has no codes in any stage


def test_torch_save_parts_count_a_schedule_mask_as_masks(tmp_path):
    net = _net()
    quant.set_bits(net, 4, zero="schedule")
    prune.IterativePruning(0.8, 2).on_epoch_begin(0, net, None)       # hands over the masks, holds nothing
    parts = footprint.torch_save_parts(net, tmp_path / "s.pt")
    assert parts["masks"] == sum(m.weight.numel() for _, m in quant.quantizable_layers(net))
    assert sum(parts.values()) == os.path.getsize(tmp_path / "s.pt")


def test_the_two_files_are_replaced_together_or_not_at_all(tmp_path):
    """Issue 27: a model compress.save refuses (another architecture) after torch.save succeeded
    left a new .pt beside the previous .lkc; and a size limit between the files' sizes."""
    footprint.stages(_net(q=0.5, bits=4), tmp_path, "m")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert sorted(before) == ["m.lkc", "m.pt"]
    other = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten(), torch.nn.Linear(8 * 30 * 30, 10))
    with pytest.raises(ValueError):
        footprint.stages(other, tmp_path, "m")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    lkc = len(before["m.lkc"])
    done = save_under_size_limit(f"footprint.stages(models.resnet20(), {str(tmp_path)!r}, 'm')", lkc + 1000,
                                 setup="from labkit import footprint, models\n")   # the .pt fits no more
    assert done.returncode == 3 and "no space left" in done.stdout, done.stdout + done.stderr
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_the_files_keep_their_permissions_and_links(tmp_path):
    footprint.stages(_net(q=0.5), tmp_path, "m")
    assert {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()} == {"m.pt": 0o644, "m.lkc": 0o644}
    os.chmod(tmp_path / "m.pt", 0o664)
    (tmp_path / "real").mkdir()
    (tmp_path / "m.lkc").rename(tmp_path / "real" / "m.lkc")
    (tmp_path / "m.lkc").symlink_to(tmp_path / "real" / "m.lkc")
    footprint.stages(_net(q=0.7), tmp_path, "m")
    assert (tmp_path / "m.pt").stat().st_mode & 0o777 == 0o664
    assert (tmp_path / "m.lkc").is_symlink()
    assert compress.load(tmp_path / "real" / "m.lkc") is not None


def test_a_file_or_a_dangling_link_named_as_the_folder_is_named(tmp_path):
    """Issue 27, adversarial probe: stages raised pathlib's FileExistsError / NotADirectoryError."""
    a_file = tmp_path / "f"
    a_file.write_bytes(b"keep")
    dangling = tmp_path / "d"
    dangling.symlink_to(tmp_path / "gone")
    net = _net(q=0.5)
    for folder in (a_file, dangling, a_file / "sub"):
        with pytest.raises(NotADirectoryError, match=rf"footprint.stages writes into the folder {folder}, but .* is "
                                                     r"not a folder"):
            footprint.stages(net, folder, "m")
    assert a_file.read_bytes() == b"keep" and sorted(p.name for p in tmp_path.iterdir()) == ["d", "f"]


def test_a_folder_that_cannot_be_written_is_named():
    """Issue 27, adversarial probe: PermissionError named the hidden staging folder. A real 0555
    folder, written as an unprivileged user (uid 65534 when the tests run as root)."""
    import shutil, subprocess, sys, tempfile
    from pathlib import Path
    folder = Path(tempfile.mkdtemp())
    try:
        os.chmod(folder, 0o555)
        drop = "import os\nos.setgid(65534)\nos.setuid(65534)\n" if os.geteuid() == 0 else ""
        code = ("from labkit import footprint, models\n" + drop + f"try:\n    footprint.stages(models.resnet20(), "
                f"{str(folder)!r}, 'm')\nexcept PermissionError as e:\n    print(e)\n")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                              cwd=Path(__file__).parent.parent)
        assert f"cannot write {folder}/m.pt and .lkc: the folder {folder} is not writable" in done.stdout, \
            done.stdout + done.stderr
        assert ".part" not in done.stdout and list(folder.iterdir()) == []
    finally:
        os.chmod(folder, 0o755)
        shutil.rmtree(folder)


def test_a_non_finite_model_is_refused_naming_the_files_not_the_staging_folder(tmp_path):
    """Issue 27, adversarial probe: the refusal named '<folder>/.m.x1y2z3.part/m.pt'."""
    footprint.stages(_net(q=0.5), tmp_path, "m")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    net = _net(q=0.5)
    with torch.no_grad():
        net.fc.bias[0] = float("inf")
    with pytest.raises(ValueError, match=rf"not saving {tmp_path / 'm'}\.pt and \.lkc: .*inf or NaN.*fc\.bias") as err:
        footprint.stages(net, tmp_path, "m")
    assert ".part" not in str(err.value)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
