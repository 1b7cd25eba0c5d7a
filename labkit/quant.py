"""Fixed-point quantization of weights with a straight-through estimator (Lab 3).

Two quantizers of a weight tensor w to b bits (book/lab3_theory.md derives both):

* asymmetric, the course's dynamic scaling: with alpha = max(w) - min(w), beta = min(w) and
  n = 2^b - 1,

      w_s = (w - beta) / alpha,   R = round(w_s n) / n,   w_q = alpha R + beta,

  2^b levels spread evenly from min(w) to max(w); 0 is in general NOT one of them;
* symmetric (``symmetric=True``, b >= 2): with m = 2^(b-1) - 1 and s = max|w| / m,

      w_q = s round(w / s),

  the 2^b - 1 levels s k, k = -m..m, symmetric around zero, zero exact;
* integer zero point (``zero_point=True``), the affine grid of ``torch.ao``'s ``FakeQuantize``
  (``torch.fake_quantize_per_tensor_affine``): with lo = min(min(w), 0), hi = max(max(w), 0),
  n = 2^b - 1, the scale s = (hi - lo) / n and the integer zero point z = round(-lo / s) in 0..n,

      w_q = (clamp(round(w / s) + z, 0, n) - z) s,

  2^b levels (k - z) s, k = 0..n: 0 is one of them (code z), so every |w| < s / 2 becomes exactly
  0. (w / s is computed as w * (1 / s), as torch does, so the two agree bit for bit.)

``round`` rounds half to even (``torch.round``, ``numpy.round``). A constant tensor (alpha = 0 or
s = 0) comes back unchanged, never NaN (with a zero point, whose range always holds 0, a
constant c != 0 is an end of the grid [min(c, 0), max(c, 0)]: c to within one float rounding);
``bits=0`` gives zeros, ``bits=None`` the float tensor.

Codes and codebook. The quantizers are computed as a table look-up: `encode` returns integer
codes (``R n``, ``k + m``, or ``clamp(round(w / s) + z, 0, n)``) and the codebook of float levels
(``alpha (k / n) + beta``, ``s k``, or ``(k - z) s``), and the quantized tensor is
``codebook[codes]``. The forward pass computes exactly that look-up, so `codes` of a layer
reproduces its effective weight bit for bit (Lab 4 stores them).

Masks. ``quantize(w, bits, mask=keep)`` quantizes only the kept entries (min/max, or max|w|, over
them) and sets the others to exactly 0. Without that, a pruned layer is un-pruned: its zeros are
rounded to the level nearest 0, which the asymmetric quantizer does not have (the trap of Lab 3 (d)).

Straight-through estimator. `QuantizeSTE` is the quantizer as an autograd function: its forward
pass is the quantized tensor, its backward pass returns the upstream gradient unchanged, as if
the quantizer were the identity (round has zero derivative almost everywhere, so its true
gradient would stop all learning). The float weights are what the optimizer updates; the forward
pass and the loss see their quantized values.

In a model. `set_bits(net, bits)` gives each of the chosen layers (default: the 18 convolutions of
ResNet-20's residual stages) a `Quantize` parametrization (``torch.nn.utils.parametrize``),
stacked after the pruning ``Mask`` of ``labkit.prune`` when there is one: the layer's weight
becomes quantize(original * mask). The Parameter stays the same object (an optimizer built before
keeps working), and pruning, sparsity, make_permanent, saving and loading work unchanged.
`Quantize` is mask-aware by default: it keeps exactly-zero entries of its input at zero and takes
min/max over the others. Its input is the masked float weight, so these are the pruned weights,
whichever was added first, the mask or the quantizer (``labkit.prune`` always puts the mask first);
it is the same for weights zeroed without a mask (iterative pruning before its last step). A kept
weight that is exactly 0.0 in float stays 0 too, which changes nothing. ``mask_aware=False`` is
the naive quantizer, for the notebook to show what it does to a sparse model.

Which weights are zero: the ``zero`` option of a layer's quantizer (`set_bits`, `quantized`,
`Quantize`), one of `ZEROS`; the three variants Lab 3 (e) compares during iterative pruning, where
the pruned weights regrow between steps:

* ``"float"`` (default, the course's quantizer): the zero set is the exact zeros of the quantizer's
  input, the masked float weight (W == 0; with ``mask_aware=False`` none); max-min grid over the
  rest. A pruned weight that regrew is no longer 0 in float, so it is quantized to a level,
  and the max-min grid has no level 0;
* ``"schedule"``: the zero set is the keep mask the pruning schedule's last step decided
  (``labkit.prune.IterativePruning`` hands it over, through ``labkit.layers.hand_schedule_mask``),
  also between steps that hold nothing: those positions are exactly 0 whatever their float
  value, min/max over the kept ones. Before a schedule hands a mask it acts as ``"float"``;
* ``"zero_point"``: the integer zero point grid above (0 is a level), min/max over the weights
  that are not exactly 0 (the range holds 0 anyway, so zeros never change it).

The backward pass is straight-through for all three: the float weights at the pruned positions
keep their gradient, so they can regrow in float and be kept by the schedule's next step.

A quantized model without changing the one you have: ``quant.quantized(net, 4)`` is a quantized
deep copy, ``quant.quantized_widths(net, {name: bits, ...})`` a copy with a width per layer (mixed
precision, Lab 3 (g)), and ``with quant.bits(net, 4): ...`` quantizes ``net`` for the block only, its
previous quantizers (or none) restored afterwards.

Precision. The grid (scale, offset, levels) is computed in float32 (float64 for a float64 tensor),
whatever the weight's dtype: bfloat16 and float16 cannot count to 2^b - 1 exactly for b > 8 (11),
so a grid computed in them picks wrong levels. The quantized tensor comes back in the weight's dtype.
`quantize` and `encode` refuse an empty tensor and NaN or infinite entries (a single inf would make
the whole grid NaN).

Bits, scheme, mask-awareness, the zero option and a schedule's mask are saved in
``net.state_dict()`` (the quantizer's extra state, key
``<layer>.parametrizations.weight.<i>._extra_state``; the zero option and the mask only when
``zero`` is not ``"float"``, so the course's quantizer saves what it always saved);
``labkit.checkpoints.load`` re-creates the quantizers (and masks) on a fresh model.

A student's own quantizer (the exercises of Lab 3, checked by ``labkit.exercises``): `set_bits`,
`quantized` and `bits` take ``fn``, called by the layer's forward pass in place of `QuantizeSTE`:
``fn(w, bits)`` for a naive quantizer (``mask_aware=False``), ``fn(w, bits, mask)`` for a mask-aware
one. Its references are `ste_quantize`, `masked_quantize` and `symmetric_quantize`. ``fn`` is not
saved: a loaded model quantizes with labkit's own, and `codes` always encodes with labkit's.
"""
from __future__ import annotations

