"""Lab 4 (d): integer inference on ONNX Runtime. The engine's int8 output is checked against an integer
reference written here in numpy (uint8 activations, int8 weights, int32 accumulation, requantization)
from the scales and zero points stored in the quantized file; the pretrained ResNet-20 runs as
integer kernels and agrees with the float model; Engine, Bf16 and bad input."""
import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from labkit import data, inference, latency, models, train
from labkit.data import Split


class OneConv(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(x).flatten(1)


def images(n, seed=0, size=8):
    g = torch.Generator().manual_seed(seed)
    return Split(torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8), torch.zeros(n, dtype=torch.int64))


def conv_parameters(path):
    """The quantized Conv's operands: (x scale, x zero point), int8 weight and per-channel scales,
    int32 bias, (y scale, y zero point), read from the QDQ graph around the one Conv node."""
    model = onnx.load(str(path))
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    by_output = {o: n for n in model.graph.node for o in n.output}
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    dq_x, dq_w, dq_b = (by_output[i] for i in conv.input)
    assert {dq_x.op_type, dq_w.op_type, dq_b.op_type} == {"DequantizeLinear"}
    q_y = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == conv.output[0])
    return dict(sx=float(init[dq_x.input[1]]), zx=int(init[dq_x.input[2]]),
                w=init[dq_w.input[0]], sw=init[dq_w.input[1]], zw=init[dq_w.input[2]],
                b=init[dq_b.input[0]], sb=init[dq_b.input[1]],
                sy=float(init[q_y.input[1]]), zy=int(init[q_y.input[2]]))


def integer_conv(x, p):
    """The int8 convolution in numpy: quantize x to uint8, multiply with int8 weights, accumulate
    in int32 with the int32 bias, requantize to uint8 with the output scale, dequantize."""
    xq = np.clip(np.rint(x / p["sx"]) + p["zx"], 0, 255).astype(np.int64) - p["zx"]      # (B, 3, 8, 8)
    w = p["w"].astype(np.int64) - p["zw"].reshape(-1, 1, 1, 1)                            # (4, 3, 3, 3)
    B, C, H, W = xq.shape
    padded = np.pad(xq, ((0, 0), (0, 0), (1, 1), (1, 1)))
    acc = np.zeros((B, w.shape[0], H, W), dtype=np.int64)
    for i in range(3):
        for j in range(3):
            acc += np.einsum("bchw,oc->bohw", padded[:, :, i:i + H, j:j + W], w[:, :, i, j])
    acc += p["b"].astype(np.int64).reshape(1, -1, 1, 1)
    assert np.abs(acc).max() < 2 ** 31                                                    # fits int32
    acc = acc.astype(np.int32)
    real = acc * (p["sx"] * p["sw"]).reshape(1, -1, 1, 1)
    yq = np.clip(np.rint(real / p["sy"]) + p["zy"], 0, 255)
    return ((yq - p["zy"]) * p["sy"]).reshape(B, -1)


@pytest.fixture(scope="module")
def one_conv(tmp_path_factory):
    folder = tmp_path_factory.mktemp("int8")
    net = OneConv()
    fp32 = inference.export(net, folder / "conv.onnx", image_shape=(3, 8, 8))
    int8 = inference.quantize(fp32, folder / "conv_int8.onnx", images(64), reduce_range=True)
    return net, fp32, int8


def test_int8_conv_matches_an_integer_reference(one_conv):
    net, _, int8 = one_conv
    p = conv_parameters(int8)
    assert p["w"].dtype == np.int8 and p["b"].dtype == np.int32 and p["sw"].shape == (4,)   # per channel
    model = onnx.load(str(int8))
    zero_points = {t.name: numpy_helper.to_array(t).dtype for t in model.graph.initializer if "zero_point" in t.name}
    assert np.dtype(np.uint8) in zero_points.values()       # U8S8: uint8 activations
    assert np.abs(p["w"]).max() <= 64                      # reduce_range: 7-bit weights
    np.testing.assert_allclose(p["sb"], p["sx"] * p["sw"], rtol=1e-6)                      # bias scale
    x = images(16, seed=1).images.float() / 255
    got = inference.Engine(int8)(x).numpy()
    ref = integer_conv(x.numpy(), p)
    lsb = np.abs(got - ref) / p["sy"]
    assert lsb.max() <= 1.0001 and (lsb < 1e-3).mean() > 0.99   # the same integers, at most one rounding apart
    float_out = net(x).detach().numpy()                       # and close to the float layer
    assert np.abs(got - float_out).max() < 4 * p["sy"] + 2 * p["sx"] * np.abs(p["w"] * p["sw"].reshape(-1, 1, 1, 1)).sum((1, 2, 3)).max()


