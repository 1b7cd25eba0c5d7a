"""What runs faster, measured (Lab 4 (b)): latency, sparse (CSR) execution, MAC and parameter counts.

Latency. `measure` times ``net(x)`` in eval mode under ``torch.inference_mode`` with
``torch.utils.benchmark.Timer`` (which synchronises CUDA around every timing): one warm-up call per
setting, then `rounds` rounds that visit every model in turn (interleaved, so that a slow spell of
the machine hits all models alike), each round timing blocks of calls for about `min_run_time`
seconds. A setting's blocks of all rounds are merged (``Measurement.merge``) and summarised by
their median and interquartile range (IQR = q3 - q1), torch.utils.benchmark's own statistics.
Settings: batch sizes (1 and 256 by default), and on the CPU the thread counts 1, 2, 4, ... up to
the number torch uses (``Timer(num_threads=...)``); on CUDA the thread count does not apply.

Sparse execution. `CSRConv2d` and `CSRLinear` subclass the float layers (as timm's ``StdConv2d``
subclasses ``nn.Conv2d``): same constructor, same ``weight`` Parameter and state dict, but the
forward pass multiplies with a CSR copy of the weight (``torch.sparse`` compressed sparse rows),
doing work only for the non-zero weights. A convolution is a matrix product after im2col:

    cols = im2col(x)        (C_in * kh * kw, B * H_out * W_out)   the unfolded input patches
    out  = W_csr @ cols     (C_out, B * H_out * W_out)            W reshaped to (C_out, C_in*kh*kw)

the same unfolding as ``F.unfold`` (and the same numbers), written as one strided copy into the
layout the product needs. `to_csr(net)` returns a copy of a (masked) model with every Conv2d and
Linear replaced by its CSR version. The CSR copy is made at conversion: the layers are for
inference, and `CSRConv2d.refresh()` rebuilds it after the weight is changed.

Counting. `count_macs` runs one forward pass under ``torch.utils.flop_counter.FlopCounterMode``
and returns FLOPs / 2 per image (the counter counts 2 FLOPs per multiply-accumulate of a
convolution or matrix product; batch norm, ReLU, additions and pooling are not counted). A dense
kernel multiplies every zero, so a masked model counts as many MACs as the dense one; for a
sparse CSR operand the counter gets a formula of its own here, 2 * nnz(W) * columns, so a CSR
model counts only the MACs of its non-zero weights. `count_params` counts parameter entries.
"""
from __future__ import annotations

import contextlib
import copy
import numbers
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils import benchmark
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["CSRConv2d", "CSRLinear", "to_csr", "im2col", "count_macs", "count_params",
           "Latency", "measure", "thread_settings", "machine_load", "Speedup", "speedup", "crossover",
           "latency_table", "plot_latency"]


# --- sparse (CSR) layers ------------------------------------------------------------------------

def im2col(x: torch.Tensor, kernel_size, stride=1, padding=0, dilation=1) -> torch.Tensor:
    """(B, C, H, W) -> (C*kh*kw, B*H_out*W_out): column b*H_out*W_out + i*W_out + j holds the
    input patch of output pixel (i, j) of image b, row c*kh*kw + u*kw + v its element (c, u, v)
    (the order of ``weight.flatten(1)``). Equal to ``F.unfold(x, ...)`` transposed to that layout.
    """
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    dh, dw = _pair(dilation)
    B, C, H, W = x.shape
    xp = F.pad(x, (pw, pw, ph, ph)).contiguous()           # (B, C, H + 2ph, W + 2pw)
    Ho, Wo = _out_len(H, kh, sh, ph, dh), _out_len(W, kw, sw, pw, dw)
    sB, sC, sH, sW = xp.stride()
    # A view (C, kh, kw, B, Ho, Wo) of the padded input: no copy until the reshape below.
    patches = xp.as_strided((C, kh, kw, B, Ho, Wo), (sC, sH * dh, sW * dw, sB, sH * sh, sW * sw))
    return patches.reshape(C * kh * kw, B * Ho * Wo)


