"""Issue 17 for Lab 3: the exercises (a) STE quantizer, (d) mask-aware quantizer, (f) symmetric quantizer."""
import sys
sys.path.insert(0, ".pending")
from nbedit import NB, code, md

nb = NB(sys.argv[1])
nb.replace("import json\nfrom pathlib import Path\nfrom labkit import checkpoints, course, data, devices, models,",
           "import json\nfrom pathlib import Path\n\nimport torch\nfrom labkit import checkpoints, course, data, devices, exercises, models,")

# (a) ------------------------------------------------------------------------------------------------
i = nb.find("## (a) The quantizer on one layer", start=True)
nb.cells[i]["source"] = """## (a) The quantizer on one layer

The course's quantizer: with $\\alpha = \\max w - \\min w$ and $\\beta = \\min w$, every weight is
mapped to the nearest of $2^b$ evenly spaced levels $\\beta + \\alpha k / (2^b - 1)$,
$k = 0, \\dots, 2^b - 1$:
$w_s = (w - \\beta)/\\alpha$, $R = \\mathrm{round}(w_s (2^b - 1)) / (2^b - 1)$, $w_q = \\alpha R + \\beta$.
Its backward pass is the straight-through estimator: the gradient passes to the float weight
unchanged.

**Exercise (a).** Write `StraightThrough`, an autograd function whose forward pass returns a given
quantized tensor `q` and whose backward pass hands the gradient to `w` unchanged, and
`ste_quantize(w, bits)`, the quantizer above with that gradient. `bits=None` returns `w` itself,
`bits=0` all zeros; a constant `w` ($\\alpha = 0$) comes back unchanged. The rest of the lab
quantizes with your function (`quant.quantized(..., fn=ste_quantize)`); the cell after it checks
it against labkit's reference (`quant.ste_quantize`).""".splitlines(keepends=True)
nb.insert(i + 1, code('''
class StraightThrough(torch.autograd.Function):
    """Forward: the quantized tensor q; backward: the gradient with respect to w, unchanged."""

    @staticmethod
    def forward(ctx, w, q):
        ### BEGIN SOLUTION
        return q.clone()
        ### END SOLUTION

    @staticmethod
    def backward(ctx, grad):
        ### BEGIN SOLUTION
        return grad, None
        ### END SOLUTION


def ste_quantize(w, bits):
    """w on the 2^bits levels from min(w) to max(w), with the straight-through gradient."""
    ### BEGIN SOLUTION
    if bits is None:
        return w
    if bits == 0:
        return StraightThrough.apply(w, torch.zeros_like(w))
    v = w.detach()
    lo, hi = v.min(), v.max()
    alpha, n = hi - lo, 2 ** bits - 1
    if alpha == 0:
        return StraightThrough.apply(w, v)
    R = torch.round((v - lo) / alpha * n).clamp(0, n)
    return StraightThrough.apply(w, alpha * (R / n) + lo)
    ### END SOLUTION
''', grade_id="lab3_a_solution", solution=True),
    code('''
exercises.check("lab3 (a)", ste_quantize)
### BEGIN HIDDEN TESTS
exercises.check("lab3 (a)", ste_quantize, hidden=True)
### END HIDDEN TESTS
''', grade_id="lab3_a_check", grade=True, points=10))
nb.replace("    w_q, step = quant.quantize(w, b), (w.max() - w.min()).item() / (2 ** b - 1)",
           "    w_q, step = ste_quantize(w, b), (w.max() - w.min()).item() / (2 ** b - 1)")
nb.replace('fig = plots.plot_quantized_weights(w, {f"{b} bits": (quant.quantize(w, b), quant.encode(w, b)[1]) for b in hist_bits})',
           'fig = plots.plot_quantized_weights(w, {f"{b} bits": (ste_quantize(w, b), quant.encode(w, b)[1]) for b in hist_bits})')
nb.replace("quant.quantize(w_float, 2).sum().backward()", "ste_quantize(w_float, 2).sum().backward()")

# (b), (c): the student's quantizer ---------------------------------------------------------------------
nb.replace("`quant.quantized(net, b)` is a copy of `net` whose 18 convolutions",
           "`quant.quantized(net, b, mask_aware=False, fn=ste_quantize)` is a copy of `net` whose 18 convolutions")
nb.replace("    ptq[b] = train.evaluate(quant.quantized(net, b), cifar.test)",
           "    ptq[b] = train.evaluate(quant.quantized(net, b, mask_aware=False, fn=ste_quantize), cifar.test)")
nb.replace("    net = quant.quantized(models.resnet20(pretrained=True), b).to(device)\n    hist_c[b]",
           "    net = quant.quantized(models.resnet20(pretrained=True), b, mask_aware=False, fn=ste_quantize).to(device)\n    hist_c[b]")
nb.replace("ptq_rep = {b: train.evaluate(quant.quantized(pre, b), tuned.test) for b in hist_c}",
           "ptq_rep = {b: train.evaluate(quant.quantized(pre, b, mask_aware=False, fn=ste_quantize), tuned.test) for b in hist_c}")

