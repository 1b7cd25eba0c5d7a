"""Issue 18, the book: theory of Lab 2 (f), Lab 3 (g), Lab 4 (d); concept 10's answer; the bibliography.
Run once, with the notebook edits, before the reference runs (the pages describe parts the labs then have)."""
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

LAB2 = r"""## Sensitivity and per-layer sparsity

Part (f) measures, instead of assuming, how much each layer can lose. A *sensitivity scan*
{cite:p}`li2017pruning` prunes one layer $l$ alone to sparsity $s$, every other layer dense, and
records the accuracy without fine-tuning; the drop $d_l(s)$ is the unchanged model's accuracy minus
that one. The scan chooses, so it runs on the validation images.

To meet a total exactly, count in weights: layer $l$ has $n_l$ weights, and pruning $k_l$ of them
costs about $d_l(k_l / n_l)$. The allocation solves

$$\min_{k_1, \dots, k_L} \sum_l d_l(k_l / n_l) \quad \text{subject to} \quad \sum_l k_l = K,\quad 0 \le k_l \le n_l,$$

with $K$ the number of weights one global threshold at the target prunes, so that (c), (e) and
(f) keep the same number of weights. The sum assumes that the drops of layers pruned together add
up, which the fine-tuned runs test. Each $d_l$ is measured at a few sparsities only; between them
it is taken linear, with $d_l(0) = 0$, and it is made non-decreasing (a noisy point never makes more
sparsity look less harmful). If every $d_l$ is convex, the problem is a fractional knapsack: the
cost of the next pruned weight of layer $l$ is the slope of $d_l$ divided by $n_l$, and taking the
cheapest weights of all layers first, until $K$, is optimal (an exchange argument: moving a weight
from a cheaper to a dearer slope can only add). Measured curves need not be convex, so `labkit.sensitivity.allocate_sparsity`
replaces each by its lower convex hull first and then fills greedily, rounding the counts so that
they add up to $K$ exactly. The division by $n_l$ is what makes the rule differ from pruning every
layer alike: a large layer gives many weights for one unit of its sparsity, so at the same curve
it is pruned further; a small, sensitive layer (the first convolution, the classifier) stays dense.

"""

LAB3 = r"""## Mixed precision at equal size

Part (g) gives every quantized layer its own width $b_l$ from a set $B$ (`mixed_bits`), at a
fixed size. The size of layer $l$ at $b$ bits, $S_l(b)$, is counted as Lab 4's file stores it:
$b$ bits per code, the codebook of $2^b$ float32 levels (those the weights use), and the rest of the
layer's record. The budget is the uniform model's size at $b_0$ (`budget_bits`),
$S = \sum_l S_l(b_0)$, so the uniform model is one of the allocations and the comparison is at
equal bytes. As for sparsity, a scan quantizes one layer at a time to each width and measures the
drop $d_l(b)$ on the validation images {cite:p}`wu2020integer`, and the allocation solves

$$\min_{b_1, \dots, b_L \in B} \sum_l d_l(b_l) \quad \text{subject to} \quad \sum_l S_l(b_l) \le S .$$

This is a multiple-choice knapsack. It is solved exactly by dynamic programming over the layers,
keeping only the Pareto frontier of (size, summed drop) pairs: a partial allocation that is both
larger and worse than another can never be completed into a better one. With sizes counted in
whole bits the constraint holds to the bit. The drops are made non-increasing in the width, so a
noisy point never makes fewer bits look better than more.

Measuring a drop per layer and width costs one evaluation each ($L \cdot |B|$ in all). Second-order
methods estimate sensitivity instead: HAWQ {cite:p}`dong2019hawq` ranks layers by the Hessian's top
eigenvalue, HAWQ-V2 by its trace, which Hutchinson's method estimates from Hessian-vector products
with random sign vectors, $\operatorname{tr} H \approx \frac{1}{m}\sum_i v_i^\top H v_i$. Those rank
how strongly a layer's loss curves around its weights; the scan measures the accuracy itself, which
is what the allocation needs, at a cost that is small for a model of this size.

"""

