"""Lab 4 (d): the model run in integers, on a real inference engine (ONNX Runtime), beside fp32 and bf16.

Every quantized model of Lab 3 is fake-quantized: its weights take 2^b values, but they are float32
and every multiply is a float multiply, as in the float model (plus the quantizer's own work). Integer
inference stores int8 weights and activations and multiplies them in int8 with int32
accumulators; the speed comes from the engine's integer kernels (more values per vector
instruction), not from the model. The flow (static quantization, ONNX Runtime's own tools):

    export      the float model to ONNX (``torch.onnx.export(..., dynamo=True)``, any batch size);
    quantize    ``onnxruntime.quantization.quantize_static``: activation ranges calibrated on
                training images (min/max of each tensor), int8 weights per output channel, the
                QDQ format (QuantizeLinear / DequantizeLinear pairs that the engine fuses into
                QLinearConv, QLinearAdd, QGemm kernels);
    `Engine`    an ONNX Runtime session as a labkit model: ``train.evaluate`` scores it and
                ``latency.measure`` times it beside PyTorch models, one session per thread count.

Why ONNX Runtime (book/lab4_theory.md): PyTorch's own x86 int8 path (``torch.ao.quantization``) is
deprecated and its successor (torchao's PT2E flow) compiles for tens of seconds and needs a C
compiler at run time; ONNX is the format CPU deployments consume, and the engine is one pip wheel.
Activations are uint8 and weights int8 (U8S8), the combination the engine's x86 kernels are built
for; ``reduce_range`` quantizes weights to 7 bits, which avoids the saturation of 16-bit
intermediate sums in the AVX2 U8S8 kernels (ONNX Runtime's quantization documentation).
"""
from __future__ import annotations

import contextlib
import copy
import io
import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import checks, files
from .data import Split
from .latency import speedup
from .layers import baked, evaluating

__all__ = ["export", "quantize", "Engine", "Bf16", "op_counts", "int8_instructions", "goals"]


def _onnx():
    try:
        import onnx
        import onnxruntime
    except ImportError as e:                  # pragma: no cover - the requirements install both
        raise ImportError("Lab 4 (d) needs onnx and onnxruntime: pip install -r requirements.txt") from e
    return onnx, onnxruntime


