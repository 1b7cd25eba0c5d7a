"""Issue 16 for Lab 4: parameters from labkit.course, answers and concept verdicts computed by the run."""
import json, secrets, sys
p = sys.argv[1]
d = json.load(open(p))
cells = d["cells"]
def code(src, check=False):
    return {"cell_type": "code", "execution_count": None, "id": secrets.token_hex(4),
            "metadata": {"tags": ["nbval-check-output"]} if check else {}, "outputs": [],
            "source": src.strip("\n").splitlines(keepends=True)}
def find(start):
    hits = [i for i, c in enumerate(cells) if "".join(c["source"]).startswith(start)]
    assert len(hits) == 1, (start, hits); return hits[0]
def setsrc(i, text):
    cells[i]["source"] = text.strip("\n").splitlines(keepends=True)
def replace(old, new):
    hits = [c for c in cells if old in "".join(c["source"])]
    assert len(hits) == 1, (old[:60], len(hits))
    hits[0]["source"] = "".join(hits[0]["source"]).replace(old, new).splitlines(keepends=True)

replace("from labkit import (checkpoints, compress, costs, data,", "from labkit import (checkpoints, compress, costs, course, data,")
replace('''run = settings.profile()             # LABKIT_PROFILE: 'full' (the reference run) or 'ci' (quick)
target, bits = 0.8, 4                # (a) sparsity and bit width of the compressed models of Labs 2 and 3''',
        '''run = settings.profile()             # LABKIT_PROFILE: 'full' (the reference run) or 'ci' (quick)
term = course.current()              # LABKIT_COURSE: the course's edition of the values (labkit/course.py)
target, bits = term.target, term.bits   # (a) sparsity and bit width of the compressed models of Labs 2 and 3''')
replace('''sparsities = [0.5, 0.8, 0.9, 0.95]   # (b) unstructured sparsities run with sparse (CSR) kernels''',
        '''sparsities = sorted({*term.lab4_other_sparsities, target})   # (b) run with CSR kernels; the target among them''')
replace('''val_fraction = 0.5                   # (c) of the test images: they choose the epoch; the rest report''',
        '''val_fraction = term.val_fraction     # (c) of the test images: they choose the epoch; the rest report''')
replace("Everything an instructor may change is in the next cell.",
        "The values the labs share come from `labkit/course.py` (`LABKIT_COURSE` picks the edition); the rest\nof this lab's parameters are in the next cell.")
replace("print(report.run_header(tuned, device, config, profile=run))",
        "print(report.run_header(tuned, device, config, profile=run))\nprint(term.describe())")

