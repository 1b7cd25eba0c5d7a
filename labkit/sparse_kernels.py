"""Sparse (CSR) execution of a pruned model (Lab 4 (b)): convolution and linear layers that do work
only for the non-zero weights.

`CSRConv2d` and `CSRLinear` subclass the float layers (as timm's ``StdConv2d`` subclasses
``nn.Conv2d``): same constructor, same ``weight`` Parameter and state dict, but the forward pass
multiplies with a CSR copy of the weight (``torch.sparse`` compressed sparse rows). A convolution
is a matrix product after im2col:

    cols = im2col(x)        (C_in * kh * kw, B * H_out * W_out)   the unfolded input patches
    out  = W_csr @ cols     (C_out, B * H_out * W_out)            W reshaped to (C_out, C_in*kh*kw)

the same unfolding as ``F.unfold`` (and the same numbers), written as one strided copy into the
layout the product needs. `to_csr(net)` returns a copy of a (masked) model with every Conv2d and
Linear replaced by its CSR version. The CSR copy is made at conversion: the layers are for
inference, and `refresh()` rebuilds it after the weight is changed. How fast they run is
`labkit.latency`'s question; how many multiply-accumulates they do, `labkit.costs`'s.
"""
from __future__ import annotations

import contextlib
import copy
import warnings

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["im2col", "CSRConv2d", "CSRLinear", "to_csr"]


def im2col(x: torch.Tensor, kernel_size, stride=1, padding=0, dilation=1) -> torch.Tensor:
    """(B, C, H, W) -> (C*kh*kw, B*H_out*W_out): column b*H_out*W_out + i*W_out + j holds the
    input patch of output pixel (i, j) of image b, row c*kh*kw + u*kw + v its element (c, u, v)
    (the order of ``weight.flatten(1)``). Equal to ``F.unfold(x, ...)`` transposed to that layout.
    """
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    dh, dw = _pair(dilation)
    B, C, H, W = x.shape
    xp = F.pad(x, (pw, pw, ph, ph)).contiguous()           # (B, C, H + 2ph, W + 2pw)
    Ho, Wo = _out_len(H, kh, sh, ph, dh), _out_len(W, kw, sw, pw, dw)
    sB, sC, sH, sW = xp.stride()
    # A view (C, kh, kw, B, Ho, Wo) of the padded input: no copy until the reshape below.
    patches = xp.as_strided((C, kh, kw, B, Ho, Wo), (sC, sH * dh, sW * dw, sB, sH * sh, sW * sw))
    return patches.reshape(C * kh * kw, B * Ho * Wo)


