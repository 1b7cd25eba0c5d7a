"""Channel pruning (labkit.structured): the smaller model computes exactly what the full-width model
computes with the removed channels' conv2 input weights set to zero."""
import math

import numpy as np
import pytest
import torch

from labkit import checkpoints, costs, models, prune, structured
from labkit.layers import prunable_layers
from labkit.models import ResNet


def _random_resnet(seed=0) -> ResNet:
    """A ResNet-20 with random weights and random batch-norm statistics and affine parameters,
    in eval mode, so that every channel carries a different, non-trivial signal."""
    torch.manual_seed(seed)
    net = models.resnet20()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return net.eval()


def _images(n=4, seed=1):
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("keep", [0.5, 0.25, 0.3, 1.0])
def test_same_function_as_zeroed_conv2_inputs(keep):
    net = _random_resnet()
    small = structured.prune_channels(net, keep)
    zeroed = structured.zero_channels(_random_resnet(), keep)
    x = _images()
    with torch.no_grad():
        torch.testing.assert_close(small(x), zeroed(x), rtol=1e-5, atol=1e-5)
        if keep < 1:   # and it is not the unpruned function
            assert (small(x) - net(x)).abs().max() > 1e-2


@pytest.mark.parametrize("keep", [0.5, 0.3])
def test_smaller_shapes(keep):
    net = _random_resnet()
    small = structured.prune_channels(net, keep)
    full = dict(net.named_modules())
    for name, block in structured.blocks(small):
        planes = full[name].conv2.out_channels
        k = max(1, round(keep * full[name].conv1.out_channels))
        assert block.conv1.weight.shape == (k, full[name].conv1.in_channels, 3, 3)
        assert block.bn1.weight.shape == block.bn1.running_var.shape == (k,)
        assert block.conv2.weight.shape == (planes, k, 3, 3)
        assert block.bn2.weight.shape == (planes,)
    total = sum(p.numel() for p in small.parameters())
    assert total < sum(p.numel() for p in net.parameters())
    assert not prune.masks(small) and isinstance(small, ResNet)


def test_keeps_the_filters_of_largest_l2_norm():
    """Against numpy: the kept channels are the k of largest ||conv1.weight[c]||_2, in order."""
    net = _random_resnet(seed=3)
    kept = structured.kept_channels(net, 0.5)
    small = structured.prune_channels(net, 0.5)
    small_blocks = dict(structured.blocks(small))
    for name, block in structured.blocks(net):
        W = block.conv1.weight.detach().numpy()
        norms = np.sqrt((W.reshape(W.shape[0], -1) ** 2).sum(axis=1))
        k = W.shape[0] // 2
        expected = np.sort(np.argsort(-norms, kind="stable")[:k])
        assert kept[name].tolist() == expected.tolist()
        np.testing.assert_array_equal(small_blocks[name].conv1.weight.detach().numpy(), W[expected])
        W2 = block.conv2.weight.detach().numpy()
        np.testing.assert_array_equal(small_blocks[name].conv2.weight.detach().numpy(), W2[:, expected])


def test_masked_model_is_pruned_on_its_effective_weights_and_left_unchanged():
    net = _random_resnet()
    prune.prune_by_percentage(net, 0.6)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    small = structured.prune_channels(net, 0.5)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    baked = prune.make_permanent(_copy_masked(net))
    torch.testing.assert_close(small(_images()), structured.prune_channels(baked, 0.5)(_images()))
    assert not any(torch.nn.utils.parametrize.is_parametrized(m) for m in small.modules())


def _copy_masked(net):
    fresh = models.resnet20().eval()
    return checkpoints.load(net.state_dict(), fresh)


def test_state_dict_rebuilds_from_inner_widths():
    small = structured.prune_channels(_random_resnet(), 0.25)
    widths = structured.inner_widths(small)
    assert widths == (4, 4, 4, 8, 8, 8, 16, 16, 16)
    rebuilt = ResNet(inner=widths).eval()
    rebuilt.load_state_dict(small.state_dict())         # strict: same keys and shapes
    torch.testing.assert_close(rebuilt(_images()), small(_images()), rtol=0, atol=0)


def test_mode_and_device_are_kept():
    net = _random_resnet().train()
    assert structured.prune_channels(net, 0.5).training
    assert not structured.prune_channels(net.eval(), 0.5).training


def test_block_convs_match_the_weight_count():
    """Unstructured pruning of the block convs at q = 1 - keep leaves as many weights as channel
    pruning with `keep` (keep * inner is an integer for 0.5 and 0.25)."""
    for keep in (0.5, 0.25):
        net = _random_resnet()
        small = structured.prune_channels(net, keep)
        prune.prune_by_percentage(net, 1 - keep, layers=structured.block_convs(net))
        nonzero = sum(int((m.weight != 0).sum()) for _, m in prunable_layers(net))
        assert nonzero == sum(m.weight.numel() for _, m in prunable_layers(small))
    assert len(structured.block_convs(net)) == 18


@pytest.mark.parametrize("keep", [0, -0.1, 1.5, math.nan, True, "0.5", None])
def test_bad_keep(keep):
    with pytest.raises(ValueError, match="keep"):
        structured.prune_channels(_random_resnet(), keep)


def test_bad_model():
    with pytest.raises(ValueError, match="ResNet"):
        structured.prune_channels(torch.nn.Linear(3, 3), 0.5)


def test_zero_channels_refuses_a_parametrized_conv2():
    net = _random_resnet()
    prune.prune_by_percentage(net, 0.5)
    with pytest.raises(ValueError, match="make_permanent"):
        structured.zero_channels(net, 0.5)