# concept 3
i = find('final = sizes["Lab 3 (d)"]["+ Huffman"]')
cells.insert(i + 1, code('''
t = {label: footprint.totals(s) for label, s in built.items()}
pruned, pq = f"{target:.0%} one-shot", f"{target:.0%} one-shot + {bits}-bit"
print("Concept 3, from the sizes above:")
print(f" - torch.save of the pruned model: {t[pruned]['torch.save'] / dense_bytes:.2f}x the dense file")
print(f" - pruning alone (CSR, then Huffman): {dense_bytes / t[pruned]['+ Huffman']:.1f}x, against 1 / density = {1 / (1 - target):.1f}x")
print(f" - quantization on top: the CSR file {t[pq]['CSR'] / t[pq]['+ quantization']:.1f}x smaller; Huffman then "
      f"{t[pq]['+ quantization'] / t[pq]['+ Huffman']:.2f}x more (on the float pruned model {t[pruned]['CSR'] / t[pruned]['+ Huffman']:.2f}x, "
      f"on the dense one {t['dense']['CSR'] / t['dense']['+ Huffman']:.2f}x)")
best = max(t, key=lambda label: dense_bytes / t[label]["+ Huffman"])
print(f" - the largest ratio: {best}, {dense_bytes / t[best]['+ Huffman']:.1f}x; pruning alone reaches "
      f"{dense_bytes / t[pruned]['+ Huffman']:.1f}x. Concept 3 (pruning alone is enough): "
      + ("false on this run" if best != pruned else "not refuted by this run"))
''', check=True))
setsrc(find("**Concept 3: is pruning alone enough"), r'''
**Concept 3: is pruning alone enough, with quantization and Huffman coding optional?** The lines
above give this run's verdict; why it falls that way. Pruning only pays once the zeros are left
out of the file: `torch.save` of a pruned model holds every weight (the pruned ones as zeros) and
a mask beside them. CSR then stores every surviving weight as 32 bits plus its index, so pruning
alone buys a ratio below 1 / density. Quantization stores b bits instead of 32 per surviving
weight, and Huffman coding shrinks the codes and indices further; but Huffman coding needs the
quantization, since almost every float32 value is distinct: of a float model only the indices can
shrink. A quantized model that is not pruned (PTQ) gains from quantization and Huffman coding but
still stores every weight. So the stages multiply, and only the three together reach the largest
ratios.

**Why ResNet-20 gets far less than Deep Compression's 35x and 49x.** At fixed width a
surviving weight costs b + k bits, so at the target sparsity the ratio is capped near the printed
ceiling 32 / (d (b + k)), however the rest of the file is stored; Huffman coding moves the
weights alone only somewhat beyond it (printed above). AlexNet and VGG-16 were pruned to 11 %
and 7.5 % of their weights, mostly in huge fully connected layers, and their ceilings are
correspondingly higher. Then come the costs that do not shrink, shown in the share table:
batch normalisation (scales, shifts and running statistics of 688 channels, stored as
float32) is a large share of the smallest file, and AlexNet and VGG-16 have none; the layers
Lab 3 keeps in float, the codebooks, the code tables and the header are fixed costs that
weigh more in a model of only 0.27 M weights.
''')
# concept 2
replace('''for (b, t), s in latency.crossover(timings, "CSR", ("dense", 0.0)).items():
    print(f"batch {b}, threads {t}: CSR faster than dense " + (f"from {s:.0%} sparsity on" if s is not None else "at none of the sparsities"))''',
        '''print(latency.machine_load())
for b in batch_sizes:
    for label, key in (("Lab 2's model, dense kernels", masked_key), ("Lab 2's model, CSR kernels", csr_key)):
        print(f"batch {b}, threads {top}:", latency.speedup(timings, key, ("dense", 0.0), b, top).sentence(label, "dense"))
for (b, t), s in latency.crossover(timings, "CSR", ("dense", 0.0), beyond_spread=True).items():
    print(f"batch {b}, threads {t}: CSR faster than dense, beyond the spread, " +
          (f"from {s:.0%} sparsity on" if s is not None else "at none of the sparsities"))
wins = [f"{x:.0%} at batch {b} ({latency.speedup(timings, ('CSR', x), ('dense', 0.0), b, top).median:.2f}x)"
        for kind, x in sweep if kind == "CSR" for b in batch_sizes
        if latency.speedup(timings, ("CSR", x), ("dense", 0.0), b, top).faster]
print(f"Concept 2 (unstructured pruning gives large speed-ups, even with sparse kernels), on this {device.type.upper()} "
      f"at {top} threads:", "false on this run: no CSR model is faster than dense beyond the spread" if not wins
      else "CSR is faster than dense beyond the spread only at " + ", ".join(wins))''')
replace('''print(f"batch {b}, threads {top}: Lab 2's model, dense kernels vs dense: {latency.speedup(timings, masked_key, ('dense', 0.0), b, top)}")
    print(f"batch {b}, threads {top}: Lab 2's model, CSR kernels vs dense:   {latency.speedup(timings, csr_key, ('dense', 0.0), b, top)}")
''', "")
replace('''for b in batch_sizes:
    print(latency.machine_load())''', '''print(latency.machine_load())''')
