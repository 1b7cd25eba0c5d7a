"""Structured (channel) pruning of ResNet-20's residual blocks (Lab 4 (c)).

Unstructured pruning zeroes single weights: the tensors keep their shapes and dense kernels
still multiply every zero. Channel pruning removes whole channels, so the tensors shrink and
ordinary dense kernels do less work.

Which channels. Inside a basic block, relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), the
`inner` channels between the two convs are free to remove: the block's input and output (and so
the shortcut and every other block) keep their widths. Removing inner channel c deletes

    conv1.weight[c, :, :, :]   (its filter: output channel c of conv1),
    bn1.{weight, bias, running_mean, running_var}[c],
    conv2.weight[:, c, :, :]   (every filter's input channel c).

The channels are ranked by the L2 norm of their conv1 filter, ||conv1.weight[c]||_2 (Li et al.,
"Pruning filters for efficient ConvNets", ICLR 2017, rank by the L1 norm; same idea), and the
k = max(1, round(keep * inner)) largest are kept in every block, in their original order.

What is exact. With the removed channels' input weights of conv2 set to zero (conv2.weight[:, c]
= 0) the full-width model computes exactly the function of the smaller one: channel c still
flows through conv1, bn1 and the ReLU, but conv2 multiplies it by zero. So channel pruning
equals `zero_channels` (the same ranking, applied as zeros) followed by `prune_channels`; the
accuracy drop comes from dropping what those channels contributed to conv2, and fine-tuning
recovers it.

The result is a plain `labkit.models.ResNet(inner=widths)`: no masks, smaller tensors, the same
state-dict keys, so it trains, saves and loads like any ResNet.

Channels that training made zero (Lab 5 (b), ``labkit.group_lasso``). `live_channels` finds the inner
channels whose conv2 input slice conv2.weight[:, c] is not all zero; the others contribute exactly
nothing to the block's output, whatever conv1 and bn1 do with them (in eval mode and in train mode:
batch norm normalises each channel on its own). `remove_zero_channels` removes them with the same
surgery (`remove_channels`, which `prune_channels` uses too), so the smaller model computes what the
zeroed one computes. A Group Lasso zero group (conv1[c], bn1's scale and shift, conv2[:, c] all 0)
is such a channel.
"""
from __future__ import annotations

import torch
from torch import nn

from . import checks
from .layers import parametrizations
from .models import BasicBlock, ResNet

__all__ = ["blocks", "block_convs", "channel_norms", "kept_channels", "inner_widths", "prune_channels",
           "zero_channels", "live_channels", "remove_channels", "remove_zero_channels"]


def _check_keep(keep) -> float:
    hint = "; it is the fraction of inner channels to keep, > 0 (e.g. 0.5 keeps half of them)"
    if checks.fraction("keep", keep, hint=hint) == 0:
        raise ValueError(f"keep must be a fraction in (0, 1], got {keep!r}{hint}")
    return float(keep)


def _check_resnet(net) -> ResNet:
    if not isinstance(net, ResNet):
        raise ValueError(f"channel pruning needs a labkit.models.ResNet (e.g. models.resnet20()), "
                         f"got {type(net).__name__}")
    return net


def blocks(net: ResNet) -> list[tuple[str, BasicBlock]]:
    """Every residual block of `net` as (name, block), in model order: stage1.0, ..., stage3.2."""
    return [(name, m) for name, m in _check_resnet(net).named_modules() if isinstance(m, BasicBlock)]


def block_convs(net: ResNet) -> list[str]:
    """Names of the 18 convs inside the blocks (stage1.0.conv1, stage1.0.conv2, ...): the layers
    channel pruning shrinks. Unstructured pruning of these layers alone at q = 1 - keep
    (``prune.prune_by_percentage(net, 1 - keep, layers=block_convs(net))``) removes as many
    weights per layer as channel pruning with `keep` (up to rounding of keep * inner)."""
    return [f"{name}.{conv}" for name, _ in blocks(net) for conv in ("conv1", "conv2")]


def inner_widths(net: ResNet) -> tuple[int, ...]:
    """The inner width of every block (conv1's output channels), in model order:
    ``ResNet(inner=inner_widths(net))`` has `net`'s shapes."""
    return tuple(b.conv1.out_channels for _, b in blocks(net))


def channel_norms(net: ResNet) -> dict[str, torch.Tensor]:
    """{block name: (inner,) tensor of ||conv1.weight[c]||_2}, the L2 norm of each inner channel's
    filter. The effective weight is used (``conv1.weight``: after a pruning mask or a quantizer)."""
    with torch.no_grad():
        return {name: b.conv1.weight.detach().flatten(1).norm(dim=1) for name, b in blocks(net)}


def kept_channels(net: ResNet, keep: float) -> dict[str, torch.Tensor]:
    """{block name: sorted int64 indices of the k = max(1, round(keep * inner)) inner channels
    with the largest conv1-filter L2 norm}. Ties go to the lower index (a stable sort)."""
    keep = _check_keep(keep)
    kept = {}
    for name, norms in channel_norms(net).items():
        k = max(1, round(keep * norms.numel()))
        order = torch.sort(norms, descending=True, stable=True).indices  # (inner,)
        kept[name] = torch.sort(order[:k]).values                          # (k,) in channel order
    return kept


