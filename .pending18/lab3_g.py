"""Issue 18, Lab 3 (g): mixed precision at equal bytes. Run once before Lab 3's reference run."""
from cells import code, edit, find, md, replace_in

INTRO = """## (g) Mixed precision at equal size

Concept 10 says that a width per layer gives a better size-accuracy trade-off than one width for
all. Here it is tested at equal bytes. A scan quantizes one layer at a time to each width of
`mixed_bits`, every other layer float, and measures the accuracy on the validation images
without fine-tuning (Wu et al., 2020, measure sensitivity this way); each layer's size at each
width is counted in the bytes of Lab 4's file (its codes and codebook: `sensitivity.layer_bytes`).
The allocation picks the widths with the least summed drop whose bytes are at most those of the
uniform model at `budget_bits` bits, exactly ([theory](../book/lab3_theory.md)). The reported
images choose nothing."""

SCAN = """qscan = sensitivity.quant_scan(pre, tuned.val, mixed_bits, mask_aware=False)
print(qscan.table())"""

PLOT = """sensitivity.plot_scan(qscan, title="One layer quantized at a time, no fine-tuning");"""

ALLOC = """def mixed_model(net, widths):
    \"\"\"A copy of net with each layer of widths quantized to its own width (the course's quantizer).\"\"\"
    net = quant.quantized(net, None)
    for b in sorted(set(widths.values())):
        quant.set_bits(net, b, mask_aware=False, layers=[name for name, w in widths.items() if w == b])
    return net


sizes_g = sensitivity.layer_bytes(models.resnet20(pretrained=True), mixed_bits, mask_aware=False)
budget = sum(s[budget_bits] for s in sizes_g.values())
widths = sensitivity.allocate_bits(qscan.bit_drops(), sizes_g, budget)
rows = [[name, qscan.sizes[name], w, f"{sizes_g[name][w]:,.1f}", f"{sizes_g[name][budget_bits]:,.1f}"] for name, w in widths.items()]
print(tables.table(rows, ["layer", "weights", "bits (mixed)", "bytes (mixed)", f"bytes ({budget_bits} bits)"]))
report_g = compress.size_report(mixed_model(models.resnet20(pretrained=True), widths), huffman=False)
measured = sum(layer.total for layer in report_g.layers if layer.name in widths) / 8
print(f"the quantized layers in Lab 4's format: mixed {measured:,.1f} bytes (the table's sum "
      f"{sum(sizes_g[n][w] for n, w in widths.items()):,.1f}), uniform {budget_bits} bits {budget:,.1f} bytes (the budget)")
print("widths: " + ", ".join(f"{list(widths.values()).count(b)} layers at {b} bits" for b in mixed_bits))"""

TUNE_MD = """Both models fine-tuned with quantization-aware training, `g_epochs` epochs each, with the seeds of
(e), from the pretrained model:"""

TUNE = """uniform_label = f"uniform {budget_bits} bits"
ptq_g = {"mixed": train.evaluate(mixed_model(pre, widths), tuned.test),
         uniform_label: train.evaluate(quant.quantized(pre, budget_bits, mask_aware=False), tuned.test)}
hist_g = {"mixed": [], uniform_label: []}
for seed in e_seeds:
    for label in hist_g:
        start = models.resnet20(pretrained=True)
        net = mixed_model(start, widths) if label == "mixed" else quant.quantized(start, budget_bits, mask_aware=False)
        hist_g[label].append(train.train(net.to(device), tuned, config, epochs=g_epochs, seed=seed, desc=f"(g) {label}, seed {seed}"))
        print(f"{label}, seed {seed}: {hist_g[label][-1].summary()}")"""

ANSWER = """print(report.seeds_table({f"(g) {label}": hs for label, hs in hist_g.items()}))
before = stats.compare("mixed, before fine-tuning", ptq_g["mixed"], f"{uniform_label}, before fine-tuning", ptq_g[uniform_label], images=n_rep)
after = stats.compare("mixed, fine-tuned", [h.best_acc for h in hist_g["mixed"]], f"{uniform_label}, fine-tuned",
                      [h.best_acc for h in hist_g[uniform_label]])
print(f"Answer (g), from the runs above (the quantized layers at most {budget:,.0f} bytes on both sides; {n_rep} reported images):")
print(" -", before)
print(" -", after)
verdict = ("true in this run: mixed precision is more accurate at equal bytes, beyond the noise" if after.beyond_noise and after.diff > 0
           else "false in this run: one width is more accurate at equal bytes, beyond the noise" if after.beyond_noise
           else "not shown by this run: after fine-tuning the two are within the noise")
print(f"Concept 10 (mixed precision gives a better size-accuracy trade-off than one width), measured here: {verdict}.")
results.add("mixed_ptq_g", ptq_g["mixed"], part="(g)", label=f"mixed precision at the bytes of {budget_bits} bits, before fine-tuning")
results.add("uniform_ptq_g", ptq_g[uniform_label], part="(g)", label=f"{uniform_label}, before fine-tuning")
for key, label in (("mixed_g", "mixed"), ("uniform_g", uniform_label)):
    mean, std = stats.mean_std([h.best_acc for h in hist_g[label]])
    results.add(key, mean, std=std, n=len(hist_g[label]), part="(g)", label=f"{label}, QAT {g_epochs} epochs")"""

WHY = """**Why (g).** A uniform width spends the same bits on every weight, and the scan shows that the
layers do not need them alike: quantizing some layers costs nothing measurable at the lowest width,
others lose much. The allocation moves bits from the first kind to the second at an unchanged
number of bytes, so before fine-tuning it can only gain, as far as the drops of the layers add up.
Fine-tuning changes the question: quantization-aware training lets the other weights compensate
for a coarse layer, which narrows what any allocation gains, and the comparison after
fine-tuning, over the seeds, is the one that decides concept 10 for this model. A second-order
measure of sensitivity (the Hessian trace, as HAWQ estimates it) could rank the layers without
quantizing each, but the measured drop is what the allocation needs."""


def apply(nb):
    replace_in(nb, "import json", "from labkit import checkpoints, course,", "from labkit import checkpoints, compress, course,")
    replace_in(nb, "import json", "report, settings,", "report, sensitivity, settings,")
    replace_in(nb, "run = settings.profile()", "e_seeds = list(term.seeds)       # (e) every variant is run with these seeds",
               "e_seeds = list(term.seeds)       # (e), (g) every variant is run with these seeds\n"
               "mixed_bits, budget_bits = list(term.mixed_bits), term.budget_bits   # (g) widths a layer may get; "
               "the bytes of uniform budget_bits\n"
               "g_epochs = run.epochs(5)         # (g) QAT epochs of each mixed and uniform run")
    at = find(nb, "## Summary: every number of this lab")
    nb.cells[at:at] = [md(INTRO), code(SCAN), code(PLOT), code(ALLOC), md(TUNE_MD), code(TUNE), code(ANSWER),
                       md(WHY, grade_id="lab3_g_answer")]


edit("labs/lab3_quantization.ipynb", "## (g) Mixed precision at equal size", apply)