import contextlib
import copy
import numbers
from collections.abc import Mapping

import torch
from torch import nn

from . import checks
from .layers import FollowsSchedule, add, find, prunable_layers, remove, select
from .tables import table

__all__ = [
    "MAX_BITS", "ZEROS", "encode", "quantize", "QuantizeSTE", "ste_quantize", "masked_quantize",
    "symmetric_quantize", "Quantize", "quantizable_layers", "selected_layers", "set_bits",
    "quantized", "quantized_widths", "bits", "quantizer_of", "bits_of", "codes", "bits_table",
]

MAX_BITS = 16
ZEROS = ("float", "schedule", "zero_point")   # which weights a layer's quantizer keeps at exactly 0


def _check_bits(bits, symmetric: bool = False) -> int | None:
    if bits is None:
        return None
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral) or not 0 <= bits <= MAX_BITS:
        raise ValueError(f"bits must be None (no quantization) or an int in 0..{MAX_BITS}, got {bits!r}")
    if symmetric and bits == 1:
        raise ValueError("bits=1 with symmetric=True leaves a single level, 0 (2^b - 1 levels "
                         "symmetric around zero); use bits >= 2, or symmetric=False for two levels")
    return int(bits)


def _grid(symmetric, zero_point) -> str:
    """The grid named by the two flags: 'minmax', 'symmetric' or 'zero_point'."""
    symmetric, zero_point = checks.flag("symmetric", symmetric), checks.flag("zero_point", zero_point)
    if symmetric and zero_point:
        raise ValueError("symmetric=True and zero_point=True exclude each other: the symmetric grid "
                         "has the level 0 already; zero_point is the asymmetric grid with an integer "
                         "zero point")
    return "symmetric" if symmetric else "zero_point" if zero_point else "minmax"


