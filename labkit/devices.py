"""The device a run computes on and the number formats it uses there, chosen by capability.

``pick_device()`` takes an explicit device, else ``$LABKIT_DEVICE`` (read once, through
:mod:`labkit.settings`), else CUDA, Apple MPS, the CPU. ``precision="auto"`` means bf16 autocast
where the device computes bf16 natively (CPUs with AVX512-BF16 or AMX, CUDA GPUs with bf16), fp16
autocast with a gradient scaler on older CUDA GPUs, fp32 elsewhere; ``memory_format="auto"`` means
``channels_last`` on the CPU and CUDA (faster convolutions there), contiguous elsewhere.
"""
from __future__ import annotations

import contextlib
import platform

import torch
from torch import nn

from . import settings
from .checks import one_of

__all__ = ["PRECISIONS", "MEMORY_FORMATS", "pick_device", "native_bf16", "resolve_precision",
           "resolve_memory_format", "describe", "autocast", "model_device", "device_name"]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
MEMORY_FORMATS = ("auto", "channels_last", "contiguous")


def pick_device(device=None) -> torch.device:
    """The device to run on: ``device`` if given, else ``$LABKIT_DEVICE``, else CUDA, Apple MPS, CPU.

    An explicit device must exist here: ``cuda`` on a machine without CUDA is a ValueError now,
    not a failure at the first step.
    """
    source = "device argument"
    if not device:
        device, source = settings.device(), "$LABKIT_DEVICE"
    if device:
        allowed = "'cpu', 'cuda', 'cuda:N' or 'mps'"
        try:
            device = torch.device(device)
        except (RuntimeError, TypeError):
            raise ValueError(f"{source} = {device!r} is not a device; use {allowed}") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"{source} asks for {device} but this torch has no usable CUDA GPU "
                             f"(torch {torch.__version__}); use 'cpu'")
        if device.type == "mps" and not _mps_available():
            raise ValueError(f"{source} asks for mps but no Apple GPU is available here; use 'cpu'")
        if device.type not in ("cpu", "cuda", "mps"):     # meta holds no values: nothing would be computed
            raise ValueError(f"{source} = {str(device)!r} is not supported; use {allowed}")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def native_bf16(device) -> bool:
    """Does ``device`` compute bf16 natively (so that bf16 autocast is faster than fp32)?

    CPU: AVX512-BF16 or AMX instructions. CUDA: a GPU with bf16 arithmetic (Ampere or newer),
    emulation excluded. Elsewhere: False.
    """
    device = torch.device(device)
    if device.type == "cpu":
        probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
        return any(probe is not None and probe() for probe in probes)
    if device.type == "cuda":
        try:
            return torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # older torch without the argument
            return torch.cuda.is_bf16_supported()
    return False


def resolve_precision(precision: str, device) -> str:
    """The precision ``"auto"`` means on ``device``: bf16 where native, else fp16 on CUDA, else fp32.

    An explicit ``"fp32"``, ``"bf16"`` or ``"fp16"`` is returned as it is (fp16 is CUDA-only).
    """
    one_of("precision", precision, PRECISIONS)
    device = torch.device(device)
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"precision 'fp16' (autocast with a gradient scaler) is for CUDA GPUs; on "
                         f"{device.type} use 'bf16' or 'fp32' (or 'auto')")
    if precision != "auto":
        return precision
    if native_bf16(device):
        return "bf16"
    return "fp16" if device.type == "cuda" else "fp32"


def resolve_memory_format(memory_format: str, device) -> torch.memory_format:
    """``"auto"``: channels_last on the CPU and CUDA (faster convolutions there), contiguous elsewhere."""
    one_of("memory_format", memory_format, MEMORY_FORMATS)
    if memory_format == "auto":
        memory_format = "channels_last" if torch.device(device).type in ("cpu", "cuda") else "contiguous"
    return torch.channels_last if memory_format == "channels_last" else torch.contiguous_format


def describe(config, device) -> str:
    """What a run with ``config`` (a ``labkit.train.TrainConfig``: its ``precision`` and
    ``memory_format``) on ``device`` computes in, e.g. 'bf16 autocast, channels_last'."""
    precision = resolve_precision(config.precision, device)
    fmt = resolve_memory_format(config.memory_format, device)
    number = "fp32" if precision == "fp32" else f"{precision} autocast"
    if precision == "fp16":
        number += " + gradient scaler"
    layout = "channels_last" if fmt == torch.channels_last else "contiguous"
    return f"{number}, {layout}"


def autocast(device, precision: str):
    """The autocast context of a resolved ``precision`` ('fp32': none) on ``device``."""
    if precision == "fp32":
        return contextlib.nullcontext()
    one_of("precision", precision, ("bf16", "fp16"))
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def model_device(net: nn.Module) -> torch.device:
    """The device holding the model's parameters."""
    try:
        return next(net.parameters()).device
    except StopIteration:
        raise ValueError("the model has no parameters, so it has no device to run on") from None


def device_name(device) -> str:
    """The device as a run's header names it: 'cpu (x86_64, 8 threads)', 'cuda (NVIDIA H100)';
    None: numpy on the CPU (Lab 1)."""
    if device is None:
        return f"numpy on the CPU ({platform.processor() or platform.machine()})"
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"
    return device.type