def _pair(v) -> tuple[int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _out_len(n: int, k: int, stride: int, pad: int, dilation: int) -> int:
    """Output length of a convolution along one axis (as nn.Conv2d's docs state it)."""
    return (n + 2 * pad - dilation * (k - 1) - 1) // stride + 1


@contextlib.contextmanager
def _csr_beta_quiet():
    """Silences PyTorch's "Sparse CSR tensor support is in beta state" warning, which a new CSR
    tensor raises and which says nothing about our use of it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        yield


class _CSRWeight:
    """Holds the CSR parts of ``weight.flatten(1)`` as three plain buffers (so that the layer
    moves with ``.to()`` and deep-copies; a CSR tensor itself does neither) and assembles the
    CSR matrix, which costs a few microseconds, in every forward pass."""

    def refresh(self) -> None:
        """(Re)build the CSR copy from the current ``weight`` (after changing the weight)."""
        with _csr_beta_quiet():
            csr = self.weight.detach().flatten(1).to_sparse_csr()  # (C_out, C_in*kh*kw) or (out, in)
        for name, t in (("crow", csr.crow_indices()), ("col", csr.col_indices()), ("val", csr.values())):
            self.register_buffer(f"csr_{name}", t.clone(), persistent=False)

    def weight_csr(self) -> torch.Tensor:
        shape = (self.weight.shape[0], self.weight[0].numel())
        with _csr_beta_quiet():
            # Built by to_sparse_csr in refresh(): valid, so the invariant checks are skipped.
            return torch.sparse_csr_tensor(self.csr_crow, self.csr_col, self.csr_val, shape,
                                           check_invariants=False)

    @property
    def nnz(self) -> int:
        return self.csr_val.numel()

    @classmethod
    def _copy_weights(cls, new, layer):
        with torch.no_grad():
            new.weight.copy_(layer.weight)  # the effective weight: a mask or quantizer is baked in
            if layer.bias is not None:
                new.bias.copy_(layer.bias)
        new.weight.requires_grad_(False)
        new.refresh()
        return new.train(layer.training)


class CSRConv2d(_CSRWeight, nn.Conv2d):
    """nn.Conv2d run as im2col + CSR sparse matrix product: out = W_csr @ im2col(x) (+ bias).

    Same arguments as nn.Conv2d (groups=1 and padding_mode='zeros' only). For inference: the
    weight is a frozen Parameter, the CSR copy is built at construction (`refresh` rebuilds it).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.groups != 1 or self.padding_mode != "zeros" or isinstance(self.padding, str):
            raise ValueError(f"CSRConv2d supports groups=1, padding_mode='zeros' and numeric "
                             f"padding, got groups={self.groups}, padding_mode={self.padding_mode!r}, "
                             f"padding={self.padding!r}")
        self.refresh()

    @classmethod
    def from_dense(cls, conv: nn.Conv2d) -> "CSRConv2d":
        """A CSRConv2d with `conv`'s configuration and effective weight."""
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                  padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                  bias=conv.bias is not None, padding_mode=conv.padding_mode,
                  device=conv.weight.device, dtype=conv.weight.dtype)
        return cls._copy_weights(new, conv)

    def forward(self, x):                                   # (B, C_in, H, W)
        B, _, H, W = x.shape
        Ho, Wo = (_out_len(*a) for a in zip((H, W), self.kernel_size, self.stride, self.padding, self.dilation))
        cols = im2col(x, self.kernel_size, self.stride, self.padding, self.dilation)
        out = self.weight_csr() @ cols                      # (C_out, B * Ho * Wo)
        if self.bias is not None:
            out = out + self.bias[:, None]
        out = out.view(self.out_channels, B, Ho, Wo)
        return out.transpose(0, 1).contiguous()             # (B, C_out, Ho, Wo)