def _check_mask(w: torch.Tensor, mask) -> torch.Tensor | None:
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != w.shape:
        got = (f"{mask.dtype} tensor of shape {tuple(mask.shape)}" if isinstance(mask, torch.Tensor)
               else type(mask).__name__)
        raise ValueError(f"mask must be None or a bool tensor of the weight's shape {tuple(w.shape)} "
                         f"(True = kept), got {got}")
    return mask


# --- the quantizer on a tensor ------------------------------------------------------------------------

def encode(w: torch.Tensor, bits: int, *, symmetric: bool = False, zero_point: bool = False,
           mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer codes and codebook of w quantized to ``bits`` bits (formulas: module docstring).

    Returns ``(codes, codebook)``: codes int64 of w's shape, codebook float32 (float64 for a
    float64 w: the grid's precision, see the module docstring), on w's device.
    Asymmetric: codebook[k] = alpha (k / n) + beta, k = 0..n = 2^b - 1, codes = round(w_s n).
    Symmetric: codebook[j] = s (j - m), j = 0..2m (2^b - 1 levels), codes = round(w / s) + m, so
    the level 0 has code m. Zero point: codebook[k] = (k - z) s, k = 0..n (2^b levels),
    codes = clamp(round(w / s) + z, 0, n), the level 0 has code z. ``bits=0``: codebook [0.],
    every code 0.

    With ``mask`` (bool, True = kept) the scale comes from the kept entries only; elsewhere the
    quantized value is 0 (see `quantize`) and the code is 0 (asymmetric: meaningless), m (the
    symmetric level 0) or z (the zero point's level 0). With no kept entry at all, every
    quantized value is 0.
    Raises ValueError for an empty w or one with NaN or infinite entries (one host sync).
    """
    grid = _grid(symmetric, zero_point)
    bits = _check_bits(bits, grid == "symmetric")
    if bits is None:
        raise ValueError("encode: bits=None means no quantization, hence no codes; pass an int in "
                         f"0..{MAX_BITS}")
    _check_values(w, "encode")
    mask = _check_mask(w, mask)
    return _encode(w.double() if _overflows(w, grid) else w, bits, grid, mask)


def _check_values(w, what: str) -> None:
    if not isinstance(w, torch.Tensor) or not w.is_floating_point():
        got = f"a {w.dtype} tensor" if isinstance(w, torch.Tensor) else type(w).__name__
        raise ValueError(f"{what}: w must be a floating-point tensor, got {got}")
    if w.numel() == 0:
        raise ValueError(f"{what}: w is empty (shape {tuple(w.shape)}): there is no range to quantize")
    if not bool(torch.isfinite(w).all()):
        raise ValueError(f"{what}: w has NaN or infinite entries, which leave the quantization grid "
                         f"undefined; check the run that produced them (learning rate, loss)")


def _overflows(w: torch.Tensor, grid: str) -> bool:
    """Would the grid's range overflow float32 (finite weights near +-3.4e38: max - min is inf, the
    grid NaN)? Then the checked entry points compute the grid in float64 (one host sync)."""
    if w.dtype == torch.float64:
        return False
    span = w.detach().amax().double() - w.detach().amin().double()
    span = span if grid != "symmetric" else 2 * w.detach().abs().amax().double()
    return bool(span > torch.finfo(torch.float32).max / 2)


def _grid_dtype(w: torch.Tensor) -> torch.dtype:
    return torch.float64 if w.dtype == torch.float64 else torch.float32


def _range(w: torch.Tensor, mask: torch.Tensor | None):
    """(min, max) of w over the kept entries (0-d each); (0, 0) when nothing is kept."""
    if mask is None:
        return w.amin(), w.amax()
    any_kept = mask.any()
    lo = torch.where(any_kept, w.masked_fill(~mask, torch.inf).amin(), 0.0)
    hi = torch.where(any_kept, w.masked_fill(~mask, -torch.inf).amax(), 0.0)
    return lo, hi


def _encode(w: torch.Tensor, bits: int, grid: str, mask: torch.Tensor | None):
    """`encode` without the checks (the forward pass: no host sync); grid as `_grid`."""
    w = w.detach().to(_grid_dtype(w))
    if bits == 0:
        return torch.zeros(w.shape, dtype=torch.int64, device=w.device), w.new_zeros(1)
    if grid == "zero_point":
        n = 2 ** bits - 1
        lo, hi = _range(w, mask)
        lo, hi = lo.clamp(max=0.0), hi.clamp(min=0.0)              # the range holds 0 (torch.ao)
        scale = (hi - lo) / n                                      # 0-d; 0 only for an all-zero w
        inv = torch.where(scale > 0, 1.0 / scale, 0.0)             # w * (1 / s), as torch computes it
        z = torch.nan_to_num(torch.round(-lo / scale), nan=0.0).clamp_(0, n)   # 0-d, integer 0..n
        codes = (torch.round(w * inv) + z).clamp_(0, n).to(torch.int64)     # (w.shape), 0..n
        codebook = (torch.arange(n + 1, dtype=w.dtype, device=w.device) - z) * scale   # (n + 1,)
        zero_code = z.to(torch.int64)
    elif grid == "symmetric":
        m = 2 ** (bits - 1) - 1
        a = w.abs() if mask is None else w.abs().masked_fill(~mask, 0.0)
        s = a.amax() / m                                           # 0-d; 0 when nothing is kept
        k = torch.round(w / s).clamp_(-m, m)                       # (w.shape), integers -m..m
        codes = torch.nan_to_num_(k, nan=0.0).to(torch.int64) + m  # s = 0: 0/0 -> code m, level 0
        codebook = s * torch.arange(-m, m + 1, dtype=w.dtype, device=w.device)   # (2m + 1,)
        zero_code = m
    else:
        n = 2 ** bits - 1
        lo, hi = _range(w, mask)
        alpha, beta = hi - lo, lo                                  # 0-d each
        R = torch.round((w - beta) / alpha * n).clamp_(0, n)       # (w.shape), integers 0..n
        # A constant w (alpha = 0) gives 0/0 = NaN: code 0, the level beta = w. NaN weights (a
        # diverged run) get code 0 too, but their codebook is NaN, so the output still shows them.
        codes = torch.nan_to_num_(R, nan=0.0).to(torch.int64)
        codebook = alpha * (torch.arange(n + 1, dtype=w.dtype, device=w.device) / n) + beta   # (n + 1,)
        zero_code = 0
    if mask is not None:
        codes = codes.masked_fill_(~mask, zero_code)
    return codes, codebook


class QuantizeSTE(torch.autograd.Function):
    """The straight-through estimator: forward = the quantized tensor, ``codebook[codes]`` of
    `encode` (0 outside ``mask``); backward = the upstream gradient, unchanged (d w_q / d w := 1),
    at every entry, masked or not. ``QuantizeSTE.apply(w, bits, grid, mask)``, grid one of
    'minmax', 'symmetric', 'zero_point'."""

    @staticmethod
    def forward(ctx, w, bits, grid, mask):
        codes, codebook = _encode(w, bits, grid, mask)
        w_q = torch.take(codebook, codes).to(w.dtype)             # (w.shape): the look-up
        return w_q if mask is None else w_q.masked_fill_(~mask, 0.0)

    @staticmethod
    def backward(ctx, grad):
        return grad, None, None, None


def quantize(w: torch.Tensor, bits: int | None, *, symmetric: bool = False, zero_point: bool = False,
             mask: torch.Tensor | None = None) -> torch.Tensor:
    """w quantized to ``bits`` bits, with the straight-through gradient (`QuantizeSTE`).

    Forward: asymmetric w_q = alpha round((w - beta) / alpha (2^b - 1)) / (2^b - 1) + beta with
    alpha = max(w) - min(w), beta = min(w); symmetric w_q = s round(w / s), s = max|w| / (2^(b-1) - 1);
    zero point w_q = (clamp(round(w / s) + z, 0, 2^b - 1) - z) s, s = (max(w, 0) - min(w, 0)) / (2^b - 1),
    z = round(-min(w, 0) / s) (as ``torch.fake_quantize_per_tensor_affine``).
    With ``mask`` (bool, True = kept): min/max (max|w|) over the kept entries, the others exactly 0.
    Backward: the gradient with respect to w is the upstream gradient.
    ``bits=None`` returns w itself; ``bits=0`` zeros; a constant w (alpha = 0) comes back unchanged.
    The grid is computed in float32 (see the module docstring; in float64 when the range of finite
    weights near +-3.4e38 would overflow it); the result has w's dtype.
    Raises ValueError for bits outside None, 0..16, for symmetric with bits=1, symmetric with
    zero_point, a bad mask, or an empty w or one with NaN or infinite entries.
    """
    grid = _grid(symmetric, zero_point)
    bits = _check_bits(bits, grid == "symmetric")
    mask = _check_mask(w, mask)
    if bits is None:
        return w
    _check_values(w, "quantize")
    if _overflows(w, grid):           # max - min beyond float32: the grid in float64, the result in w's dtype
        limit = torch.finfo(w.dtype).max     # a zero-point level may lie up to s / 2 beyond the range
        return QuantizeSTE.apply(w.double(), bits, grid, mask).clamp(-limit, limit).to(w.dtype)
    return QuantizeSTE.apply(w, bits, grid, mask)


def ste_quantize(w: torch.Tensor, bits: int | None) -> torch.Tensor:
    """The course's quantizer with the straight-through gradient (Lab 3 (a)): min-max grid, every
    weight; ``bits=None`` gives w itself, ``bits=0`` zeros (the gradient still straight through)."""
    if bits is None:
        return w
    return QuantizeSTE.apply(w, bits, "minmax", None)


def masked_quantize(w: torch.Tensor, bits: int, mask: torch.Tensor) -> torch.Tensor:
    """The mask-aware quantizer (Lab 3 (d)): min-max grid over the kept weights (mask True), the
    others exactly 0; straight-through gradient."""
    return QuantizeSTE.apply(w, bits, "minmax", mask)


def symmetric_quantize(w: torch.Tensor, bits: int) -> torch.Tensor:
    """The symmetric quantizer (Lab 3 (f)): s round(w / s), s = max|w| / (2^(b-1) - 1); straight-through.
    bits=1 is refused (a single level, 0: the scale divides by 2^0 - 1 = 0)."""
    return QuantizeSTE.apply(w, _check_bits(bits, True), "symmetric", None)


def _check_fn(fn):
    if fn is not None and not callable(fn):
        raise ValueError(f"fn must be a function (a student's quantizer) or None for labkit's own, "
                         f"got {type(fn).__name__}")
    return fn


# --- the quantizer in a layer ---------------------------------------------------------------------

class Quantize(FollowsSchedule):
    """Parametrization W -> quantize(W, bits, ...) with the zero set of ``zero`` (`ZEROS`):

    * ``"float"``: mask = W != 0 if ``mask_aware`` (else none: the naive quantizer). Stacked after
      a pruning ``Mask``, W = original * mask: its zeros are the pruned weights, which a mask-aware
      quantizer keeps at exactly 0 (min/max over the others);
    * ``"schedule"``: mask = the keep mask a pruning schedule handed over last (`follow`, called
      by ``labkit.prune.IterativePruning`` after each step), W != 0 until one is handed;
    * ``"zero_point"``: the integer zero point grid (``zero_point=True`` of `quantize`), mask W != 0.

    Attributes ``bits``, ``symmetric``, ``mask_aware``, ``zero`` and ``keep`` (the schedule's mask,
    a bool buffer, or None); saved in the state dict as the module's extra state.
    """

    def __init__(self, bits: int, *, symmetric: bool = False, mask_aware: bool = True, zero: str = "float",
                 fn=None):
        super().__init__()
        self.register_buffer("keep", None, persistent=False)   # in the extra state instead
        self.fn = _check_fn(fn)                                 # a student's quantizer, or None
        self.configure(bits, symmetric=symmetric, mask_aware=mask_aware, zero=zero)

    def configure(self, bits: int, *, symmetric: bool = False, mask_aware: bool = True,
                  zero: str = "float") -> None:
        """Set the attributes, checked (ValueError naming a bad one) before any is changed. A zero
        option other than "schedule" drops a schedule's mask."""
        symmetric, mask_aware, zero = _check_variant(symmetric, mask_aware, zero)
        bits = _check_bits(bits, symmetric)
        if bits is None:
            raise ValueError("Quantize needs bits in 0..16; to remove quantization use set_bits(net, None)")
        self.bits, self.symmetric, self.mask_aware, self.zero = bits, symmetric, mask_aware, zero
        if zero != "schedule":
            self.keep = None

    def follow(self, keep: torch.Tensor) -> None:
        """Take a pruning schedule's keep mask (bool, True = kept); used with zero="schedule" only."""
        if self.zero == "schedule":
            self.keep = keep.detach().to(torch.bool).clone()

    def kept(self, W: torch.Tensor) -> torch.Tensor | None:
        """The entries of W this quantizer quantizes (the others are exactly 0): the schedule's
        mask (zero="schedule", once handed), W != 0 when mask-aware, else all (None)."""
        if self.zero == "schedule" and self.keep is not None:
            if self.keep.shape != W.shape:
                raise ValueError(f"the schedule's mask has shape {tuple(self.keep.shape)}, the weight "
                                 f"{tuple(W.shape)}")
            if self.keep.device != W.device:
                self.keep = self.keep.to(W.device)      # a mask loaded on the CPU: moved once
            return self.keep
        return W != 0 if self.mask_aware else None

    @property
    def grid(self) -> str:
        """'minmax', 'symmetric' or 'zero_point'."""
        return "symmetric" if self.symmetric else "zero_point" if self.zero == "zero_point" else "minmax"

    def forward(self, W: torch.Tensor) -> torch.Tensor:
        mask = self.kept(W)
        if self.fn is not None:
            return self.fn(W, self.bits) if mask is None else self.fn(W, self.bits, mask)
        return QuantizeSTE.apply(W, self.bits, self.grid, mask)

    def get_extra_state(self) -> dict:
        state = {"bits": self.bits, "symmetric": self.symmetric, "mask_aware": self.mask_aware}
        if self.zero != "float":                    # the course's quantizer saves what it always saved
            state["zero"] = self.zero
        if self.zero == "schedule":
            state["keep"] = self.keep
        return state

    def set_extra_state(self, state: dict) -> None:
        keep = state.get("keep")
        if keep is not None and (not isinstance(keep, torch.Tensor) or keep.dtype != torch.bool):
            raise ValueError(f"a quantizer's schedule mask must be a bool tensor, got {type(keep).__name__}")
        self.configure(state["bits"], symmetric=state["symmetric"], mask_aware=state["mask_aware"],
                       zero=state.get("zero", "float"))
        if keep is not None:
            self.follow(keep)

    def extra_repr(self) -> str:
        text = f"bits={self.bits}, symmetric={self.symmetric}, mask_aware={self.mask_aware}, zero={self.zero!r}"
        if self.zero == "schedule":
            text += ", schedule mask " + ("not handed yet" if self.keep is None else
                                          f"kept={int(self.keep.sum())}/{self.keep.numel()}")
        return text


def _check_variant(symmetric, mask_aware, zero) -> tuple[bool, bool, str]:
    """The three settings of a layer's quantizer, checked together."""
    symmetric, mask_aware = checks.flag("symmetric", symmetric), checks.flag("mask_aware", mask_aware)
    zero = checks.one_of("zero", zero, ZEROS)
    if zero == "zero_point" and symmetric:
        raise ValueError("zero='zero_point' is the asymmetric grid with an integer zero point; the "
                         "symmetric grid (symmetric=True) has the level 0 already: pass one of them")
    if zero == "schedule" and not mask_aware:
        raise ValueError("zero='schedule' keeps the schedule's pruned positions at 0, which is "
                         "mask-aware by definition; mask_aware=False is the naive quantizer (zero='float')")
    return symmetric, mask_aware, zero


def _scheme(q: Quantize) -> str:
    """The quantizer in words, as `bits_table` prints it: 'asymmetric', 'symmetric', then
    ', naive', ', schedule mask' or ', zero point' when it is not the course's."""
    words = "symmetric" if q.symmetric else "asymmetric"
    if not q.mask_aware:
        words += ", naive"
    if q.zero == "schedule":
        words += ", schedule mask" + ("" if q.keep is not None else " (none yet)")
    elif q.zero == "zero_point":
        words += ", zero point"
    return words


def quantizable_layers(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers Lab 3 quantizes: every Conv2d of the residual stages (modules named
    ``stage<N>...``: the 18 block convolutions of ResNet-20); the first conv and the final Linear
    stay float, as the course specifies."""
    return [(name, m) for name, m in prunable_layers(net)
            if isinstance(m, nn.Conv2d) and name.startswith("stage")]


def selected_layers(net: nn.Module, layers=None) -> list[tuple[str, nn.Module]]:
    """The (name, module) pairs that ``set_bits(net, ..., layers=layers)`` quantizes: ``layers``
    (names or pairs) or, when None, `quantizable_layers`."""
    if layers is None:
        layers = quantizable_layers(net)
        if not layers:
            raise ValueError("the model has no residual-stage convolution (Conv2d named 'stage...'); "
                             "name the layers to quantize with layers=[...]")
    return select(net, layers, what="quantize")


def quantizer_of(module: nn.Module) -> Quantize | None:
    """The layer's `Quantize` parametrization (attributes bits, symmetric, mask_aware, zero), or None."""
    return find(module, Quantize)


def bits_of(module: nn.Module) -> int | None:
    """The bit width the layer's weight is quantized to, or None for a float weight."""
    q = quantizer_of(module)
    return None if q is None else q.bits


def set_bits(net: nn.Module, bits: int | None, *, symmetric: bool = False, mask_aware: bool = True,
             zero: str = "float", layers=None, fn=None) -> nn.Module:
    """Quantize the weights of ``layers`` to ``bits`` bits from now on; returns ``net``.

    layers: names or (name, module) pairs (one name alone: that layer); default
    `quantizable_layers` (ResNet-20's 18 residual convolutions). A layer without a quantizer gets a `Quantize` parametrization, after its pruning
    mask if it has one; a layer that has one is reconfigured in place (bits, scheme, mask-awareness,
    zero option), so bits can change on an existing (pruned) model without rebuilding it.
    zero: which weights are exactly 0, one of `ZEROS` (module docstring): "float" (the course's:
    the float weight's zeros), "schedule" (the pruning schedule's current mask; hand it over by
    training with ``labkit.prune.IterativePruning``), "zero_point" (an integer zero point grid). ``bits=None`` removes
    the quantizer and leaves everything else (the mask) as it was: the float model again.
    The layer's Parameter is never replaced: an optimizer built before keeps updating it.
    fn: a student's quantizer (module docstring) the layers use from now on; None: labkit's.
    Raises ValueError, before changing anything, for bad bits, flags, zero option or layer names,
    or a combination that excludes itself (symmetric with "zero_point", naive with "schedule").
    """
    symmetric, mask_aware, zero = _check_variant(symmetric, mask_aware, zero)
    bits = _check_bits(bits, symmetric)
    fn = _check_fn(fn)
    for _, module in selected_layers(net, layers):
        q = quantizer_of(module)
        if bits is None:
            if q is not None:
                remove(module, q)          # the mask, if any, stays
        elif q is not None:
            q.configure(bits, symmetric=symmetric, mask_aware=mask_aware, zero=zero)
            q.fn = fn
        else:
            add(module, Quantize(bits, symmetric=symmetric, mask_aware=mask_aware, zero=zero, fn=fn))  # after a Mask
    return net


def quantized(net: nn.Module, bits: int | None, *, symmetric: bool = False, mask_aware: bool = True,
              zero: str = "float", layers=None, fn=None) -> nn.Module:
    """A deep copy of ``net`` quantized with ``set_bits(copy, bits, ...)`` (same arguments);
    ``net`` is not changed. The copy is independent: changing one never changes the other."""
    symmetric, mask_aware, zero = _check_variant(symmetric, mask_aware, zero)
    _check_bits(bits, symmetric)           # bad arguments are refused before copying
    names = [name for name, _ in selected_layers(net, layers)]   # the copy's layers of the same names
    return set_bits(copy.deepcopy(net), bits, symmetric=symmetric, mask_aware=mask_aware, zero=zero,
                    layers=names, fn=_check_fn(fn))


def quantized_widths(net: nn.Module, widths, *, symmetric: bool = False, mask_aware: bool = True,
                     zero: str = "float", fn=None) -> nn.Module:
    """A deep copy of ``net`` with each layer of ``widths`` (a mapping layer name -> bits; None:
    float) quantized to its own width, the same scheme for all (mixed precision, Lab 3 (g));
    layers not named keep what they had. ``net`` is not changed. Every name and width is checked
    before anything is copied: an unknown layer or a bad width is a ValueError."""
    if not isinstance(widths, Mapping) or not widths:
        raise ValueError(f"widths must be a non-empty mapping of layer name -> bits, got {widths!r}")
    symmetric, mask_aware, zero = _check_variant(symmetric, mask_aware, zero)
    checked = {}
    for name, b in widths.items():
        try:
            checked[name] = _check_bits(b, symmetric)
        except ValueError as e:
            raise ValueError(f"widths[{name!r}]: {e}") from None
    selected_layers(net, list(checked))     # unknown names are refused here, before copying
    fn = _check_fn(fn)
    copy_ = copy.deepcopy(net)
    for b in dict.fromkeys(checked.values()):   # one call per width, in the order first given
        set_bits(copy_, b, symmetric=symmetric, mask_aware=mask_aware, zero=zero, fn=fn,
                 layers=[name for name, w in checked.items() if w == b])
    return copy_


@contextlib.contextmanager
def bits(net: nn.Module, bits: int | None, *, symmetric: bool = False, mask_aware: bool = True,
         zero: str = "float", layers=None, fn=None):
    """``with quant.bits(net, 4): ...``: ``net`` quantized as ``set_bits(net, bits, ...)`` inside
    the block; afterwards (also when the block raises) each of those layers has its previous
    quantizer settings again, or no quantizer if it had none. Yields ``net``."""
    pairs = selected_layers(net, layers)
    before = [(module, quantizer_of(module)) for _, module in pairs]
    before = [(module, None if q is None else (q.get_extra_state(), q.fn)) for module, q in before]
    set_bits(net, bits, symmetric=symmetric, mask_aware=mask_aware, zero=zero, layers=pairs, fn=fn)
    try:
        yield net
    finally:
        for module, saved in before:
            q = quantizer_of(module)
            if saved is None:
                if q is not None:
                    remove(module, q)
                continue
            state, old_fn = saved
            if q is None:
                q = Quantize(state["bits"], symmetric=state["symmetric"])
                add(module, q)
            q.set_extra_state(state)
            q.fn = old_fn


def codes(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """``(codes, codebook)`` of a quantized layer's weight, for storage (Lab 4).

    codes: int64 of the weight's shape, in 0..len(codebook) - 1; codebook: the float32 levels
    (2^b asymmetric, 2^b - 1 symmetric; see `encode`). They reproduce the effective weight bit for
    bit: ``torch.where(module.weight != 0, codebook[codes], 0.0)`` equals ``module.weight``
    (symmetric and zero point: ``codebook[codes]`` alone does). The zeros of the weight include
    every pruned position (``labkit.prune.masks(net)[name]`` False, or the schedule's mask with
    zero="schedule"); a mask-aware asymmetric quantizer has no level 0, so the codes there are
    meaningless (0).
    Raises ValueError for a layer without a quantizer.
    """
    q = quantizer_of(module)
    if q is None:
        raise ValueError(f"codes: the layer {type(module).__name__} has no quantizer; quantize it "
                         f"first with set_bits(net, bits, layers=[...])")
    plist = module.parametrizations.weight
    with torch.no_grad():
        W = plist.original
        for p in plist:                 # the quantizer's input: the parametrizations before it
            if p is q:
                break
            W = p(W)
        return encode(W, q.bits, symmetric=q.symmetric, zero_point=q.zero == "zero_point", mask=q.kept(W))


def bits_table(net: nn.Module) -> str:
    """Text table, one row per prunable layer: weights, bits ('float' if none), scheme, how many
    distinct levels its non-zero weights use (of the codebook's), and sparsity. One host sync per
    quantized layer."""
    rows = []
    for name, module in prunable_layers(net):
        q = quantizer_of(module)
        W = module.weight.detach()
        nonzero = W != 0
        if q is None:
            rows.append([name, W.numel(), "float", "", "", 1 - nonzero.float().mean().item()])
            continue
        c, codebook = codes(module)
        used = torch.unique(c[nonzero]).numel()
        rows.append([name, W.numel(), q.bits, _scheme(q), f"{used}/{codebook.numel()}",
                     1 - nonzero.float().mean().item()])
    return table(rows, ["layer", "weights", "bits", "scheme", "levels used", "sparsity"], floatfmt=".2%")
