"""labkit.costs: FlopCounterMode's MACs equal a count from the layer shapes (dense kernels count the
zeros, CSR ones do not), parameter counts, and input shapes that would be miscounted refused."""
import pytest
import torch
from torch import nn

from labkit import costs, models, prune, sparse_kernels, structured
from labkit.layers import prunable_layers


def _macs_from_shapes(net, nonzero=False) -> int:
    """MACs per image from each layer's shapes: output positions x (weights per output), for every
    Conv2d and Linear; with nonzero=True only the non-zero weights count."""
    outputs, hooks = {}, []
    for name, m in prunable_layers(net):
        hooks.append(m.register_forward_hook(lambda m, i, o, name=name: outputs.__setitem__(name, o.shape)))
    with torch.no_grad():
        net.eval()(torch.zeros(1, 3, 32, 32))
    for h in hooks:
        h.remove()
    total = 0
    for name, m in prunable_layers(net):
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
    macs = costs.count_macs(net)
    assert macs == _macs_from_shapes(net)
    assert round(macs / 1e6, 2) == 40.55                      # the figure of the issue, per image
    assert costs.count_macs(net, (4, 3, 32, 32)) == macs       # per image, whatever the batch


@pytest.mark.parametrize("keep", [0.5, 0.25])
def test_channel_pruned_macs(keep):
    small = structured.prune_channels(models.resnet20(), keep)
    assert costs.count_macs(small) == _macs_from_shapes(small)
    assert costs.count_macs(small) < costs.count_macs(models.resnet20())


def test_masked_counts_dense_macs_and_csr_counts_nonzeros():
    net = models.resnet20()
    prune.prune_by_percentage(net, 0.8)
    assert costs.count_macs(net) == _macs_from_shapes(net)     # dense kernels multiply the zeros
    csr = sparse_kernels.to_csr(net)
    assert costs.count_macs(csr) == _macs_from_shapes(net, nonzero=True)


def test_count_params():
    net = models.resnet20()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.bias.uniform_(0.1, 0.2)                      # non-zero, as after training
    weights = sum(m.weight.numel() for _, m in prunable_layers(net))
    bn = sum(2 * m.num_features for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    assert costs.count_params(net) == weights + bn + net.fc.bias.numel()
    prune.prune_by_percentage(net, 0.8)
    zeros = sum(prune.sparsity(net).zeros.values())
    assert costs.count_params(net, nonzero=True) == weights - zeros + bn + net.fc.bias.numel()
    assert costs.count_params(net, weights_only=True) == weights
    assert costs.count_params(net, nonzero=True, weights_only=True) == weights - zeros


def test_bad_input_shape():
    with pytest.raises(ValueError, match="input_shape"):
        costs.count_macs(models.resnet20(), (0, 3, 32, 32))


def test_shape_without_batch_dimension_refused():
    """Issue 14 #8: (3, 32, 32) ran as an unbatched input and was divided by 3 'images', reporting a
    third of the true count. A conv net needs (N, C, H, W)."""
    net = models.resnet20()
    with pytest.raises(ValueError, match=r"4 dimensions \(N, C, \.\.\.\).*\(1, 3, 32, 32\)"):
        costs.count_macs(net, (3, 32, 32))
    with pytest.raises(ValueError, match="batch size"):
        costs.count_macs(nn.Linear(4, 2), (4,))
    with pytest.raises(ValueError, match="input_shape"):
        costs.count_macs(net, 32)
    assert costs.count_macs(nn.Linear(4, 2), (3, 4)) == 8           # (N, features): per image
    conv = nn.Conv1d(2, 3, 3)
    assert costs.count_macs(conv, (2, 2, 10)) == 3 * 2 * 3 * 8      # outputs x weights per output
    with pytest.raises(ValueError, match="3 dimensions"):
        costs.count_macs(conv, (2, 10))


def test_count_params_flags_checked():
    with pytest.raises(ValueError, match="nonzero"):
        costs.count_params(nn.Linear(2, 2), nonzero="yes")
