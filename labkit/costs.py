"""What a model costs, counted: parameter entries and multiply-accumulates (MACs) per image.

`count_macs` runs one forward pass under ``torch.utils.flop_counter.FlopCounterMode`` and returns
FLOPs / 2 per image (the counter counts 2 FLOPs per multiply-accumulate of a convolution or matrix
product; batch norm, ReLU, additions and pooling are not counted). A dense kernel multiplies every
zero, so a masked model counts as many MACs as the dense one; for a sparse CSR operand (the layers
of `labkit.sparse_kernels`) the counter gets a formula of its own here, 2 * nnz(W) * columns, so a
CSR model counts only the MACs of its non-zero weights. `count_params` counts parameter entries.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .checks import flag, integer
from .devices import model_device
from .layers import evaluating, prunable_layers

__all__ = ["count_macs", "count_params"]


def _matmul_flops(a: torch.Tensor, b: torch.Tensor) -> int:
    """2 * MACs of a @ b: 2 * nnz(a) * columns(b) for a sparse (CSR) a, else 2 * m * k * n."""
    n = b.shape[-1]
    if a.layout == torch.sparse_csr:
        return 2 * a._nnz() * n
    return 2 * a.shape[0] * a.shape[1] * n


def _mm_flops(a, b, *args, out_val=None, **kwargs) -> int:
    return _matmul_flops(a, b)


def _addmm_flops(bias, a, b, *args, out_val=None, **kwargs) -> int:
    return _matmul_flops(a, b)


_mm_flops._get_raw = _addmm_flops._get_raw = True   # FlopCounterMode passes the tensors themselves
_SPARSE_AWARE = {torch.ops.aten.mm: _mm_flops, torch.ops.aten.addmm: _addmm_flops}

# The input dimensions a convolution takes with a batch: (N, C, L), (N, C, H, W), (N, C, D, H, W).
_CONV_DIMS = {nn.Conv1d: 3, nn.Conv2d: 4, nn.Conv3d: 5}


def count_macs(net: nn.Module, input_shape=(1, 3, 32, 32)) -> float:
    """Multiply-accumulates per image of one forward pass of `net` (eval mode, no grad) on an
    input of `input_shape`, counted by ``torch.utils.flop_counter.FlopCounterMode``: its FLOPs
    of convolutions and matrix products / 2 / batch. A CSR weight counts only its non-zeros.

    `input_shape` starts with the batch dimension N: (N, C, H, W) for a model of Conv2d layers,
    (N, features) for a model of Linear layers. A convolution also accepts an input without it,
    (C, H, W), which would be read here as a batch of C images: it is refused.
    """
    if not isinstance(input_shape, (tuple, list, torch.Size)) or len(input_shape) < 2:
        raise ValueError(f"input_shape must be a tuple (N, ...) that starts with the batch size, "
                         f"e.g. (1, 3, 32, 32), got {input_shape!r}")
    input_shape = tuple(integer("input_shape", d, minimum=1) for d in input_shape)
    for _, module in net.named_modules():
        dims = next((d for cls, d in _CONV_DIMS.items() if isinstance(module, cls)), None)
        if dims is not None and len(input_shape) != dims:
            hint = f"; for one image write {(1, *input_shape)}" if len(input_shape) == dims - 1 else ""
            raise ValueError(f"input_shape must have {dims} dimensions (N, C, ...) for a model of "
                             f"{type(module).__name__} layers, the first the batch size N: got "
                             f"{input_shape!r}{hint}")
    x = torch.zeros(input_shape, device=model_device(net))
    with evaluating(net), torch.no_grad(), FlopCounterMode(display=False, custom_mapping=_SPARSE_AWARE) as counter:
        net(x)
    return counter.get_total_flops() / 2 / input_shape[0]


def count_params(net: nn.Module, *, nonzero: bool = False, weights_only: bool = False) -> int:
    """Entries of all of `net`'s parameters (weights, biases, batch-norm scales and shifts; not the
    batch-norm statistics, which are buffers); nonzero=True counts the non-zero entries only.
    weights_only=True counts the effective weights (after masks) of the Conv2d and Linear layers
    only, the weights that pruning removes."""
    nonzero, weights_only = flag("nonzero", nonzero), flag("weights_only", weights_only)
    with torch.no_grad():
        tensors = [m.weight for _, m in prunable_layers(net)] if weights_only else list(net.parameters())
        if nonzero:
            return int(sum(int((t != 0).sum()) for t in tensors))
        return sum(t.numel() for t in tensors)