# (d) ------------------------------------------------------------------------------------------------
i = nb.find("## (d) Pruning and quantization", start=True)
nb.insert(i + 1, md("""
**Exercise (d).** Write `masked_quantize(w, bits, mask)`, the mask-aware quantizer: min and max over
the kept weights (`mask` True) only, every pruned weight exactly 0, the gradient straight through
at the kept weights (use your `StraightThrough` or `ste_quantize`). The cells below quantize the
pruned models with it (`fn=masked_quantize`), and the naive quantizer is your `ste_quantize`."""),
    code('''
def masked_quantize(w, bits, mask):
    """The kept weights of w (mask True) on the levels of their own min and max; the others 0."""
    ### BEGIN SOLUTION
    out = torch.zeros_like(w)
    out[mask] = ste_quantize(w[mask], bits)
    return out
    ### END SOLUTION
''', grade_id="lab3_d_solution", solution=True),
    code('''
exercises.check("lab3 (d)", masked_quantize)
### BEGIN HIDDEN TESTS
exercises.check("lab3 (d)", masked_quantize, hidden=True)
### END HIDDEN TESTS
''', grade_id="lab3_d_check", grade=True, points=3))
nb.replace("        q_net = quant.quantized(oneshot, b, mask_aware=aware)\n        row += [train.evaluate(q_net, cifar.test), prune.sparsity(q_net).total]\n    rows.append(row)\nprint(tables.table(rows, [\"bits\", \"mask-aware: accuracy\"",
           "        q_net = (quant.quantized(oneshot, b, fn=masked_quantize) if aware else\n                 quant.quantized(oneshot, b, mask_aware=False, fn=ste_quantize))\n        row += [train.evaluate(q_net, cifar.test), prune.sparsity(q_net).total]\n    rows.append(row)\nprint(tables.table(rows, [\"bits\", \"mask-aware: accuracy\"")
nb.replace("aware, naive = quant.quantize(w_p, b, mask=keep), quant.quantize(w_p, b)",
           "aware, naive = masked_quantize(w_p, b, keep), ste_quantize(w_p, b)")
nb.replace("""    for symmetric, aware in ((False, True), (False, False), (True, True)):
        q_net = quant.quantized(sparse, b, symmetric=symmetric, mask_aware=aware)""",
           """    for q_net in (quant.quantized(sparse, b, fn=masked_quantize), quant.quantized(sparse, b, mask_aware=False, fn=ste_quantize),
                  quant.quantized(sparse, b, symmetric=True)):   # symmetric: labkit's, mask-aware (your own comes in (f))""")
nb.replace("    net = quant.quantized(sparse, b)\n    callbacks = [prune.RecordSparsity(), train.SaveBest(ckpt_dir / f\"lab3_d_{b}bit.pt\")]",
           "    net = quant.quantized(sparse, b, fn=masked_quantize)\n    callbacks = [prune.RecordSparsity(), train.SaveBest(ckpt_dir / f\"lab3_d_{b}bit.pt\")]")

# (f) ------------------------------------------------------------------------------------------------
i = nb.find("## (f) Symmetric quantization", start=True)
nb.cells[i]["source"] = """## (f) Symmetric quantization

$s = \\max|w| / (2^{b-1} - 1)$ and $w_q = s\\,\\mathrm{round}(w / s)$, the $2^b - 1$ levels $sk$,
$k = -(2^{b-1} - 1), \\dots, 2^{b-1} - 1$, symmetric around zero, zero exact (labkit's reference:
`quant.symmetric_quantize`, in a model `quant.set_bits(net, b, symmetric=True)`).

**Exercise (f).** Write `symmetric_quantize(w, bits)` (bits >= 2), with the straight-through
gradient. The cells below use it; first, post-training quantization of the pretrained model beside
the asymmetric one of (b):""".splitlines(keepends=True)
nb.insert(i + 1, code('''
def symmetric_quantize(w, bits):
    """w on the levels s k, k = -(2^(bits-1) - 1) .. 2^(bits-1) - 1, s = max|w| / (2^(bits-1) - 1)."""
    ### BEGIN SOLUTION
    v = w.detach()
    m = 2 ** (bits - 1) - 1
    s = v.abs().max() / m
    if s == 0:
        return StraightThrough.apply(w, v)
    return StraightThrough.apply(w, s * torch.round(v / s).clamp(-m, m))
    ### END SOLUTION
''', grade_id="lab3_f_solution", solution=True),
    code('''
exercises.check("lab3 (f)", symmetric_quantize)
### BEGIN HIDDEN TESTS
exercises.check("lab3 (f)", symmetric_quantize, hidden=True)
### END HIDDEN TESTS
''', grade_id="lab3_f_check", grade=True, points=0))
nb.replace("    sym_ptq[b] = train.evaluate(quant.quantized(net, b, symmetric=True), cifar.test)",
           "    sym_ptq[b] = train.evaluate(quant.quantized(net, b, symmetric=True, mask_aware=False, fn=symmetric_quantize), cifar.test)")
nb.replace("""    for symmetric in (False, True):
        q_net = quant.quantized(oneshot, b, symmetric=symmetric, mask_aware=False)""",
           """    for q_net in (quant.quantized(oneshot, b, mask_aware=False, fn=ste_quantize),
                  quant.quantized(oneshot, b, symmetric=True, mask_aware=False, fn=symmetric_quantize)):""")
nb.replace("    net = quant.quantized(models.resnet20(pretrained=True), b, symmetric=True).to(device)",
           "    net = quant.quantized(models.resnet20(pretrained=True), b, symmetric=True, mask_aware=False, fn=symmetric_quantize).to(device)")
nb.save()
print("ok")
