"""The models one lab hands to the next, published from the reference run, and the fallback to them.

Lab 3 starts from Lab 2's best sparse model, Lab 4 from Labs 2 and 3's models. Each lab saves its own
into ``checkpoints/`` (not in the repository); the reference run also *publishes* them into the
repository (``labs/handover/``), so that a lab runs alone, in any session, and a student whose
earlier lab failed can go on::

    handover.publish(net, "lab2_best_sparse", what="Lab 2's best sparse model", profile=run, edition=term.name)
    sparse, note = handover.own_or_published(ckpt_dir / "lab2_best_sparse.pt", "lab2_best_sparse",
                                             made_by="Lab 2, its last cell", edition=term.name)
    print(note)     # says loudly when it is the course's reference model, not yours

A published model is two files in the folder: ``<name>.dc``, the course's own compressed format
(`labkit.compress`: exact effective weights and batch-norm state, the zeros not stored; the masks
come back from the zeros) for a float model, or ``<name>.pt`` (`labkit.checkpoints`) for one with
quantizers, which that format does not keep; and ``<name>.json``, its provenance: what it is, the
run (date, profile, course edition, labkit and torch versions, the data's fingerprint), its sparsity
and bit widths, and the SHA-256 of the model file, checked on load before anything is read.

Where: ``handover/`` beside the notebook for the reference run (profile ``full``, the course's edition),
a subfolder named after the profile and edition for any other run (``handover/ci``; not committed),
as `labkit.report.results_path` does for the results.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
from pathlib import Path

from torch import nn

from . import checkpoints, compress, files, layers, models, prune, settings
from . import data as data_

__all__ = ["folder", "publish", "load", "own_or_published"]

_FORMATS = {".dc": "compressed (labkit.compress)", ".pt": "checkpoint (labkit.checkpoints)"}


def folder(profile: settings.Profile, edition: str = "course", root=None) -> Path:
    """``<root>/`` (default ``handover`` beside the notebook) for the reference run, ``<root>/<run>/``
    for any other (``settings.run_name``: ``ci``, ``full-2024``, ...)."""
    sub = settings.run_name(profile, edition)
    root = Path("handover") if root is None else Path(root)
    return root if sub == "full" else root / sub


def _check_name(name) -> str:
    if not isinstance(name, str) or not name or not all(c.isalnum() or c in "_-" for c in name):
        raise ValueError(f"a published model's name is letters, digits, '_' and '-' (e.g. 'lab2_best_sparse'), "
                         f"got {name!r}")
    return name


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _number(obj):
    """A numpy or torch scalar as the Python number it equals, for json."""
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
        return obj.item()
    raise ValueError(f"publish: a fact must be a number, a string, or a list or dict of them, got {type(obj).__name__}")


def _quantized(net: nn.Module) -> bool:
    return bool(files.state_summary(net.state_dict())["bits"])


def publish(net: nn.Module, name: str, *, what: str, profile: settings.Profile, edition: str = "course",
            data: data_.CIFAR10 | None = None, root=None, **facts) -> Path:
    """Write ``net`` and its provenance into :func:`folder` (atomically, each file; the model first,
    so a provenance file never names a model that is not there); returns the provenance file's path.

    ``what``: what the model is, in words. ``facts``: more provenance (numbers or short strings, e.g.
    ``test_accuracy=0.85``), written as given. A float model is stored compressed (exactly, see the
    module docstring), one with quantizers as a checkpoint."""
    name = _check_name(name)
    if not isinstance(net, models.ResNet):
        raise ValueError(f"publish stores a ResNet-20 (labkit.models.ResNet), got {type(net).__name__}")
    if not isinstance(what, str) or not what.strip():
        raise ValueError("publish: say what the model is (what='Lab 2's best sparse model')")
    out = folder(profile, edition, root)
    out.mkdir(parents=True, exist_ok=True)
    state = net.state_dict()
    summary = files.state_summary(state)
    if _quantized(net):
        model_path = out / f"{name}.pt"
        checkpoints.save(net, model_path, what=what, data=data)
    else:
        model_path = out / f"{name}.dc"
        compress.save(net, model_path)
    other = model_path.with_suffix(".pt" if model_path.suffix == ".dc" else ".dc")
    other.unlink(missing_ok=True)               # one model per name
    import torch

    doc = {"name": name, "what": what, "file": model_path.name, "format": _FORMATS[model_path.suffix],
           "sha256": _sha256(model_path), "bytes": model_path.stat().st_size,
           "masks": summary["sparsity"] > 0, "sparsity": summary["sparsity"], "bits": summary["bits"],
           "run": {"date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                   "profile": profile.name, "edition": edition,
                   "labkit": files.run_description()["labkit"], "torch": torch.__version__,
                   "fingerprint": None if data is None else data_.fingerprint(data)},
           "facts": json.loads(json.dumps(facts, default=_number))}
    return files.write_bytes(out / f"{name}.json", (json.dumps(doc, indent=1) + "\n").encode("utf-8"))


def _provenance(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not a published model's provenance (unreadable JSON: {e}); restore it "
                         f"from the repository (git checkout -- {path})") from e
    need = {"name": str, "what": str, "file": str, "sha256": str, "masks": bool, "run": dict}
    bad = [k for k, t in need.items() if not isinstance(doc.get(k) if isinstance(doc, dict) else None, t)]
    if bad:
        raise ValueError(f"{path} is not a published model's provenance (missing or wrong: {', '.join(bad)}); "
                         f"restore it from the repository (git checkout -- {path})")
    if Path(doc["file"]).name != doc["file"] or Path(doc["file"]).suffix not in _FORMATS:
        raise ValueError(f"{path} names a model file {doc['file']!r} that is not a .dc or .pt file beside it")
    return doc


def load(name: str, *, profile: settings.Profile | None = None, edition: str = "course",
         root=None) -> tuple[nn.Module, dict]:
    """The published model ``name`` and its provenance: ``(net, provenance)``, the net on the CPU.

    Looks in :func:`folder` of ``profile`` and ``edition`` and, for any profile but the reference run's,
    then in the reference run's folder (a quick run may start from the reference run's model; its
    provenance says which run made it). Checks the model file's SHA-256 against the provenance before
    reading it (ValueError: the file changed, e.g. flipped bytes) and the course edition (ValueError:
    another edition's model, made for other parameters). A compressed model gets its masks back
    from its zeros, as pruning left them."""
    name = _check_name(name)
    profile = settings.PROFILES["full"] if profile is None else profile
    places = [folder(profile, edition, root)]
    if settings.run_name(profile, edition) != settings.run_name(settings.PROFILES["full"], edition):
        places.append(folder(settings.PROFILES["full"], edition, root))
    found = [p / f"{name}.json" for p in places if (p / f"{name}.json").is_file()]
    if not found:
        raise FileNotFoundError(f"no published model {name!r} in {' or '.join(str(p) for p in places)}: the "
                                f"reference run publishes it (labs/handover/ in the repository)")
    doc = _provenance(found[0])
    model_path = found[0].parent / doc["file"]
    if not model_path.is_file():
        raise FileNotFoundError(f"{found[0]} names {model_path}, which is missing; restore it from the repository")
    got = _sha256(model_path)
    if got != doc["sha256"]:
        raise ValueError(f"{model_path} has SHA-256 {got[:16]}..., its provenance {found[0].name} says "
                         f"{doc['sha256'][:16]}...: the file changed since it was published; restore it "
                         f"(git checkout -- {model_path})")
    if doc["run"].get("edition") != edition:
        raise ValueError(f"{model_path} was published by a run of the course edition {doc['run'].get('edition')!r}, "
                         f"this run is edition {edition!r}: its parameters differ; run the lab that makes it")
    if model_path.suffix == ".pt":
        return checkpoints.load(model_path), doc
    net = compress.load(model_path)
    if doc["masks"]:
        for _, module in layers.prunable_layers(net):
            keep = module.weight.detach() != 0
            if not bool(keep.all()):
                prune.set_mask(module, keep)
    return net, doc


def own_or_published(path, name: str, *, made_by: str, profile: settings.Profile | None = None,
                     edition: str = "course", root=None, data: data_.CIFAR10 | None = None) -> tuple[nn.Module, str]:
    """``(net, note)``: your own model from ``path`` when it is there (`labkit.checkpoints.load_saved`:
    its profile, edition, bit width in the name and, with ``data``, the data it was trained on are
    checked), else the published one (:func:`load`) and a note that says so loudly: the course's
    reference model, not yours, with where it came from and what to run (``made_by``) to use your own."""
    path = Path(path)
    if path.is_file():
        return checkpoints.load_saved({name: (path, made_by)}, data=data)[name], f"{name}: yours, from {path}"
    net, doc = load(name, profile=profile, edition=edition, root=root)
    run = doc["run"]
    note = (f"!!! {path} is missing, so this is THE COURSE'S REFERENCE MODEL, NOT YOURS: {doc['what']}, "
            f"published from the reference run of {run.get('date')} (profile {run.get('profile')}, edition "
            f"{run.get('edition')}, labkit {run.get('labkit')}; SHA-256 {doc['sha256'][:16]}... checked). "
            f"To use your own, run {made_by} first.")
    return net, note
