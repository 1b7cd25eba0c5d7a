"""The layers of a model that labkit prunes and quantizes, and the parametrizations on their
weights (``torch.nn.utils.parametrize``). A generic mechanism: it imports none of its users.

A pruned and/or quantized layer's ``weight`` is computed from its stored Parameter ``original``
by a list of parametrizations: the pruning mask first (``labkit.prune.Mask``), then a quantizer
(``labkit.quant.Quantize``). This module finds layers, the stored weight and a parametrization of a
given class; `prune` and `quant` decide what the parametrizations do.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.utils import parametrize

__all__ = ["prunable_layers", "select", "original", "parametrizations", "find", "evaluating"]


def prunable_layers(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every nn.Conv2d and nn.Linear of ``net`` as (name, module), in model order."""
    return [(name, m) for name, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def select(net: nn.Module, layers=None, *, what: str = "prune") -> list[tuple[str, nn.Module]]:
    """(name, module) pairs: ``layers`` (names of ``net``'s modules, or (name, module) pairs; one
    name alone is taken as a list of one) or, when None, `prunable_layers`. Every one must have a
    weight tensor. ``what`` names the operation in error messages."""
    if layers is None:
        pairs = prunable_layers(net)
    else:
        if isinstance(layers, str):
            layers = [layers]      # not read letter by letter
        if not isinstance(layers, Iterable):
            raise ValueError(f"layers must be a list of layer names or (name, module) pairs, got {layers!r}")
        modules = dict(net.named_modules())
        pairs = []
        for item in layers:
            if isinstance(item, str):
                if item not in modules:
                    raise ValueError(f"layer {item!r} is not a module of the model; "
                                     f"prunable layers: {[n for n, _ in prunable_layers(net)]}")
                item = (item, modules[item])
            if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], nn.Module)):
                raise ValueError(f"layers: {item!r} is neither a layer name nor a (name, module) pair")
            pairs.append(item)
    if not pairs:
        raise ValueError(f"the model has no layer to {what} (no nn.Conv2d or nn.Linear)")
    for name, module in pairs:
        if not isinstance(getattr(module, "weight", None), torch.Tensor):
            raise ValueError(f"layer {name!r} ({type(module).__name__}) has no weight tensor to {what}")
    return pairs


def original(module: nn.Module) -> torch.Tensor:
    """The stored weight Parameter: the same object before and after pruning or quantizing."""
    if parametrize.is_parametrized(module, "weight"):
        return module.parametrizations.weight.original
    return module.weight


def parametrizations(module: nn.Module) -> list[nn.Module]:
    """The parametrizations on the layer's weight, in the order they apply (empty: a plain weight)."""
    if not parametrize.is_parametrized(module, "weight"):
        return []
    return list(module.parametrizations.weight)


def find(module: nn.Module, kind: type) -> nn.Module | None:
    """The first parametrization of class ``kind`` on the layer's weight, or None."""
    return next((p for p in parametrizations(module) if isinstance(p, kind)), None)


@contextlib.contextmanager
def evaluating(net: nn.Module):
    """``with evaluating(net):`` the model in eval mode, its train/eval mode restored afterwards
    (also when the body raises)."""
    was_training = net.training
    net.eval()
    try:
        yield net
    finally:
        net.train(was_training)