def export(net: nn.Module, path, *, image_shape=(3, 32, 32)) -> Path:
    """Write ``net`` (float32, on the CPU) to ``path`` as an ONNX model with input "images" (float,
    (B, 3, 32, 32) in [0, 1], any B) and output "logits". Pruning masks and quantizers are baked
    into a copy's float32 weights first (the effective weights its forward pass uses); ``net`` is
    not changed. Returns the path."""
    path = Path(path)
    if any(p.dtype != torch.float32 or p.device.type != "cpu" for p in net.parameters()):
        raise ValueError("export needs a float32 model on the CPU: call net.float().cpu() first")
    net = baked(net)
    x = torch.rand((2, *image_shape), generator=torch.Generator().manual_seed(0))
    path.parent.mkdir(parents=True, exist_ok=True)
    with evaluating(net), torch.no_grad(), contextlib.redirect_stdout(io.StringIO()), _torch_export_notes():
        program = torch.onnx.export(net, (x,), dynamo=True, input_names=["images"], output_names=["logits"],
                                    dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    files.write_bytes(path, program.model_proto.SerializeToString())
    return path


class _NoTorchvision(logging.Filter):
    """torch.onnx's exporter logs one warning per torchvision operator it cannot register when
    torchvision is absent (labkit does not use it); only those lines are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "torchvision is not installed" not in record.getMessage()


@contextlib.contextmanager
def _torch_export_notes():
    """Notes that torch's own exporter code raises, filtered by their exact text: its torchvision
    lines (`_NoTorchvision`) and a FutureWarning from torch.utils._pytree's own use of LeafSpec
    (torch 2.13); anything else is shown."""
    logger, note = logging.getLogger("torch.onnx._internal.exporter._registration"), _NoTorchvision()
    logger.addFilter(note)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                                    category=FutureWarning)
            yield
    finally:
        logger.removeFilter(note)


class _Calibration:
    """onnxruntime's CalibrationDataReader protocol: batches of {"images": float32 array}."""

    def __init__(self, split: Split, batch_size: int):
        images = split.images.cpu()
        self.batches = iter([{"images": (images[i:i + batch_size].float() / 255).numpy()}
                             for i in range(0, len(images), batch_size)])

    def get_next(self):
        return next(self.batches, None)


def quantize(float_path, path, calibration: Split, *, per_channel: bool = True, reduce_range: bool = True,
             batch_size: int = 64) -> Path:
    """Statically quantize the ONNX model at ``float_path`` into ``path`` (QDQ, int8 weights, uint8
    activations, int32 biases and accumulators): activation ranges are the min/max over the
    ``calibration`` images (training images: calibration fits the ranges, it chooses nothing).
    per_channel: one weight scale per output channel; reduce_range: 7-bit weights (module docstring:
    without it the 16-bit sums of the AVX2 kernels can saturate and cost accuracy).
    The file is written atomically (a failure leaves ``path`` as it was). Returns the path."""
    _onnx()
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not isinstance(calibration, Split) or len(calibration) == 0:
        raise ValueError("calibration must be a non-empty labkit.data.Split of training images")
    per_channel, reduce_range = checks.flag("per_channel", per_channel), checks.flag("reduce_range", reduce_range)
    batch_size = checks.integer("batch_size", batch_size, minimum=1)
    float_path, path = Path(float_path), Path(path)
    if not float_path.is_file():
        raise FileNotFoundError(f"no ONNX model at {float_path}; write one with inference.export(net, path)")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as tmp:
        pre, out = Path(tmp, "pre.onnx"), Path(tmp, "int8.onnx")
        quant_pre_process(str(float_path), str(pre), skip_symbolic_shape=True)   # shapes and folding for the quantizer
        quantize_static(str(pre), str(out), _Calibration(calibration, batch_size), quant_format=QuantFormat.QDQ,
                        per_channel=per_channel, reduce_range=reduce_range, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
        files.write_bytes(path, out.read_bytes())
    return path


def op_counts(path, *, optimized: bool = True) -> dict[str, int]:
    """{operator: count} of the model at ``path``; ``optimized``: of the graph the engine runs
    after its own fusions (QDQ pairs become QLinearConv and the like), else of the file."""
    onnx, ort = _onnx()
    if optimized:
        with tempfile.TemporaryDirectory() as tmp:
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.log_severity_level = 3   # its note that the optimized file is for this CPU only: we only count
            options.optimized_model_filepath = str(Path(tmp, "optimized.onnx"))
            ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            model = onnx.load(options.optimized_model_filepath)
    else:
        model = onnx.load(str(path))
    counts = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


def int8_instructions() -> str:
    """What this CPU offers integer kernels, from /proc/cpuinfo's flags: the int8 dot-product
    extensions (AVX-512 VNNI, AVX-VNNI, AMX) or AVX2 alone, in words; "unknown" off Linux."""
    try:
        flags = set(next(line for line in Path("/proc/cpuinfo").read_text().splitlines()
                         if line.startswith(("flags", "Features"))).split(":", 1)[1].split())
    except (OSError, StopIteration):
        return "unknown (no /proc/cpuinfo)"
    found = [name for flag, name in (("avx512_vnni", "AVX-512 VNNI"), ("avx_vnni", "AVX-VNNI"),
                                     ("amx_int8", "AMX int8"), ("asimddp", "Arm dot product")) if flag in flags]
    if found:
        return "int8 dot-product instructions: " + ", ".join(found)
    return "no int8 dot-product instructions" + (" (AVX2 only: 16-bit intermediate sums)" if "avx2" in flags else "")


def goals(timings: dict, accuracy: dict, *, batch_sizes, threads, int8: str = "ORT int8",
          baseline: str = "torch fp32") -> list[str]:
    """Lab 4 (d)'s goals as sentences, one per goal, judged the same way everywhere (notebook and
    benchmark): int8 at least 3x faster than ``baseline`` at the largest batch (the median, with its
    quartiles beside), faster at the smallest (beyond the spread: `latency.Speedup.faster`),
    accuracy within 0.5 points of the baseline's. A timing made on a busy machine is not judged
    (`latency.measure`'s quiet-machine rule): its line says so and neither met nor not met. ``timings``: `latency.measure`'s results;
    ``accuracy``: {name: accuracy}."""
    big, small = max(batch_sizes), min(batch_sizes)
    s = speedup(timings, int8, baseline, big, threads)
    busy = lambda sp, verdict: "" if sp.quiet is False else f": {verdict}"   # str(sp) says "not judged"
    lines = [f"int8 at least 3x faster than {baseline} at batch {big}: {s}"
             + busy(s, "met" if s.median >= 3 else "not met")]
    if small != big:
        t = speedup(timings, int8, baseline, small, threads)
        lines.append(f"int8 faster than {baseline} at batch {small}: {t}"
                     + busy(t, "met" if t.faster else "not met (within the spread)" if t.faster is None else "not met"))
    gap = accuracy[baseline] - accuracy[int8]
    lines.append(f"int8 within 0.5 points of {baseline}'s accuracy: {accuracy[int8]:.2%} against "
                 f"{accuracy[baseline]:.2%} ({abs(gap) * 100:.2f} points {'below' if gap > 0 else 'above' if gap < 0 else 'apart'}): "
                 + ("met" if gap <= 0.005 else "not met"))
    return lines


class Engine(nn.Module):
    """An ONNX Runtime model as a labkit model: ``engine(x)`` takes float images (B, 3, 32, 32) in
    [0, 1] and returns the logits as a torch tensor, so ``train.evaluate(engine, split)`` and
    ``latency.measure({..., "int8": engine})`` take it like any model. The session for the current
    ``torch.get_num_threads()`` is made on first use (the engine's threads are fixed per session,
    and latency.measure sets torch's thread count per setting). CPU only. The one 0-element
    parameter says where it runs; nothing trains."""

    def __init__(self, path):
        super().__init__()
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no ONNX model at {self.path}")
        self.anchor = nn.Parameter(torch.empty(0), requires_grad=False)
        self._sessions = {}
        self.session()                      # a file the engine cannot read fails here, not at the first call

    def session(self, threads: int | None = None):
        _, ort = _onnx()
        threads = torch.get_num_threads() if threads is None else checks.integer("threads", threads, minimum=1)
        if threads not in self._sessions:
            options = ort.SessionOptions()
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
            # no spin-waiting after a run: its threads would keep the cores busy while the next model is timed
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            try:
                self._sessions[threads] = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
            except Exception as e:      # onnxruntime's own exception types (InvalidProtobuf, Fail, ...)
                raise ValueError(f"{self.path} is not a model ONNX Runtime can run ({type(e).__name__}: {e}); it may "
                                 f"be damaged or truncated: write it again (labkit.inference.export / quantize)") from e
        return self._sessions[threads]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            raise ValueError(f"the engine runs on the CPU; got images on {x.device}")
        expected = self.session().get_inputs()[0].shape        # e.g. ['batch', 3, 32, 32]
        fits = x.dim() == len(expected) and all(not isinstance(e, int) or e == n for e, n in zip(expected, x.shape))
        if not x.is_floating_point() or not fits:
            shape = "(" + ", ".join(e if isinstance(e, str) else str(e) for e in expected) + ")"
            raise ValueError(f"{self.path.name} takes float images of shape {shape} in [0, 1]; got a {x.dtype} "
                             f"tensor of shape {tuple(x.shape)}")
        images = np.ascontiguousarray(x.detach().float().numpy())
        if not np.isfinite(images).all():    # int8 would answer confidently from clamped NaN/inf
            raise ValueError("the engine's images hold NaN or infinite values; an int8 model would classify them "
                             "with confidence anyway: check the images (their normalisation, a diverged step)")
        try:
            return torch.from_numpy(self.session().run(["logits"], {"images": images})[0])
        except Exception as e:          # onnxruntime's own exception types, e.g. InvalidArgument
            raise ValueError(f"ONNX Runtime could not run {self.path.name} on images of shape {images.shape} "
                             f"({type(e).__name__}: {e})") from e

    def extra_repr(self) -> str:
        return f"{self.path.name}, ONNX Runtime on the CPU"


class Bf16(nn.Module):
    """``net`` run in bfloat16 as labkit's training computes it: bf16 autocast (weights kept in
    float32, each convolution in bf16) and channels_last, float images in, float32 logits out (the
    conversions included in its time). On a CPU without native bf16 PyTorch emulates it, slowly."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = copy.deepcopy(net).to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):
            return self.net(x.contiguous(memory_format=torch.channels_last)).float()