setsrc(find("**Concept 2: does unstructured pruning give large inference speed-ups"), r'''
**Concept 2: does unstructured pruning give large inference speed-ups, even with sparse
kernels?** The lines above give this run's verdict, with the spread; why it falls that way. With
the ordinary dense kernels a pruned model does exactly the dense model's arithmetic, and every
forward pass first multiplies each weight by its mask (the mask is a parametrization), which costs
a noticeable share of a pass as short as batch 1. Sparse kernels do skip the zeros, but they pay
for every non-zero with an index, scattered memory accesses and no vectorised tiling, and the
im2col copy of the input costs about as much as a dense convolution of these small layers. At a
large batch the dense kernels run near the processor's peak, so the sparse ones fall furthest
behind there; at batch 1 the dense kernels are far from their peak and the gap is smaller, so the
sparsest models may come close. A sparsity that keeps ResNet-20's accuracy is not enough for a
speed-up on such hardware; it takes special hardware or structured patterns. The channel-pruned
models use the very same dense kernels but are simply smaller (c).
''')
# (c)
replace('''n_test = len(tuned.test)
for keep in keeps:
    a, u = hist[("channels", keep)].best_acc, hist[("unstructured", keep)].best_acc
    se = (stats.binomial_se(a, n_test) ** 2 + stats.binomial_se(u, n_test) ** 2) ** 0.5
    print(f"keep {keep:.0%}: channels {a:.2%}, unstructured {u:.2%}; difference {a - u:+.2%} ± {se:.2%} "
          f"(binomial standard errors on {n_test} images): {stats.verdict(a - u, se)}")''',
        '''n_test = len(tuned.test)
for keep in keeps:
    print(stats.compare(f"channels, keep {keep:.0%}", hist[("channels", keep)].best_acc,
                        "unstructured", hist[("unstructured", keep)].best_acc, images=n_test))''')
i = find("for keep, (small, equal) in pairs.items():\n    x = prune.sparsity(equal).total\n    fewer =")
replace('''    print(f"keep {keep:.0%}: {fewer:.2f}x fewer MACs; measured at batch {big}, threads {top}: "
          f"{latency.speedup(timings, ('channels', x), ('dense', 0.0), big, top)}")''',
        '''    for b in batch_sizes:
        s = latency.speedup(timings, ("channels", x), ("dense", 0.0), b, top)
        print(f"keep {keep:.0%}, {fewer:.2f}x fewer MACs; batch {b}, threads {top}: " + s.sentence("channel-pruned", "dense")
              + (f" Below the MAC reduction." if s.high < fewer else ""))
slow = [f"keep {keep:.0%}, batch {b}" for keep, (_, e) in pairs.items() for b in batch_sizes
        if not latency.speedup(timings, ("channels", prune.sparsity(e).total), ("dense", 0.0), b, top).faster]
print("Structured sparsity (concept 6's Group Lasso produces it) gives real speed-ups:", "true on this run: every channel-pruned model is faster "
      "than dense beyond the spread at every batch size" if not slow else "not faster beyond the spread at " + ", ".join(slow))''')
setsrc(find("**Does structured sparsity give real speed-ups?**"), r'''
**Does structured sparsity give real speed-ups?** (Concept 6's Group Lasso produces such
structure.) The lines above give this run's verdict. Removing whole channels leaves an ordinary, smaller dense network, which the same dense
kernels that gained nothing from unstructured zeros in (b) run with less work. The price is
accuracy: at the same number of weights the channel-pruned model cannot keep the individually
largest weights, so it loses more before fine-tuning (the table before fine-tuning), and the
comparison lines after fine-tuning say whether it catches up with the unstructured model in
this run's epochs. Group Lasso (concept 6) is a training-time route to the same structure: it
drives whole groups to zero, which then can be removed as here.

**Why is the speed-up smaller than the MAC reduction?** The flop counter counts only the
convolutions and the linear layer, and channel pruning shrinks only the 18 block convolutions.
Everything else keeps its cost: batch normalisation and ReLU after the first convolution and at
every block's output, the shortcut additions, the first convolution, the pooling and the
linear layer, and the memory traffic of the activations between blocks, which keep their full
width. The narrower convolutions also run less efficiently: their matrices are too small to
fill the processor's vector units and caches as well as the full ones. The lines above mark
each setting where even the quartiles' best case stays below the MAC reduction.
''')
open(p, "w").write(json.dumps(d, indent=1, ensure_ascii=False, sort_keys=True) + "\n")
print("ok")