def zero_channels(net: ResNet, keep: float) -> ResNet:
    """In place: zero conv2's input weights (conv2.weight[:, c]) of the inner channels that
    `prune_channels(net, keep)` would remove. The model keeps its shapes and computes exactly
    what the channel-pruned one computes. Needs plain (unparametrized) conv2 weights. Returns net.
    """
    kept = kept_channels(net, keep)
    with torch.no_grad():
        for name, b in blocks(net):
            if parametrizations(b.conv2):
                raise ValueError(f"{name}.conv2 carries a parametrization (a mask or quantizer); "
                                 f"zero_channels writes its weight: bake it first "
                                 f"(labkit.prune.make_permanent)")
            drop = torch.ones(b.conv2.in_channels, dtype=torch.bool, device=b.conv2.weight.device)
            drop[kept[name]] = False
            b.conv2.weight[:, drop] = 0.0
    return net


def prune_channels(net: ResNet, keep: float) -> ResNet:
    """A new, physically smaller ResNet with a fraction `keep` of every block's inner channels:
    those with the largest conv1-filter L2 norm (`kept_channels`).

    Returns ``ResNet(inner=widths)`` on `net`'s device and in its train/eval mode, holding
    `net`'s effective weights (a pruning mask or quantizer is baked in: the result has plain
    Parameters) with conv1's rows, bn1's entries and conv2's input channels of the removed
    channels deleted; every other tensor (stem, bn2, fc, normalisation buffers) is copied.
    `net` is not changed. keep = 1 gives a plain copy.
    """
    return remove_channels(net, kept_channels(_check_resnet(net), keep))


def live_channels(net: ResNet) -> dict[str, torch.Tensor]:
    """{block name: sorted int64 indices of the inner channels c whose conv2 input slice
    conv2.weight[:, c] (the effective weight: after a mask or quantizer) has a non-zero entry}. The
    other channels never reach the block's output. A block whose every channel is dead keeps its
    channel 0 (a ResNet block needs one; it is zero, so the function is the same)."""
    live = {}
    with torch.no_grad():
        for name, b in blocks(_check_resnet(net)):
            W = b.conv2.weight.detach()                                   # (C_out, inner, 3, 3)
            idx = (W.transpose(0, 1).flatten(1) != 0).any(dim=1).nonzero().flatten()
            live[name] = idx if idx.numel() else torch.zeros(1, dtype=torch.int64, device=W.device)
    return live


def remove_zero_channels(net: ResNet) -> ResNet:
    """A new, physically smaller ResNet without the inner channels that contribute nothing
    (`live_channels`: conv2.weight[:, c] all zero, e.g. a Group Lasso zero group); it computes what
    `net` computes, to float rounding. `net` is not changed. See `remove_channels`."""
    return remove_channels(net, live_channels(net))


def remove_channels(net: ResNet, kept: dict[str, torch.Tensor]) -> ResNet:
    """The channel surgery: a new ResNet holding only the inner channels ``kept[block]`` (int64
    indices in increasing order, at least one per block, every block named) of each block.

    Returns ``ResNet(inner=widths)`` on `net`'s device and in its train/eval mode, holding
    `net`'s effective weights (a pruning mask or quantizer is baked in: the result has plain
    Parameters) with conv1's rows, bn1's entries and conv2's input channels of the removed
    channels deleted; every other tensor (stem, bn2, fc, normalisation buffers) is copied.
    `net` is not changed.
    """
    names = [name for name, _ in blocks(_check_resnet(net))]
    if not isinstance(kept, dict) or sorted(kept) != sorted(names):
        raise ValueError(f"kept must be a dict {{block name: channel indices}} naming every block {names}, "
                         f"got {sorted(kept) if isinstance(kept, dict) else type(kept).__name__}")
    for name, b in blocks(net):
        idx = kept[name]
        if (not isinstance(idx, torch.Tensor) or idx.dim() != 1 or idx.numel() == 0 or idx.is_floating_point()
                or bool((idx[1:] <= idx[:-1]).any()) or int(idx.min()) < 0 or int(idx.max()) >= b.conv1.out_channels):
            raise ValueError(f"kept[{name!r}] must be a non-empty 1-d integer tensor of increasing channel "
                             f"indices in [0, {b.conv1.out_channels}), got {idx!r}")
    kept = {name: kept[name] for name in names}               # model order
    device = next(net.parameters()).device
    num_blocks = tuple(len(stage) for stage in (net.stage1, net.stage2, net.stage3))
    small = ResNet(num_blocks, inner=[len(i) for i in kept.values()], num_classes=net.fc.out_features).to(device)
    old, new = dict(net.named_modules()), dict(small.named_modules())
    block_names = set(kept)
    with torch.no_grad():
        small.mean.copy_(net.mean)
        small.std.copy_(net.std)
        for name, m in new.items():
            parent, _, leaf = name.rpartition(".")
            idx = kept.get(parent) if parent in block_names else None
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                W = old[name].weight.detach()                 # effective weight: mask, quantizer baked in
                if idx is not None and leaf == "conv1":
                    W = W[idx]                                # (k, C_in, 3, 3): keep these filters
                elif idx is not None and leaf == "conv2":
                    W = W[:, idx]                             # (C_out, k, 3, 3): their inputs only
                m.weight.copy_(W)
                if m.bias is not None:
                    m.bias.copy_(old[name].bias)
            elif isinstance(m, nn.BatchNorm2d):
                src = old[name]
                sel = idx if idx is not None and leaf == "bn1" else slice(None)
                for key in ("weight", "bias", "running_mean", "running_var"):
                    getattr(m, key).copy_(getattr(src, key)[sel])
                m.num_batches_tracked.copy_(src.num_batches_tracked)
    return small.train(net.training)