def _pair(v) -> tuple[int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _out_len(n: int, k: int, stride: int, pad: int, dilation: int) -> int:
    """Output length of a convolution along one axis (as nn.Conv2d's docs state it)."""
    return (n + 2 * pad - dilation * (k - 1) - 1) // stride + 1


@contextlib.contextmanager
def _csr_beta_quiet():
    """Silences PyTorch's "Sparse CSR tensor support is in beta state" warning, which a new CSR
    tensor raises and which says nothing about our use of it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        yield


class _CSRWeight:
    """Holds the CSR parts of ``weight.flatten(1)`` as three plain buffers (so that the layer
    moves with ``.to()`` and deep-copies; a CSR tensor itself does neither) and assembles the
    CSR matrix, which costs a few microseconds, in every forward pass."""

    def refresh(self) -> None:
        """(Re)build the CSR copy from the current ``weight`` (after changing the weight)."""
        with _csr_beta_quiet():
            csr = self.weight.detach().flatten(1).to_sparse_csr()  # (C_out, C_in*kh*kw) or (out, in)
        for name, t in (("crow", csr.crow_indices()), ("col", csr.col_indices()), ("val", csr.values())):
            self.register_buffer(f"csr_{name}", t.clone(), persistent=False)

    def weight_csr(self) -> torch.Tensor:
        shape = (self.weight.shape[0], self.weight[0].numel())
        with _csr_beta_quiet():
            # Built by to_sparse_csr in refresh(): valid, so the invariant checks are skipped.
            return torch.sparse_csr_tensor(self.csr_crow, self.csr_col, self.csr_val, shape,
                                           check_invariants=False)

    @property
    def nnz(self) -> int:
        return self.csr_val.numel()

    @classmethod
    def _copy_weights(cls, new, layer):
        with torch.no_grad():
            new.weight.copy_(layer.weight)  # the effective weight: a mask or quantizer is baked in
            if layer.bias is not None:
                new.bias.copy_(layer.bias)
        new.weight.requires_grad_(False)
        new.refresh()
        return new.train(layer.training)


class CSRConv2d(_CSRWeight, nn.Conv2d):
    """nn.Conv2d run as im2col + CSR sparse matrix product: out = W_csr @ im2col(x) (+ bias).

    Same arguments as nn.Conv2d (groups=1 and padding_mode='zeros' only). For inference: the
    weight is a frozen Parameter, the CSR copy is built at construction (`refresh` rebuilds it).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.groups != 1 or self.padding_mode != "zeros" or isinstance(self.padding, str):
            raise ValueError(f"CSRConv2d supports groups=1, padding_mode='zeros' and numeric "
                             f"padding, got groups={self.groups}, padding_mode={self.padding_mode!r}, "
                             f"padding={self.padding!r}")
        self.refresh()

    @classmethod
    def from_dense(cls, conv: nn.Conv2d) -> "CSRConv2d":
        """A CSRConv2d with `conv`'s configuration and effective weight."""
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                  padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                  bias=conv.bias is not None, padding_mode=conv.padding_mode,
                  device=conv.weight.device, dtype=conv.weight.dtype)
        return cls._copy_weights(new, conv)

    def forward(self, x):                                   # (B, C_in, H, W)
        B, _, H, W = x.shape
        Ho, Wo = (_out_len(*a) for a in zip((H, W), self.kernel_size, self.stride, self.padding, self.dilation))
        cols = im2col(x, self.kernel_size, self.stride, self.padding, self.dilation)
        out = self.weight_csr() @ cols                      # (C_out, B * Ho * Wo)
        if self.bias is not None:
            out = out + self.bias[:, None]
        out = out.view(self.out_channels, B, Ho, Wo)
        return out.transpose(0, 1).contiguous()             # (B, C_out, Ho, Wo)


class CSRLinear(_CSRWeight, nn.Linear):
    """nn.Linear run as a CSR sparse matrix product: out = (W_csr @ x^T)^T + bias. For inference."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.refresh()

    @classmethod
    def from_dense(cls, linear: nn.Linear) -> "CSRLinear":
        new = cls(linear.in_features, linear.out_features, bias=linear.bias is not None,
                  device=linear.weight.device, dtype=linear.weight.dtype)
        return cls._copy_weights(new, linear)

    def forward(self, x):                                   # (B, in)
        out = self.weight_csr() @ x.reshape(-1, self.in_features).T   # (out, B)
        if self.bias is not None:
            out = out + self.bias[:, None]
        return out.T.reshape(*x.shape[:-1], self.out_features)      # (B, out)


def to_csr(net: nn.Module) -> nn.Module:
    """A copy of `net` in which every nn.Conv2d and nn.Linear is replaced by `CSRConv2d` /
    `CSRLinear` holding its effective weight (after any mask or quantizer): the same function,
    computed with sparse kernels. `net` is not changed; the copy is in eval mode."""
    net = copy.deepcopy(net)
    for name, module in list(net.named_modules()):
        if isinstance(module, (CSRConv2d, CSRLinear)):
            continue
        if isinstance(module, nn.Conv2d):
            new = CSRConv2d.from_dense(module)
        elif isinstance(module, nn.Linear):
            new = CSRLinear.from_dense(module)
        else:
            continue
        parent, _, leaf = name.rpartition(".")
        setattr(net.get_submodule(parent), leaf, new)
    return net.eval()
