"""A model's bytes on disk, stage by stage of Deep Compression (Lab 4 (a)).

Han, Mao and Dally (ICLR 2016) compress in three stages, each on top of the previous one; we
measure each with real files and `labkit.compress`'s exact accounting:

    "torch.save"     the naive file, ``torch.save(net.state_dict(), path)``: every weight as
                     float32, even the pruned ones, plus (for a pruned or quantized model) its
                     masks, one byte per weight, and the quantizers' settings;
    "CSR"            pruning pays: only the non-zero weights, as float32 values with relative
                     indices (`compress.size_report` of the model with its quantizers baked into
                     float32 values, without Huffman coding);
    "+ quantization" the values become b-bit codes into a codebook (`compress.size_report`
                     without Huffman coding; a float model is unchanged by this stage);
    "+ Huffman"      codes and indices Huffman-coded: the file `compress.save` writes.

Each stage is {part: bytes}, parts named by what they hold (`PART_LABELS`): for torch.save
"float" (every float32 tensor outside batch norm: weights, pruned entries included, biases, the
input normalisation), "masks" (pruning masks, and a schedule's masks kept by ``zero="schedule"``
quantizers), "batchnorm" and "header" (the container: the zip archive, the pickled structure, the
quantizers' settings: the file's size minus its tensors' bytes); for the others
`compress.SizeReport.parts` plus its header, with the stored entries of CSR layers split by what
they are: "float values" (float32 values of float layers: every CSR layer of the "CSR" stage,
the float first and last layers after it) and "codes" (b-bit codes of quantized layers). Every
stage's parts add up to its file's size.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from . import compress, files
from .layers import baked
from .tables import table

__all__ = ["STAGES", "PART_LABELS", "torch_save_parts", "stages", "totals", "stage_table", "plot_stages"]

STAGES = ("torch.save", "CSR", "+ quantization", "+ Huffman")
PART_LABELS = {                                   # part: what it holds (the stage plot's legend)
    "float": "float32 tensors, dense (weights, biases, normalisation)",
    "masks": "masks (1 byte per weight)",
    "float values": "float32 values of CSR entries",
    "codes": "b-bit codes of quantized weights",
    "indices": "relative indices",
    "codebooks": "codebooks (float32 levels)",
    "tables": "Huffman code tables",
    "batchnorm": "batch norm",
    "header": "header, structure, padding",
}
_PART_ORDER = tuple(PART_LABELS)                  # colours


def torch_save_parts(net: nn.Module, path) -> dict[str, int]:
    """Write ``torch.save(net.state_dict(), path)`` (atomically, ``labkit.files``) and split the
    file's size into parts (bytes): float (weights, pruned entries included, biases, the input
    normalisation), masks, batchnorm and header (the container: the rest of the file)."""
    state = net.state_dict()
    path = files.save_torch(state, path)
    modules = dict(net.named_modules())
    parts = dict.fromkeys(("float", "masks", "batchnorm", "header"), 0)
    for key, value in state.items():
        if isinstance(value, dict):                   # a quantizer's settings: pickled, header;
            parts["masks"] += sum(t.numel() * t.element_size() for t in value.values()  # its schedule mask
                                  if isinstance(t, torch.Tensor))
            continue
        if not isinstance(value, torch.Tensor):
            continue
        owner = key.split(".parametrizations.")[0] if ".parametrizations." in key else key.rpartition(".")[0]
        if key.endswith(".mask"):
            part = "masks"
        elif isinstance(modules.get(owner), nn.BatchNorm2d):
            part = "batchnorm"
        else:
            part = "float"
        parts[part] += value.numel() * value.element_size()
    parts["header"] = path.stat().st_size - sum(parts.values())
    return parts


def _report_parts(report: compress.SizeReport) -> dict[str, float]:
    """The report's parts (bytes), the CSR entries of float layers moved from "codes" (compress's
    name for every stored entry) to "float values"."""
    parts = dict(report.parts_bytes)
    values = sum(layer.bits["codes"] for layer in report.layers if layer.stored_as.startswith("CSR fp32")) / 8
    parts["codes"] -= values
    return {**parts, "float values": values, "header": report.header_bytes}


def stages(net: nn.Module, folder, name: str, *, index_bits: int = 4) -> dict[str, dict[str, float]]:
    """{stage: {part: bytes}} for every stage of `STAGES`; writes ``folder/<name>.pt`` (torch.save)
    and ``folder/<name>.lkc`` (`compress.save`). index_bits: bits per relative index.

    The two files are written under their names in a temporary folder inside ``folder`` and then
    replaced together (`labkit.files.replace_together`): when anything fails, both previous files
    are left as they were."""
    folder = Path(folder)
    bad = files.non_finite(net.state_dict())
    if bad:                     # refused here, naming the files, not the hidden staging folder save_torch would name
        raise ValueError(f"not saving {folder / name}.pt and .lkc: these tensors hold inf or NaN, and a saved model must "
                         f"be finite (the training diverged, or a value overflowed): {bad[:10]}"
                         f"{f' and {len(bad) - 10} more' if len(bad) > 10 else ''}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as e:   # a file, or a link to nothing, where a folder is named
        raise NotADirectoryError(e.errno, f"footprint.stages writes into the folder {folder}, but {e.filename} is "
                                          f"not a folder (a file, or a symbolic link to nothing); name a folder",
                                 str(folder)) from e
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".part", dir=folder))
    except PermissionError as e:                          # not the hidden staging name the system refused
        raise PermissionError(e.errno, f"footprint.stages cannot write {folder / name}.pt and .lkc: the folder "
                                       f"{folder} is not writable (permission denied); nothing was written",
                              str(folder)) from e
    try:
        out = {"torch.save": torch_save_parts(net, staging / f"{name}.pt")}
        out["CSR"] = _report_parts(compress.size_report(baked(net), index_bits=index_bits, huffman=False))
        out["+ quantization"] = _report_parts(compress.size_report(net, index_bits=index_bits, huffman=False))
        report = compress.save(net, staging / f"{name}.lkc", index_bits=index_bits)
        out["+ Huffman"] = _report_parts(report)
        files.replace_together({staging / f"{name}.{ext}": folder / f"{name}.{ext}" for ext in ("pt", "lkc")})
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def totals(stage_parts: dict[str, dict[str, float]]) -> dict[str, float]:
    """{stage: total bytes} of one model's `stages`."""
    return {stage: sum(parts.values()) for stage, parts in stage_parts.items()}


