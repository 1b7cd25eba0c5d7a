"""labkit.sparse_kernels: im2col equals F.unfold, the CSR layers equal the dense masked ones, a CSR
model equals the masked model it came from."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from labkit import models, prune, sparse_kernels
from labkit.layers import prunable_layers


@pytest.mark.parametrize("kw", [dict(), dict(stride=2), dict(padding=0), dict(padding=2, dilation=2),
                                dict(bias=True, stride=(2, 1), padding=(1, 0)), dict(kernel_size=1)])
def test_csr_conv_equals_masked_conv(kw):
    torch.manual_seed(0)
    kw = {"kernel_size": 3, "padding": 1, "bias": False} | kw
    conv = nn.Conv2d(6, 5, **kw)
    prune.prune_by_percentage(conv, 0.7, layers=[("", conv)])  # a masked layer, as in the labs
    sparse = sparse_kernels.CSRConv2d.from_dense(conv)
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
        torch.testing.assert_close(sparse_kernels.im2col(x, **kw), expected, rtol=0, atol=0)


def test_csr_linear_equals_masked_linear():
    torch.manual_seed(0)
    lin = nn.Linear(20, 7)
    prune.prune_by_percentage(lin, 0.9, layers=[("", lin)])
    sparse = sparse_kernels.CSRLinear.from_dense(lin)
    x = torch.randn(5, 20)
    torch.testing.assert_close(sparse(x), lin(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("q", [0.5, 0.95])
def test_to_csr_model_equals_masked_model(q):
    torch.manual_seed(0)
    net = models.resnet20()
    prune.prune_by_percentage(net, q)
    net.eval()
    csr = sparse_kernels.to_csr(net)
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(csr(x), net(x), rtol=1e-4, atol=1e-4)
    layers = prunable_layers(csr)
    assert len(layers) == 20 and all(isinstance(m, (sparse_kernels.CSRConv2d, sparse_kernels.CSRLinear)) for _, m in layers)
    assert isinstance(prunable_layers(net)[0][1], nn.Conv2d)    # the original is untouched
    assert not isinstance(prunable_layers(net)[0][1], sparse_kernels.CSRConv2d)
    twin = copy.deepcopy(csr).to(torch.float64)                       # copies and moves
    torch.testing.assert_close(twin(x.double()).float(), csr(x), rtol=1e-4, atol=1e-4)


def test_csr_conv_refuses_groups():
    with pytest.raises(ValueError, match="groups"):
        sparse_kernels.CSRConv2d(4, 4, 3, groups=2)
