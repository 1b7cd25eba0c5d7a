"""Saving and loading a pruned and/or quantized model: one file, one loader.

A checkpoint is the model's ``state_dict()`` written with ``torch.save``: the stored weights, the
pruning masks (``<layer>.parametrizations.weight.0.mask``, ``labkit.prune``) and the quantizers'
settings (``<layer>.parametrizations.weight.<i>._extra_state``, ``labkit.quant``: bits, scheme,
the zero option and, for ``zero="schedule"``, the schedule's mask). A plain
state dict (a dense model, ``train.SaveBest``'s file) is a checkpoint too.

`save` writes atomically (``labkit.files``): a save that fails (a full disk, Ctrl-C) leaves the
previous file as it was. It refuses a model whose checkpoint `load` could not restore.

`load` restores masks, quantizers and weights in that one place. It checks everything first, on a
copy of the target: a checkpoint that does not fit (missing, unexpected or wrong-shape keys, a
mask or quantizer for a layer the model lacks) raises one ValueError listing every mismatch, and
the target is left exactly as it was.
"""
from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from . import files, models, prune, quant
from .layers import parametrizations, remove

__all__ = ["save", "load", "load_saved"]

_MASK_KEY = re.compile(r"^(?:(?P<name>.*)\.)?parametrizations\.weight\.0\.mask$")
_QUANT_KEY = re.compile(r"^(?:(?P<name>.*)\.)?parametrizations\.weight\.\d+\._extra_state$")


def save(net: nn.Module, path) -> Path:
    """Write ``net.state_dict()`` (weights, masks, quantizer settings) to ``path`` atomically;
    returns the path. Raises ValueError, writing nothing, when `load` could not restore it (it
    is tried on a copy): a parametrization other than labkit's Mask and Quantize on a weight, a
    mask that is not first, a parametrized tensor other than a weight, a bad quantizer setting."""
    foreign = [f"{name}: {type(p).__name__} (labkit restores prune.Mask, first, and quant.Quantize)"
               for name, m in net.named_modules() for i, p in enumerate(parametrizations(m))
               if not (isinstance(p, quant.Quantize) or (isinstance(p, prune.Mask) and i == 0))]
    foreign += [f"{name}.{tensor}: parametrized (labkit restores the parametrizations of weights only)"
                for name, m in net.named_modules() for tensor in getattr(m, "parametrizations", {})
                if tensor != "weight"]
    state = net.state_dict()
    problems = foreign or _restore(_stripped(net), state)
    if problems:
        raise ValueError("checkpoints.save: this model could not be loaded back, so nothing was "
                         "written:\n  " + "\n  ".join(problems))
    return files.save_torch(state, path)


def load(source, net: nn.Module | None = None) -> nn.Module:
    """Restore a checkpoint into ``net`` and return it: masks, quantizers, then every tensor.

    source: a path (read with ``torch.load(weights_only=True)`` on the CPU; the tensors are then
    copied onto ``net``'s device) or a state dict. net: the model to restore into, unpruned or not;
    None: a fresh ResNet-20 on the CPU (with the inner widths the checkpoint's blocks have, so a
    channel-pruned one loads too). Raises ValueError, with ``net`` unchanged, when the checkpoint
    does not fit (every mismatch listed).
    """
    state = _read(source)
    if net is None:
        net = _fresh(state)
    problems = _restore(copy.deepcopy(net), state)     # a trial on a copy: net untouched
    if problems:
        raise ValueError("the checkpoint does not fit this model (nothing was changed):\n  "
                         + "\n  ".join(problems))
    _restore(net, state)
    return net


def _read(source) -> Mapping:
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint at {path.absolute()}")
        try:
            source = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:   # truncated, foreign or unpicklable file: torch's many errors
            raise ValueError(f"{path} is not a readable checkpoint ({type(e).__name__}: {e}); it "
                             f"may be truncated or another kind of file") from e
    if not isinstance(source, Mapping):
        raise ValueError(f"a checkpoint is a state dict (a mapping) or a path to one, got "
                         f"{type(source).__name__}")
    return source