class CSRLinear(_CSRWeight, nn.Linear):
    """nn.Linear run as a CSR sparse matrix product: out = (W_csr @ x^T)^T + bias. For inference."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.refresh()

    @classmethod
    def from_dense(cls, linear: nn.Linear) -> "CSRLinear":
        new = cls(linear.in_features, linear.out_features, bias=linear.bias is not None,
                  device=linear.weight.device, dtype=linear.weight.dtype)
        return cls._copy_weights(new, linear)

    def forward(self, x):                                   # (B, in)
        out = self.weight_csr() @ x.reshape(-1, self.in_features).T   # (out, B)
        if self.bias is not None:
            out = out + self.bias[:, None]
        return out.T.reshape(*x.shape[:-1], self.out_features)      # (B, out)


def to_csr(net: nn.Module) -> nn.Module:
    """A copy of `net` in which every nn.Conv2d and nn.Linear is replaced by `CSRConv2d` /
    `CSRLinear` holding its effective weight (after any mask or quantizer): the same function,
    computed with sparse kernels. `net` is not changed; the copy is in eval mode."""
    net = copy.deepcopy(net)
    for name, module in list(net.named_modules()):
        if isinstance(module, (CSRConv2d, CSRLinear)):
            continue
        if isinstance(module, nn.Conv2d):
            new = CSRConv2d.from_dense(module)
        elif isinstance(module, nn.Linear):
            new = CSRLinear.from_dense(module)
        else:
            continue
        parent, _, leaf = name.rpartition(".")
        setattr(net.get_submodule(parent), leaf, new)
    return net.eval()


# --- counting -----------------------------------------------------------------------------------

def _matmul_flops(a: torch.Tensor, b: torch.Tensor) -> int:
    """2 * MACs of a @ b: 2 * nnz(a) * columns(b) for a sparse (CSR) a, else 2 * m * k * n."""
    n = b.shape[-1]
    if a.layout == torch.sparse_csr:
        return 2 * a._nnz() * n
    return 2 * a.shape[0] * a.shape[1] * n


def _mm_flops(a, b, *args, out_val=None, **kwargs) -> int:
    return _matmul_flops(a, b)


def _addmm_flops(bias, a, b, *args, out_val=None, **kwargs) -> int:
    return _matmul_flops(a, b)


_mm_flops._get_raw = _addmm_flops._get_raw = True   # FlopCounterMode passes the tensors themselves
_SPARSE_AWARE = {torch.ops.aten.mm: _mm_flops, torch.ops.aten.addmm: _addmm_flops}


def count_macs(net: nn.Module, input_shape=(1, 3, 32, 32)) -> float:
    """Multiply-accumulates per image of one forward pass of `net` (eval mode, no grad) on an
    input of `input_shape`, counted by ``torch.utils.flop_counter.FlopCounterMode``: its FLOPs
    of convolutions and matrix products / 2 / batch. A CSR weight counts only its non-zeros.
    """
    if len(input_shape) < 1 or any(not isinstance(d, numbers.Integral) or d < 1 for d in input_shape):
        raise ValueError(f"input_shape must be positive ints (B, C, H, W), got {input_shape!r}")
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    x = torch.zeros(input_shape, device=device)
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=_SPARSE_AWARE) as counter:
        net(x)
    net.train(was_training)
    return counter.get_total_flops() / 2 / input_shape[0]


def count_params(net: nn.Module, *, nonzero: bool = False, weights_only: bool = False) -> int:
    """Entries of all of `net`'s parameters (weights, biases, batch-norm scales and shifts; not the
    batch-norm statistics, which are buffers); nonzero=True counts the non-zero entries only.
    weights_only=True counts the effective weights (after masks) of the Conv2d and Linear layers
    only, the weights that pruning removes."""
    from .models import prunable_layers

    with torch.no_grad():
        tensors = [m.weight for _, m in prunable_layers(net)] if weights_only else list(net.parameters())
        if nonzero:
            return int(sum(int((t != 0).sum()) for t in tensors))
        return sum(t.numel() for t in tensors)


# --- latency ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Latency:
    """Latency of one model at one setting; times in seconds per forward pass (one batch)."""

    model: object            # the key the model was given in `measure`
    batch_size: int
    threads: int | None      # None on CUDA
    device: str
    measurement: benchmark.Measurement   # all blocks of all rounds, merged

    @property
    def median(self) -> float:
        return self.measurement.median

    @property
    def iqr(self) -> float:
        return self.measurement.iqr

    @property
    def times(self) -> list[float]:
        """Seconds per call of every measured block."""
        return list(self.measurement.times)

    @property
    def quartiles(self) -> tuple[float, float]:
        """(q1, q3) of `times` (linear interpolation): the IQR's ends."""
        q = torch.tensor(self.times, dtype=torch.float64).quantile(torch.tensor([0.25, 0.75], dtype=torch.float64))
        return float(q[0]), float(q[1])


def thread_settings(device) -> tuple[int | None, ...]:
    """The thread counts to measure: on the CPU 1, ..., torch.get_num_threads() (at most 1, 2, 4,
    ... and the maximum); on a GPU (None,): host threads do not set its speed."""
    if torch.device(device).type != "cpu":
        return (None,)
    top = torch.get_num_threads()
    counts = {top}
    n = 1
    while n < top:
        counts.add(n)
        n *= 2
    return tuple(sorted(counts))