def test_the_float_export_matches_pytorch(one_conv):
    net, fp32, _ = one_conv
    x = images(5, seed=2).images.float() / 255
    np.testing.assert_allclose(inference.Engine(fp32)(x).numpy(), net(x).detach().numpy(), rtol=1e-5, atol=1e-5)


def test_the_engine_is_a_model_for_evaluate_and_latency(one_conv):
    net, fp32, int8 = one_conv
    engine = inference.Engine(int8)
    split = Split(images(40).images, torch.randint(0, 256, (40,), generator=torch.Generator().manual_seed(3)))
    logits = engine(split.images.float() / 255)
    assert logits.shape == (40, 256) and logits.dtype == torch.float32
    assert train.evaluate(engine, split) == (logits.argmax(1) == split.labels).float().mean().item()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        engine(split.images[:2].float() / 255)
        assert 1 in engine._sessions and engine._sessions[1].get_session_options().intra_op_num_threads == 1
    finally:
        torch.set_num_threads(threads)
    res = latency.measure({"int8": engine, "torch": net}, batch_sizes=(2,), threads=(1,), rounds=1,
                          min_run_time=0.01, image_shape=(3, 8, 8), progress=False)
    assert {k for k, _, _ in res} == {"int8", "torch"}


def test_pretrained_resnet20_runs_as_integer_kernels_and_agrees_with_float(tmp_path, data_root):
    net = models.resnet20(pretrained=True, root=data_root)
    cifar = data.cifar10(data_root)
    fp32 = inference.export(net, tmp_path / "r20.onnx")
    int8 = inference.quantize(fp32, tmp_path / "r20_int8.onnx", cifar.train[:256])
    ops = inference.op_counts(int8)
    assert ops["QLinearConv"] == 19 and ops["QLinearAdd"] == 9 and ops["QGemm"] == 1 and "Conv" not in ops
    assert inference.op_counts(fp32, optimized=False)["Conv"] == 19
    x = cifar.test.images[:256].float() / 255
    engine = inference.Engine(int8)
    with torch.no_grad():
        agree = (engine(x).argmax(1) == net.eval()(x).argmax(1)).float().mean().item()
        one = engine(x[:1])                                  # any batch size, one included
    assert agree > 0.95
    torch.testing.assert_close(one, engine(x[:2])[:1])


def test_a_pruned_and_quantized_model_exports_with_its_masks_and_quantizer(tmp_path):
    from labkit import prune, quant
    net = quant.quantized(models.resnet20(), 4)
    prune.prune_by_percentage(net, 0.7)
    path = inference.export(net, tmp_path / "pq.onnx")
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(inference.Engine(path)(x), net.eval()(x), rtol=1e-4, atol=1e-4)