def _fresh(state: Mapping) -> models.ResNet:
    """A ResNet-20 with the checkpoint's inner widths and classes (when it has those keys)."""
    def rows(layer):
        for key in (f"{layer}.weight", f"{layer}.parametrizations.weight.original"):
            if isinstance(state.get(key), torch.Tensor) and state[key].dim() >= 1:
                return state[key].shape[0]
        return None

    inner = [rows(f"stage{s}.{i}.conv1") for s in (1, 2, 3) for i in range(3)]
    classes = rows("fc")
    return models.ResNet(inner=None if None in inner else inner,
                         num_classes=10 if classes is None else classes)


def _stripped(net: nn.Module) -> nn.Module:
    """A deep copy of ``net`` without parametrizations (each weight its stored Parameter)."""
    plain = copy.deepcopy(net)
    for module in plain.modules():
        if parametrizations(module):
            remove(module)
    return plain


def _restore(target: nn.Module, state: Mapping) -> list[str]:
    """Give ``target`` the checkpoint's masks and quantizers, then load every tensor (strict).
    Returns every problem found (empty: done); loads no tensor when there is one."""
    problems, failed = [], set()        # failed: layers whose mask or quantizer did not fit
    modules = dict(target.named_modules())
    for key, value in state.items():
        quantizer = _QUANT_KEY.match(key)
        mask = _MASK_KEY.match(key)
        match = quantizer or mask
        if match is None or (quantizer and not (isinstance(value, dict) and "bits" in value)):
            continue
        name = match.group("name") or ""
        module = modules.get(name)
        if module is None or not isinstance(getattr(module, "weight", None), torch.Tensor):
            problems.append(f"{key}: a {'quantizer' if quantizer else 'mask'} for layer {name!r}, "
                            f"which this model lacks (or which has no weight)")
            failed.add(name)
            continue
        try:
            if quantizer:
                quant.set_bits(target, value["bits"], symmetric=value.get("symmetric"),
                               mask_aware=value.get("mask_aware"), zero=value.get("zero", "float"),
                               layers=[name])
            else:
                prune.set_mask(module, value)
        except (ValueError, TypeError) as e:
            problems.append(f"{key}: {e}")
            failed.add(name)

    def listed(key):                    # a failed layer's keys would only repeat its problem
        return not any(key.startswith(f"{name}.") or not name for name in failed)

    own = target.state_dict()
    missing = [k for k in own if k not in state and listed(k)]
    unexpected = [k for k in state if k not in own and listed(k)]
    shapes = [f"{k}: checkpoint {tuple(v.shape)}, model {tuple(own[k].shape)}" for k, v in state.items()
              if k in own and isinstance(v, torch.Tensor) and isinstance(own[k], torch.Tensor)
              and v.shape != own[k].shape]
    for label, found in (("missing keys", missing), ("unexpected keys", unexpected),
                         ("shape mismatches", shapes)):
        if found:
            problems.append(f"{label}: {found}")
    if not problems:
        try:
            target.load_state_dict(state)
        except RuntimeError as e:
            problems.append(str(e))
    return problems


def load_saved(sources: Mapping) -> dict[str, nn.Module]:
    """``{label: (path, what saves it)}`` -> ``{label: model}``, each loaded with `load` (on the CPU).

    Every path is checked first: when any is missing, FileNotFoundError lists each missing one
    with what saves it (the lab and the cell to run), and nothing is loaded. A model that was not
    trained is never replaced by a stand-in.
    """
    missing = [f"{label}: {Path(path)} (saved by {how})" for label, (path, how) in sources.items()
               if not Path(path).is_file()]
    if missing:
        raise FileNotFoundError("these checkpoints are missing; run what saves them first, in the same "
                                "profile:\n  " + "\n  ".join(missing))
    return {label: load(path) for label, (path, _) in sources.items()}