def machine_load() -> str:
    """One line on how busy the machine is: the 1-minute load average (processes running or
    waiting for a CPU) against the number of CPUs. Above that number, other processes compete
    for the cores, and timings with several threads suffer most (their threads wait for each
    other). Empty where the system does not report it."""
    import os

    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return ""
    cpus = os.cpu_count() or 1
    verdict = "busy: other processes compete for the CPUs" if load > cpus - 0.5 else "mostly idle"
    return f"load average {load:.1f} on {cpus} CPUs ({verdict})"


def _check_positive_int(name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
        raise ValueError(f"{name} must be a positive int, got {v!r}")
    return int(v)


def measure(models: dict, *, batch_sizes=(1, 256), threads=None, rounds: int = 3,
            min_run_time: float = 0.3, image_shape=(3, 32, 32), progress: bool = True) -> dict:
    """Latency of every model at every batch size and thread count, interleaved.

    Args:
        models: {key: nn.Module}, all on the same device; keys are labels, e.g. ("CSR", 0.8).
        batch_sizes: images per forward pass.
        threads: CPU thread counts; default `thread_settings(device)`.
        rounds: passes over all models; each times every setting again.
        min_run_time: seconds of calls per setting and round (at least one call).
    Returns {(key, batch_size, threads): Latency}. Models are put in eval mode and restored.
    The input is uniform random images (the time does not depend on the values).
    """
    if not isinstance(models, dict) or not models:
        raise ValueError("models must be a non-empty dict {label: nn.Module}")
    rounds = _check_positive_int("rounds", rounds)
    batch_sizes = [_check_positive_int("batch_sizes", b) for b in batch_sizes]
    devices = {next(m.parameters()).device for m in models.values()}
    if len(devices) != 1:
        raise ValueError(f"all models must be on one device, got {sorted(map(str, devices))}")
    device = devices.pop()
    threads = tuple(thread_settings(device) if threads is None else threads)
    if device.type == "cpu":
        threads = tuple(_check_positive_int("threads", t) for t in threads)
    settings = [(key, b, t) for b in batch_sizes for t in threads for key in models]
    inputs = {b: torch.rand((b, *image_shape), generator=torch.Generator().manual_seed(0)).to(device)
              for b in batch_sizes}
    modes = {key: m.training for key, m in models.items()}
    timers, number, blocks = {}, {}, {s: [] for s in settings}
    bar = _bar(rounds * len(settings), progress)
    try:
        for m in models.values():
            m.eval()
        for s in settings:                        # warm-up, and how many calls fill a block
            key, b, t = s
            timers[s] = _timer(models[key], inputs[b], t, key)
            first = timers[s].timeit(1).median
            number[s] = max(1, int(min_run_time / 3 / max(first, 1e-9)))  # ~3 blocks per round
        for _ in range(rounds):
            for s in settings:                    # interleaved: every model once per round
                spent = 0.0
                while True:                       # blocks of number[s] calls, ~min_run_time in all
                    m = timers[s].timeit(number[s])
                    blocks[s].append(m)
                    spent += m.median * number[s]
                    if spent >= min_run_time:
                        break
                bar.update(1)
    finally:
        bar.close()
        for key, m in models.items():
            m.train(modes[key])
    out = {}
    for s, ms in blocks.items():
        key, b, t = s
        merged = benchmark.Measurement.merge(ms)[0]
        out[s] = Latency(key, b, t if device.type == "cpu" else None, str(device), merged)
    return out


def _timer(net, x, threads, key):
    def run():
        with torch.inference_mode():
            return net(x)
    timer = benchmark.Timer("run()", globals={"run": run}, num_threads=threads or 1,
                            label="forward", description=str(key))
    return timer


def _bar(total: int, enabled: bool):
    from .train import _progress
    bar = _progress(total, "latency", enabled)
    bar.unit = "setting"
    return bar


# --- reading results ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Speedup:
    """median(baseline) / median(model), and the range the quartiles allow:
    low = q1(baseline) / q3(model), high = q3(baseline) / q1(model)."""

    median: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.median:.2f}x (quartiles allow {self.low:.2f}x to {self.high:.2f}x)"


def speedup(results: dict, model, baseline, batch_size: int, threads=None) -> Speedup:
    """How much faster `model` ran than `baseline` at one setting of `measure`'s results."""
    try:
        m, base = results[(model, batch_size, threads)], results[(baseline, batch_size, threads)]
    except KeyError as e:
        raise ValueError(f"no measurement {e.args[0]!r}; measured: {sorted(map(str, results))}") from None
    (mq1, mq3), (bq1, bq3) = m.quartiles, base.quartiles
    return Speedup(base.median / m.median, bq1 / mq3, bq3 / mq1)


