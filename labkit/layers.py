"""The layers of a model that labkit prunes and quantizes, and the parametrizations on their
weights (``torch.nn.utils.parametrize``). A generic mechanism: it imports none of its users.

A pruned and/or quantized layer's ``weight`` is computed from its stored Parameter ``original``
by a list of parametrizations: the pruning mask first (``labkit.prune.Mask``), then a quantizer
(``labkit.quant.Quantize``). This module finds layers, the stored weight and a parametrization of a
given class, and adds and removes them (`add`, `remove`): `prune` and `quant` decide what the
parametrizations do.

A pruning schedule's masks, handed down. A parametrization that wants the keep mask a pruning
schedule last decided (``labkit.quant.Quantize`` with ``zero="schedule"``) derives from
`FollowsSchedule`; the schedule (``labkit.prune.IterativePruning``) calls `hand_schedule_mask` on
each layer it pruned. So the two meet here, and neither imports the other.

Copies are independent. ``torch.nn.utils.parametrize`` gives a parametrized layer a class made for
it (``ParametrizedConv2d``, holding the ``weight`` property), and ``copy.deepcopy`` would share
that class between the copies, so removing the last parametrization of one copy (which deletes the
property from the class) would break the other. A layer parametrized by `add` is deep-copied with
a class of its own, and `remove` first gives the layer a class of its own in any case.
"""
from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.utils import parametrize

__all__ = ["prunable_layers", "select", "original", "parametrizations", "find", "add", "remove", "baked",
           "evaluating", "FollowsSchedule", "hand_schedule_mask"]


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


def add(module: nn.Module, parametrization: nn.Module, *, first: bool = False) -> None:
    """Add ``parametrization`` to the layer's weight: last in its list (it sees the output of the
    ones before it), or ``first``. The stored Parameter stays the same object."""
    if first and parametrize.is_parametrized(module, "weight"):
        module.parametrizations.weight.insert(0, parametrization)
    else:
        parametrize.register_parametrization(module, "weight", parametrization)
    cls = type(module)
    if "__deepcopy__" in cls.__dict__:       # parametrize's own: it keeps the class shared
        cls.__deepcopy__ = _deepcopy_with_own_class


def remove(module: nn.Module, parametrization: nn.Module | None = None, *, bake: bool = False) -> None:
    """Remove ``parametrization`` from the layer's weight, or every one of them (None).

    The last one removed, the weight is a plain Parameter again, the same object as before: with
    ``bake`` it holds the effective weight (the parametrizations applied), without it the stored
    weight `original`. ``bake`` with one parametrization among others is refused (the others
    would then apply to a baked weight). Other copies of the layer are not affected."""
    plist = parametrizations(module)
    if parametrization is not None and not any(p is parametrization for p in plist):
        raise ValueError(f"{type(parametrization).__name__} is not a parametrization of this layer's weight")
    if parametrization is None or len(plist) == 1:
        _own_class(module)
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=bake)
    elif bake:
        raise ValueError("remove(..., bake=True) bakes every parametrization of the weight; pass "
                         "parametrization=None")
    else:
        del module.parametrizations.weight[[i for i, p in enumerate(plist) if p is parametrization][0]]


class FollowsSchedule(nn.Module):
    """Base class of a parametrization that takes a pruning schedule's current keep mask (bool of
    the weight's shape, True = kept) through `follow`, e.g. to quantize the pruned positions to
    exactly 0 while the schedule lets them regrow (``labkit.quant.Quantize``, ``zero="schedule"``)."""

    def follow(self, keep: torch.Tensor) -> None:
        raise NotImplementedError


def hand_schedule_mask(module: nn.Module, keep: torch.Tensor) -> int:
    """Give ``keep`` (the keep mask a pruning schedule just decided for this layer) to every
    `FollowsSchedule` parametrization on the layer's weight; returns how many took it."""
    takers = [p for p in parametrizations(module) if isinstance(p, FollowsSchedule)]
    for p in takers:
        p.follow(keep)
    return len(takers)


def _fresh_class(cls: type) -> type:
    """A copy of a class injected by parametrize (same base, same properties), for one module."""
    body = {k: v for k, v in cls.__dict__.items() if k not in ("__dict__", "__weakref__")}
    return type(cls.__name__, cls.__bases__, body)


def _own_class(module: nn.Module) -> None:
    if parametrize.is_parametrized(module):
        module.__class__ = _fresh_class(type(module))


def _deepcopy_with_own_class(self, memo):
    """``copy.deepcopy`` of a parametrized layer: the copy gets a class of its own."""
    replica = object.__new__(_fresh_class(type(self)))
    memo[id(self)] = replica
    replica.__dict__ = copy.deepcopy(self.__dict__, memo)
    return replica


def baked(net: nn.Module) -> nn.Module:
    """A deep copy of ``net`` without masks or quantizers, holding its effective weights as plain
    float Parameters (what its forward pass computes with). ``net`` is not changed."""
    plain = copy.deepcopy(net)
    for module in plain.modules():
        if parametrizations(module):
            remove(module, bake=True)
    return plain


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