def test_resnet_inner_argument_is_checked():
    with pytest.raises(ValueError, match="one width per block"):
        ResNet(inner=(8, 8))
    with pytest.raises(ValueError, match="inner"):
        ResNet(inner=(0,) * 9)
    assert structured.inner_widths(ResNet()) == (16,) * 3 + (32,) * 3 + (64,) * 3


def test_pretrained_channel_pruning(data_root):
    """On the published weights too: same function as the zeroed full-width model."""
    net = models.resnet20(pretrained=True, root=data_root).eval()
    small = structured.prune_channels(net, 0.5)
    zeroed = structured.zero_channels(models.resnet20(pretrained=True, root=data_root).eval(), 0.5)
    with torch.no_grad():
        torch.testing.assert_close(small(_images()), zeroed(_images()), rtol=1e-5, atol=1e-4)


# --- removing the channels that training made zero (Lab 5 (b)) ------------------------------------------

# the channels zeroed below: {block: channels}; stage3.1 loses every one of its 64
ZEROED = {"stage1.0": [0, 5, 15], "stage2.0": [3], "stage2.2": list(range(0, 32, 2)), "stage3.1": list(range(64))}


def _zero_groups(net, which=ZEROED, *, whole_group=True):
    """Zero the Group Lasso groups of `which`: conv1[c], bn1's scale and shift, conv2[:, c] (or only
    conv2[:, c] with whole_group=False)."""
    modules = dict(net.named_modules())
    with torch.no_grad():
        for name, channels in which.items():
            b = modules[name]
            b.conv2.weight[:, channels] = 0
            if whole_group:
                b.conv1.weight[channels] = 0
                b.bn1.weight[channels] = 0
                b.bn1.bias[channels] = 0
    return net


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("whole_group", [True, False])
def test_removing_zero_channels_keeps_the_function(mode, whole_group):
    net = _zero_groups(_random_resnet(), whole_group=whole_group).train(mode == "train")
    small = structured.remove_zero_channels(net)
    live = structured.live_channels(net)
    for name, b in structured.blocks(net):
        dead = set(ZEROED.get(name, []))
        expected = [c for c in range(b.conv1.out_channels) if c not in dead] or [0]   # a block keeps one
        assert live[name].tolist() == expected
    assert structured.inner_widths(small) == tuple(len(i) for i in live.values())
    assert small.training == (mode == "train")
    x = _images(8)
    with torch.no_grad():
        torch.testing.assert_close(small(x), net(x), rtol=1e-5, atol=1e-5)


def test_removing_a_live_channel_changes_the_function():
    """The test above could fail: removing a channel that is not zero changes the outputs."""
    net = _zero_groups(_random_resnet())
    live = structured.live_channels(net)
    fewer = dict(live)
    fewer["stage1.1"] = live["stage1.1"][1:]
    x = _images()
    with torch.no_grad():
        assert not torch.allclose(structured.remove_channels(net, fewer)(x), net(x), rtol=1e-3, atol=1e-3)


def test_zero_channels_removal_counts_params_and_macs_by_hand():
    net = _zero_groups(_random_resnet())
    small = structured.remove_zero_channels(net)
    # a removed inner channel of a block with C_in inputs, C_out outputs at H x W output positions:
    # 9 C_in + 2 + 9 C_out parameters (conv1 filter, bn1 scale and shift, conv2 input slice)
    # 9 C_in H W + 9 C_out H W multiply-accumulates (conv1's output channel, conv2's input channel)
    shape = {"stage1.0": (16, 16, 32), "stage2.0": (16, 32, 16), "stage2.2": (32, 32, 16), "stage3.1": (64, 64, 8)}
    removed = {"stage1.0": 3, "stage2.0": 1, "stage2.2": 16, "stage3.1": 63}    # stage3.1 keeps one channel
    params = sum(n * (9 * c_in + 2 + 9 * c_out) for b, n in removed.items() for c_in, c_out, _ in [shape[b]])
    macs = sum(n * 9 * (c_in + c_out) * hw * hw for b, n in removed.items() for c_in, c_out, hw in [shape[b]])
    assert costs.count_params(net) - costs.count_params(small) == params
    assert costs.count_macs(net) - costs.count_macs(small) == macs
    assert costs.count_macs(net) == 40_551_040                      # ResNet-20's MACs per image


def test_remove_channels_checks_its_indices():
    net = _random_resnet()
    full = {name: torch.arange(b.conv1.out_channels) for name, b in structured.blocks(net)}
    torch.testing.assert_close(structured.remove_channels(net, full)(_images()), net(_images()), rtol=0, atol=0)
    for bad in ({**full, "stage1.0": torch.tensor([], dtype=torch.int64)},
                {**full, "stage1.0": torch.tensor([3, 1])},
                {**full, "stage1.0": torch.tensor([16])},
                {**full, "stage1.0": torch.tensor([0.0, 1.0])},
                {k: v for k, v in full.items() if k != "stage3.2"}):
        with pytest.raises(ValueError, match="kept"):
            structured.remove_channels(net, bad)


def test_removal_works_on_other_block_counts():
    torch.manual_seed(0)
    net = ResNet((1, 2, 1), inner=(4, 4, 3, 5)).eval()
    _zero_groups(net, {"stage2.1": [0, 2]})
    small = structured.remove_zero_channels(net)
    assert structured.inner_widths(small) == (4, 4, 1, 5)
    with torch.no_grad():
        torch.testing.assert_close(small(_images()), net(_images()), rtol=1e-5, atol=1e-5)