def crossover(results: dict, kind: str, baseline) -> dict:
    """{(batch_size, threads): the lowest sparsity s such that every model (kind, s') with
    s' >= s ran faster than `baseline` (median), or None if the fastest-sparsity one did not}.
    Model keys are (kind, sparsity) tuples."""
    out = {}
    for b, t in dict.fromkeys((b, t) for _, b, t in results):
        base = results[(baseline, b, t)].median
        found = None
        points = sorted((k[1], lat.median) for (k, bb, tt), lat in results.items()
                        if isinstance(k, tuple) and k[0] == kind and (bb, tt) == (b, t))
        for s, med in reversed(points):       # from the sparsest down, while faster than baseline
            if med >= base:
                break
            found = s
        out[(b, t)] = found
    return out


# --- showing results ----------------------------------------------------------------------------

def _fmt_key(key) -> str:
    if isinstance(key, tuple):
        return " ".join(f"{v:.0%}" if isinstance(v, float) else str(v) for v in key)
    return str(key)


def latency_table(results: dict, *, baseline=None) -> str:
    """Text table: one row per model, batch size and thread count: median and IQR in ms, ms per
    image, and (with `baseline`, a model key) the speed-up median(baseline) / median(model)."""
    from .report import table

    rows = []
    for (key, b, t), lat in results.items():
        row = [_fmt_key(key), b, "-" if t is None else t, f"{lat.median * 1e3:.3g}",
               f"{lat.iqr * 1e3:.2g}", f"{lat.median * 1e3 / b:.3g}"]
        if baseline is not None:
            base = results[(baseline, b, t)]
            row.append(f"{base.median / lat.median:.2f}x")
        rows.append(row)
    headers = ["model", "batch", "threads", "median ms", "IQR ms", "ms/image"]
    return table(rows, headers + (["speed-up"] if baseline is not None else []))


def plot_latency(results: dict, *, baseline=None, title=None):
    """Latency (median, quartiles as error bars, log scale) against sparsity: one row of panels per
    batch size, one column per thread count. Model keys must be (kind, sparsity): one line per
    kind, e.g. ("dense", 0.0), ("CSR", 0.8), ("channels", 0.5); `baseline` (a model key) is drawn
    as a horizontal line with its interquartile band. Returns the Figure."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    for key in {k for k, _, _ in results}:
        if not (isinstance(key, tuple) and len(key) == 2 and isinstance(key[1], (int, float))):
            raise ValueError(f"plot_latency needs model keys (kind, sparsity), got {key!r}")
    batches = sorted({b for _, b, _ in results})
    threads = sorted({t for _, _, t in results}, key=lambda t: t or 0)
    fig, axes = plt.subplots(len(batches), len(threads), figsize=(4.6 * len(threads), 3.3 * len(batches)),
                             squeeze=False)
    kinds = [k for k in dict.fromkeys(k[0] for k, _, _ in results) if baseline is None or k != baseline[0]]
    markers = "os^Dv<>p"
    ms = FuncFormatter(lambda v, _: f"{v:g}")
    for row, b in enumerate(batches):
        for col, t in enumerate(threads):
            ax = axes[row][col]
            if baseline is not None and (baseline, b, t) in results:
                base = results[(baseline, b, t)]
                ax.axhline(base.median * 1e3, color="0.3", ls="--", lw=1, label=baseline[0])
                ax.axhspan(base.quartiles[0] * 1e3, base.quartiles[1] * 1e3, color="0.3", alpha=0.12, lw=0)
            for i, kind in enumerate(kinds):
                pts = sorted((k[1], lat) for (k, bb, tt), lat in results.items()
                             if k[0] == kind and bb == b and tt == t)
                y = [lat.median * 1e3 for _, lat in pts]
                yerr = [[(lat.median - lat.quartiles[0]) * 1e3 for _, lat in pts],
                        [(lat.quartiles[1] - lat.median) * 1e3 for _, lat in pts]]
                ax.errorbar([x for x, _ in pts], y, yerr=yerr, marker=markers[i % len(markers)], capsize=3,
                            color=f"C{i}", ls="-" if len(pts) > 1 else "none", label=kind)
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(ms)
            ax.yaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel("fraction of weights removed")
            ax.set_ylabel("ms per batch")
            ax.set_title(f"batch {b}" + ("" if t is None else f", {t} thread{'s' if t > 1 else ''}"))
            ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