def stage_table(models: dict[str, dict], *, reference: float) -> str:
    """Text table, one row per model ({label: stages(...)}): bytes at every stage and the ratio
    reference / bytes of the last stage (reference: e.g. the dense model's torch.save bytes)."""
    rows = []
    for label, st in models.items():
        t = totals(st)
        rows.append([label] + [f"{round(t[s]):,}" for s in STAGES] + [f"{reference / t[STAGES[-1]]:.1f}x"])
    return table(rows, ["model"] + [f"{s} (bytes)" for s in STAGES] + ["ratio"])


def plot_stages(models: dict[str, dict], *, reference: float | None = None, title=None):
    """Stacked bars, one group per model ({label: stages(...)}), one bar per stage, stacked by
    part (kB; a part of 0 bytes draws nothing, and the legend names only parts drawn, by
    `PART_LABELS`); above each bar its total and, with `reference` (bytes), reference / total.
    Returns the Figure."""
    import matplotlib.pyplot as plt

    if not models:
        raise ValueError("plot_stages: no model to show")
    part_names = list(dict.fromkeys([*_PART_ORDER, *(p for st in models.values() for s in STAGES for p in st[s])]))
    colors = {p: f"C{i % 10}" for i, p in enumerate(part_names)}
    fig, ax = plt.subplots(figsize=(max(7.0, 2.6 * len(models)), 4.6))
    width = 0.8 / len(STAGES)
    shown, ticks = set(), []
    for g, (label, st) in enumerate(models.items()):
        for i, stage in enumerate(STAGES):
            x = g + (i - (len(STAGES) - 1) / 2) * width
            bottom = 0.0
            for part, size in st[stage].items():
                if size <= 0:
                    continue
                ax.bar(x, size / 1e3, width * 0.9, bottom=bottom, color=colors[part],
                       label=None if part in shown else PART_LABELS.get(part, part))
                shown.add(part)
                bottom += size / 1e3
            text = f"{bottom:.0f}" if reference is None else f"{bottom:.0f}\n{reference / (bottom * 1e3):.1f}x"
            ax.text(x, bottom, text, ha="center", va="bottom", fontsize=6.5)
            ticks.append((x, stage))
        ax.text(g, -0.34, label, ha="center", va="top", fontsize=9, transform=ax.get_xaxis_transform())
    ax.set_xticks([x for x, _ in ticks])
    ax.set_xticklabels([s for _, s in ticks], rotation=90, fontsize=7)
    ax.set_ylabel("kB on disk")
    ax.margins(y=0.15)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if title:
        ax.set_title(title)
    fig.subplots_adjust(bottom=0.32, left=0.1, right=0.84, top=0.93 if title else 0.97)
    return fig
