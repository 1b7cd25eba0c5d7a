"""Saving and loading a pruned and/or quantized model: one file, one loader.

A checkpoint is the model's ``state_dict()`` written with ``torch.save``: the stored weights, the
pruning masks (``<layer>.parametrizations.weight.0.mask``, ``labkit.prune``) and the quantizers'
settings (``<layer>.parametrizations.weight.<i>._extra_state``, ``labkit.quant``: bits, scheme,
the zero option and, for ``zero="schedule"``, the schedule's mask). A plain
state dict (a dense model, ``train.SaveBest``'s file) is a checkpoint too.

`save` writes atomically (``labkit.files``): a save that fails (a full disk, Ctrl-C) leaves the
previous file as it was. It refuses a model whose checkpoint `load` could not restore, and one with
a non-finite tensor. The file says what it holds (``labkit.files.read_description``: what wrote
it, profile, course edition, sparsity, bit widths, the data's fingerprint, labkit's version);
`load_saved` checks that against what the caller expects.

`load` checks the file whole first (every record of the archive against its CRC-32: a flipped bit
is named, not loaded) and refuses a non-finite tensor by name, and a training checkpoint
(``train(..., checkpoint=)``'s file: continue it with ``resume=True``).

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

from . import data as data_, files, models, prune, quant
from .layers import parametrizations, remove

__all__ = ["save", "load", "load_saved"]

_MASK_KEY = re.compile(r"^(?:(?P<name>.*)\.)?parametrizations\.weight\.0\.mask$")
_QUANT_KEY = re.compile(r"^(?:(?P<name>.*)\.)?parametrizations\.weight\.\d+\._extra_state$")


def save(net: nn.Module, path, *, what: str | None = None, data: data_.CIFAR10 | None = None) -> Path:
    """Write ``net.state_dict()`` (weights, masks, quantizer settings) to ``path`` atomically;
    returns the path. Raises ValueError, writing nothing, when `load` could not restore it (it
    is tried on a copy): a parametrization other than labkit's Mask and Quantize on a weight, a
    mask that is not first, a parametrized tensor other than a weight, a bad quantizer setting;
    or when a tensor holds inf or NaN (named).

    The file records what it holds: ``what`` (e.g. ``"Lab 3 (e)"``), the model's sparsity and bit
    widths, the run's profile and course edition, labkit's version and, with ``data``, the data's
    fingerprint (``labkit.data.fingerprint``)."""
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
    description = files.run_description(kind="a model (checkpoints.save)", what=what, **files.state_summary(state),
                                        fingerprint=None if data is None else data_.fingerprint(data))
    return files.save_torch(state, path, description=description)


def load(source, net: nn.Module | None = None) -> nn.Module:
    """Restore a checkpoint into ``net`` and return it: masks, quantizers, then every tensor.

    source: a path (read with ``torch.load(weights_only=True)`` on the CPU; the tensors are then
    copied onto ``net``'s device) or a state dict. net: the model to restore into, unpruned or not;
    None: a fresh ResNet-20 on the CPU (with the inner widths the checkpoint's blocks have, so a
    channel-pruned one loads too). Raises ValueError, with ``net`` unchanged, when the checkpoint
    does not fit (every mismatch listed).
    """
    if net is not None and not isinstance(net, nn.Module):
        raise ValueError(f"checkpoints.load restores into a model (an nn.Module) or None (a fresh ResNet-20), "
                         f"got {type(net).__name__}")
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
    name = "the checkpoint"
    if isinstance(source, (str, Path)):
        name = str(source)
        source = files.load_torch(source, what="checkpoint")   # every record checked against its CRC-32
    if not isinstance(source, Mapping):
        raise ValueError(f"a checkpoint is a state dict (a mapping) or a path to one, got "
                         f"{type(source).__name__}")
    if {"config", "model", "optimizer", "records"} <= set(source):
        raise ValueError(f"{name} is a training checkpoint (train(..., checkpoint=) writes it: the model with "
                         f"the optimizer's state and the records), not a model's checkpoint: continue the run "
                         f"with train(..., checkpoint=path, resume=True), or load its model with "
                         f"checkpoints.load(torch.load(path, weights_only=True)['model'])")
    bad = files.non_finite(dict(source))
    if bad:
        raise ValueError(f"{name} holds non-finite values (inf or NaN) in {bad[:10]}"
                         f"{f' and {len(bad) - 10} more' if len(bad) > 10 else ''}; a model that diverged "
                         f"cannot be restored, nothing was loaded")
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


def load_saved(sources: Mapping, *, data: data_.CIFAR10 | None = None) -> dict[str, nn.Module]:
    """``{label: (path, what saves it)}`` -> ``{label: model}``, each loaded with `load` (on the CPU).

    Every path is checked first: when any is missing, FileNotFoundError lists each missing one
    with what saves it (the lab and the cell to run), and nothing is loaded. A model that was not
    trained is never replaced by a stand-in.

    Then every file is checked against what the caller expects, and ValueError lists each one that
    differs, with what the file holds and what was expected (nothing is returned): a bit width in
    the file's name (``lab3_d_4bit.pt``: every quantized layer at 4 bits; a float model has none)
    against the model's widths; the profile and course edition of the run that wrote it (its
    description, ``labkit.files.read_description``) against this run's (``LABKIT_PROFILE``,
    ``LABKIT_COURSE``); with ``data``, the fingerprint of the data it was trained on against
    ``labkit.data.fingerprint(data)``. A file written without a description (an older labkit) is
    checked by its name only.
    """
    if not isinstance(sources, Mapping) or not all(isinstance(v, (tuple, list)) and len(v) == 2 and isinstance(v[0], (str, Path))
                                                   for v in sources.values()):
        raise ValueError(f"load_saved takes {{label: (path, what saves it)}}, e.g. {{'(d) 4 bits': "
                         f"('checkpoints/full/lab3_d_4bit.pt', 'Lab 3 (d)')}}; got {sources!r}"[:400])
    missing = [f"{label}: {Path(path)} (saved by {how})" for label, (path, how) in sources.items()
               if not Path(path).is_file()]
    if missing:
        raise FileNotFoundError("these checkpoints are missing; run what saves them first, in the same "
                                "profile:\n  " + "\n  ".join(missing))
    now = files.run_description(fingerprint=None if data is None else data_.fingerprint(data))
    states, problems = {}, []
    for label, (path, how) in sources.items():
        states[label] = state = _read(path)
        held = {**(files.read_description(path) or {}), **files.state_summary(state)}
        expected = {k: now[k] for k in ("profile", "edition") if held.get(k, now[k]) != now[k]}
        if now["fingerprint"] is not None and held.get("fingerprint") not in (None, now["fingerprint"]):
            expected["fingerprint"] = now["fingerprint"]
        width = re.search(r"(?:^|_)(\d+)bit(?:_|\.|$)", Path(path).name)
        if width and held["bits"] != [int(width.group(1))]:
            expected["bits"] = [int(width.group(1))]
        if expected:
            problems.append(f"{label}: {path} holds {_described(held)}; expected {_described(expected)} "
                            f"(saved by {how})")
    if problems:
        raise ValueError("these checkpoints are not what this run expects (nothing was loaded); run what saves "
                         "them again in this run's profile, edition and data:\n  " + "\n  ".join(problems))
    return {label: load(state) for label, state in states.items()}


def _described(d: Mapping) -> str:
    """A description as words: 'a 3-bit model, 70.0% sparse, profile ci, edition course, ...'."""
    words = []
    if "bits" in d:
        words.append(f"a {'/'.join(map(str, d['bits']))}-bit model" if d["bits"] else "a float model")
    if "sparsity" in d:
        words.append(f"{d['sparsity']:.1%} sparse")
    for key in ("what", "profile", "edition", "fingerprint", "labkit"):
        if d.get(key) is not None:
            words.append(f"{key} {d[key][:12] if key == 'fingerprint' else d[key]}")
    return ", ".join(words)