LAB4 = r"""## Integer inference

A fake-quantized model stores few distinct values but computes in float: it is exactly as fast as
the float model. Integer inference {cite:p}`jacob2018quantization` represents a tensor as
$x \approx s_x (q_x - z_x)$ with integer codes $q_x$ (uint8 activations, int8 weights with
$z_w = 0$) and computes a convolution's output as

$$y_j = s_x s_{w,j} \sum_i (q_{x,i} - z_x)\, q_{w,ij} + b_j,$$

the sum accumulated exactly in int32 and the result rescaled once to the next layer's codes. The
scales of the weights come from the weights (one per output channel); those of the activations
must be known before the model runs: *static* quantization calibrates them on sample inputs (here
training images: calibration fits ranges and chooses nothing), as the minimum and maximum each
tensor reaches. The speed comes from the kernels: an int8 value is a quarter of a float32, so a
vector register holds four times as many, and CPUs with int8 dot-product instructions (AVX-512
VNNI, AVX-VNNI, AMX) multiply and accumulate groups of int8 products into int32 in one
instruction. On AVX2 alone the products of uint8 and int8 pass through saturating 16-bit sums;
quantizing the weights to 7 bits (`reduce_range`) keeps those sums from saturating.

Why ONNX Runtime. PyTorch's own x86 path (`torch.ao.quantization`) is deprecated, every call warns,
and it is slated for removal; its successor, torchao's PT2E flow, compiles the model with
`torch.compile` for tens of seconds and needs a C compiler at run time. ONNX is the format that CPU
deployments consume, ONNX Runtime is one pip wheel with the quantization tools included
(`quantize_static`, the QDQ format that the engine fuses into `QLinearConv`, `QLinearAdd` and
`QGemm` kernels), and what a student learns with it carries over to deployment. Part (d) exports
the float model (`torch.onnx.export(..., dynamo=True)`), quantizes it statically, runs it as a
labkit model (`labkit.inference.Engine`) and times it beside PyTorch's fp32 and bf16 in the same
process, with the same timer and spread as (b).

"""

CONCEPT10_OLD = """See it in [Lab 3](../labs/lab3_quantization.ipynb), part (b), which uses the simplest
mixed-precision rule: the 18 block convolutions are quantized, the first convolution
and the final linear layer stay in float."""
CONCEPT10_NEW = """See it measured in [Lab 3](../labs/lab3_quantization.ipynb), part (g): a width per layer,
chosen from a sensitivity scan at the bytes of one uniform width, against that uniform width,
before and after fine-tuning over seeds. Its last line gives this run's verdict on the concept,
whichever way it falls. Part (b) already uses the simplest mixed-precision rule: the 18 block
convolutions are quantized, the first convolution and the final linear layer stay in float."""

BIB = """
@misc{wu2020integer,
  author       = {Wu, Hao and Judd, Patrick and Zhang, Xiaojie and Isaev, Mikhail and Micikevicius, Paulius},
  title        = {Integer Quantization for Deep Learning Inference: Principles and Empirical Evaluation},
  howpublished = {arXiv:2004.09602},
  year         = {2020},
}
"""


def insert_before(path, heading, text):
    file = REPO / path
    page = file.read_text(encoding="utf-8")
    first = text.splitlines()[0]
    if first in page:
        print(f"{path}: already has {first!r}")
        return
    if heading not in page:
        sys.exit(f"{path}: {heading!r} not found")
    file.write_text(page.replace(heading, text + heading, 1), encoding="utf-8")
    print(f"{path}: added {first!r}")


insert_before("book/lab2_theory.md", "## What each part shows", LAB2)
insert_before("book/lab3_theory.md", "## Reading the results", LAB3)
insert_before("book/lab4_theory.md", "## Structured pruning", LAB4)
page = (REPO / "book/lab2_theory.md").read_text(encoding="utf-8")
row = "| (f) | per-layer sparsities from a sensitivity scan, fine-tuned | which layers the scan spares, and the accuracy at equal weights |\n"
if row not in page:
    anchor = "| (e) | iterative global pruning to $s_f$ | which layers become sparser, and the accuracy |\n"
    (REPO / "book/lab2_theory.md").write_text(page.replace(anchor, anchor + row, 1), encoding="utf-8")
concepts = (REPO / "book/concepts.md").read_text(encoding="utf-8")
if CONCEPT10_NEW not in concepts:
    if CONCEPT10_OLD not in concepts:
        sys.exit("book/concepts.md: concept 10's 'See it' paragraph not found")
    (REPO / "book/concepts.md").write_text(concepts.replace(CONCEPT10_OLD, CONCEPT10_NEW, 1), encoding="utf-8")
bib = (REPO / "book/references.bib").read_text(encoding="utf-8")
if "wu2020integer" not in bib:
    (REPO / "book/references.bib").write_text(bib.rstrip("\n") + "\n" + BIB, encoding="utf-8")
print("book: done")