def test_goals_are_judged_by_the_median_the_spread_and_the_accuracy():
    from labkit.latency import Latency
    from torch.utils import benchmark

    def timed(ms):                                  # a Latency whose blocks took these times
        m = benchmark.Measurement(1, [t / 1e3 for t in ms], benchmark.TaskSpec("x", "", num_threads=1))
        return Latency("k", 1, 1, "cpu", m)

    timings = {("ORT int8", 256, 1): timed([10, 10, 11, 10]), ("torch fp32", 256, 1): timed([31, 32, 31, 33]),
               ("ORT int8", 1, 1): timed([1.0, 1.2, 1.1, 1.0]), ("torch fp32", 1, 1): timed([1.1, 1.0, 1.2, 1.1])}
    lines = inference.goals(timings, {"ORT int8": 0.91, "torch fp32": 0.916}, batch_sizes=(1, 256), threads=1)
    assert lines[0].endswith(": met") and "3x" in lines[0]
    assert "within the spread" in lines[1]
    assert lines[2].endswith(": not met") and "0.60 points below" in lines[2]
    timings[("ORT int8", 256, 1)] = timed([12, 13, 12, 13])              # 2.5x: short of 3x
    timings[("ORT int8", 1, 1)] = timed([2.0, 2.1, 2.0, 2.2])            # slower beyond the spread
    lines = inference.goals(timings, {"ORT int8": 0.912, "torch fp32": 0.916}, batch_sizes=(1, 256), threads=1)
    assert lines[0].endswith(": not met") and "2.5" in lines[0]
    assert lines[1].endswith(": not met") and "spread" not in lines[1]
    assert lines[2].endswith(": met") and "0.40 points below" in lines[2]
    line = inference.goals(timings, {"ORT int8": 0.917, "torch fp32": 0.916}, batch_sizes=(1, 256), threads=1)[2]
    assert line.endswith(": met") and "(0.10 points above)" in line   # above the float model: met, said so
    busy = {k: Latency(*[getattr(v, f) for f in ("model", "batch_size", "threads", "device", "measurement")], quiet=False)
            for k, v in timings.items()}                                 # timed on a busy machine: not judged
    lines = inference.goals(busy, {"ORT int8": 0.912, "torch fp32": 0.916}, batch_sizes=(1, 256), threads=1)
    assert all(line.endswith("not judged: the machine was busy while timing") for line in lines[:2])
    assert lines[2].endswith(": met")                                    # accuracy needs no quiet machine


def test_int8_instructions_are_named():
    assert inference.int8_instructions().startswith(("int8 dot-product", "no int8", "unknown"))


def test_bf16_is_close_to_float():
    net = models.resnet20().eval()
    x = torch.rand(4, 3, 32, 32)
    out = inference.Bf16(net)(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, net(x), atol=0.1, rtol=0.05)
    assert next(net.parameters()).dtype == torch.float32      # the model itself unchanged


def test_bad_input_gets_clear_errors(tmp_path, one_conv):
    _, fp32, _ = one_conv
    with pytest.raises(ValueError, match="calibration"):
        inference.quantize(fp32, tmp_path / "q.onnx", images(64)[:0])
    with pytest.raises(FileNotFoundError):
        inference.Engine(tmp_path / "missing.onnx")
    with pytest.raises(FileNotFoundError, match="inference.export"):
        inference.quantize(tmp_path / "missing.onnx", tmp_path / "q.onnx", images(8))
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(Exception):
        inference.Engine(tmp_path / "junk.onnx")             # at once, not at the first call
    assert not (tmp_path / "q.onnx").exists()
    with pytest.raises(ValueError, match="float32"):
        inference.export(OneConv().double(), tmp_path / "d.onnx", image_shape=(3, 8, 8))


# --- issue 27: the engine refuses what it would answer wrongly; ONNX Runtime's errors translated ----

def test_the_engine_refuses_non_finite_images_and_a_wrong_shape_by_name(one_conv):
    _, _, int8 = one_conv
    engine = inference.Engine(int8)
    x = torch.rand(4, 3, 8, 8)
    assert torch.isfinite(engine(x)).all()
    x[1, 0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        engine(x)
    x[1, 0, 2, 2] = float("inf")
    with pytest.raises(ValueError, match="NaN or infinite"):
        engine(x)
    with pytest.raises(ValueError, match=r"conv_int8.onnx takes float images of shape \(.*, 3, 8, 8\).*\(4, 3, 9, 8\)"):
        engine(torch.rand(4, 3, 9, 8))
    with pytest.raises(ValueError, match=r"takes float images"):
        engine(torch.rand(3, 8, 8))


def test_a_damaged_onnx_file_is_named(tmp_path, one_conv):
    _, fp32, _ = one_conv
    damaged = tmp_path / "conv.onnx"
    damaged.write_bytes(fp32.read_bytes()[: fp32.stat().st_size // 2])
    with pytest.raises(ValueError, match=rf"{damaged} is not a model ONNX Runtime can run.*damaged or truncated"):
        inference.Engine(damaged)
