"""Issue 16 for Lab 3: parameters from labkit.course, answers computed by the run. Run once on a notebook."""
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

replace("from labkit import checkpoints, data, devices, models, plots, prune, quant, report, settings, stats, tables, train",
        "from labkit import checkpoints, course, data, devices, models, plots, prune, quant, report, settings, stats, tables, train")
setsrc(find("run = settings.profile()"), '''
run = settings.profile()         # LABKIT_PROFILE: 'full' (the reference run) or 'ci' (quick)
term = course.current()          # LABKIT_COURSE: the course's edition of the values (labkit/course.py)
ptq_bits = list(term.ptq_bits)   # (b), (f) post-training quantization, no training
qat_bits = list(term.qat_bits)   # (c), (d) quantization-aware fine-tuning (some of ptq_bits)
sym_qat_bits = list(term.sym_qat_bits)   # (f) symmetric quantization-aware fine-tuning (some of qat_bits)
hist_bits, layer_name = [4, 2], "stage2.0.conv2"   # (a) the layer whose weights are shown
target, e_bits = term.target, term.bits   # (d), (e) Lab 2's target sparsity and (e)'s bits
config = train.TrainConfig(epochs=run.epochs(term.epochs))   # (c), (d) the course's fine-tuning setup
prune_steps, extra_epochs = run.epochs(term.prune_steps), run.epochs(term.extra_epochs)   # (e) Lab 2 (e)'s schedule
sym_epochs = run.epochs(5)   # (f) symmetric fine-tuning, compared with (c) after as many epochs
e_zeros = ["float", "schedule", "zero_point"]   # (e) which weights the quantizer keeps at 0 (quant.ZEROS)
e_seeds = list(term.seeds)       # (e) every variant is run with these seeds
val_fraction = term.val_fraction # of the test images: they choose epochs and models; the rest report
ckpt_dir = Path("../checkpoints", run.name)   # Lab 2's best sparse model; this lab's (d) and (e) models
''')
replace("Everything an instructor may change for a new term is in the next cell.",
        "The values the labs share come from `labkit/course.py` (`LABKIT_COURSE` picks the edition); a value\n"
        "changed in the next cell holds for this lab only.")
replace("print(report.run_header(tuned, device, config, profile=run))",
        "print(report.run_header(tuned, device, config, profile=run))\nprint(term.describe())")

# (b)
i = find("print(quant.bits_table(quant.quantized(net, qat_bits[0])))")
cells.insert(i + 1, code('''
print("Answer (b), from the runs above:")
for b in ptq_bits:
    print(" -", stats.compare(f"{b} bits", ptq[b], "the float model", fp_acc, images=n_test))
''', check=True))
setsrc(find("**Answer (b).**"), r'''
**Why (b).** Each bit fewer doubles the step, and the rounding error of a weight is up to half a
step. While that error is small against the weights themselves, the quantized model computes
nearly what the float one does; once it is not, every one of the 18 quantized layers is damaged at
once and the errors compound through the network, so the accuracy falls steeply over a bit or two
rather than gradually, down to chance (10 % for ten classes). The max-min step is set by the few
largest weights (a), so most weights are represented by very few levels, and at low widths some
layers do not even use all of theirs (the table above). The lines above say, width by width,
where this run's accuracy leaves the float model's noise.
''')
# (c)
i = find("pre = models.resnet20(pretrained=True).to(device)   # float and PTQ on the reported images")
cells.insert(i + 1, code('''
print(f"Answer (c), from the runs above (one run per width, on the {n_rep} reported test images):")
for b, h in hist_c.items():
    print(" -", stats.compare(f"QAT {b} bits", h.best_acc, f"PTQ {b} bits", ptq_rep[b], images=n_rep))
    print(" -", stats.compare(f"QAT {b} bits", h.best_acc, "the float model", fp_rep, images=n_rep))
    last = h.records[-1]["val_acc"] >= max(r["val_acc"] for r in h.records)
    print(f"   its validation accuracy {'was highest at its last epoch: it may still have been rising' if last else f'peaked at epoch {h.best_epoch} of {len(h.records)}'}")
'''))
setsrc(find("**Answer (c).**"), r'''
**Why (c).** Fine-tuning works because the float weights keep accumulating small gradient steps
that no single rounding would show: a weight moves to another level once it has moved far enough,
and the network adapts its other weights (and its batch-norm statistics) to the quantized ones.
Where post-training quantization lost little, there is little to recover; where it lost much,
fine-tuning starts from a network that no longer works and, at the course's small learning rate,
need not get all the way back in the epochs it has, which the last line of each width tells
(a run whose best validation epoch is its last was still improving). The course's protocol (best
test epoch) is never below the validation-selected number, by construction.
''')
# (d)
i = find("fig = plots.plot_histories({f\"sparse + {b} bits\": h for b, h in hist_d.items()},")
cells.insert(i + 1, code('''
print(f"Answer (d), from the runs above (on the {n_rep} reported test images):")
for b in qat_bits:
    aware, aware_sp, naive, naive_sp, sym, sym_sp = before[b]
    print(f" - {b} bits before fine-tuning: the naive quantizer leaves {naive_sp:.2%} of the weights at zero "
          f"(mask-aware {aware_sp:.2%}, symmetric {sym_sp:.2%})")
    print("   " + str(stats.compare("mask-aware", aware, "naive", naive, images=n_rep)))
    print("   " + str(stats.compare("symmetric", sym, "mask-aware asymmetric", aware, images=n_rep)))
    print("   " + str(stats.compare(f"fine-tuned", hist_d[b].best_acc, "the float sparse model", sparse_rep, images=n_rep)))
    print("   " + str(stats.compare(f"sparse + {b} bits, fine-tuned", hist_d[b].best_acc, f"dense QAT {b} bits (c)",
                                    hist_c[b].best_acc, images=n_rep)))
held = {f"{s:.4%}" for h in hist_d.values() for s in h.column("sparsity")}
print(f" - sparsity at the end of every epoch of every width: {', '.join(sorted(held))}")
'''))
setsrc(find("**Answer (d).**"), r'''
**Why (d).** *The naive quantizer un-prunes the model.* The cell after the first table shows the
mechanism on one layer: min and max are the same with or without the zeros (they lie between the
smallest and largest kept weights), but 0 is not one of the levels $\beta + \alpha k/(2^b - 1)$,
so every pruned weight is rounded to the level nearest zero, a value of the order of a
quantization step. Most of each layer's weights then share that one non-zero value, which adds to
every output an offset the network never saw; the batch-norm statistics no longer fit, and the
error grows through the 18 layers. The mask-aware quantizer keeps the sparsity exactly and only
adds the rounding error of the kept weights; the symmetric one keeps it because 0 is one of its
levels. (A reference solution of the same assignment, on full CIFAR-10, reported about 10 % at
every width before fine-tuning, but its quantizer restores the zeros with a mask, so this
collapse does not explain its numbers, and we do not reproduce them.)

*Before and after fine-tuning.* A sparse network has only the kept fraction of its weights and no
spare ones to absorb the rounding errors of the others, so at the same width quantization costs
it more than the dense model of (b). Fine-tuning with the quantizer in place wins some of that
back while the mask holds the zeros (the sparsity line). At low widths the sparse model can do
better than dense QAT: the mask-aware quantizer adds an exact zero to its $2^b$ levels, where most
weights now are, and the kept weights are the large ones, far from zero, which a coarse grid
represents with a smaller error relative to their size; the lines above say whether this run
shows it.
''')
# (e)
replace('''for zero in e_zeros[1:]:   # each variant against the course's quantizer, over the seeds
    diff, se = stats.difference([h.best_acc for h in hist_e[zero]], [h.best_acc for h in hist_e["float"]])
    print(f"zero={zero} - zero=float: {diff:+.2%} ± {se:.2%}: {stats.verdict(diff, se)}")''',
        '''for zero in e_zeros[1:]:   # each variant against the course's quantizer, over the seeds
    print(stats.compare(f"zero={zero}", [h.best_acc for h in hist_e[zero]], "zero=float", [h.best_acc for h in hist_e["float"]]))''')
replace('''for zero, hs in hist_e.items():   # against Lab 2 (e), float, same schedule: standard error of a difference over seeds
    mean, std = stats.mean_std([h.best_acc for h in hs])
    se = (std ** 2 / len(hs) + lab2_e["std"] ** 2 / lab2_e["n"]) ** 0.5
    print(f"zero={zero} - Lab 2 (e) float ({lab2_e['value']:.2%}, {lab2_e['n']} seeds): {mean - lab2_e['value']:+.2%} "
          f"± {se:.2%}: {stats.verdict(mean - lab2_e['value'], se)}")''',
        '''lab2_seeds = stats.Seeds(lab2_e["value"], lab2_e["std"], lab2_e["n"])
for zero, hs in hist_e.items():   # against Lab 2 (e), float, the same schedule, over seeds
    print(stats.compare(f"zero={zero}", [h.best_acc for h in hs], "Lab 2 (e) in float", lab2_seeds))''')
i = find("for zero in e_zeros:\n    print(f\"zero={zero}, seed {e_seeds[0]}:\")")
cells.insert(i + 1, code('''
print(f"Answer (e), what each quantizer does to the regrown weights (seed {e_seeds[0]}):")
for zero in e_zeros:
    rec = hist_e[zero][0].records
    pruning = rec[:prune_steps - 1]   # the epochs whose pruning step is not the last: weights may regrow
    if pruning:
        q = [r["sparsity_quantized"] for r in pruning]
        print(f" - zero={zero}: over epochs 1 to {len(pruning)}, exact zeros of the 18 quantized layers at the end of "
              f"the epoch {min(q):.2%} to {max(q):.2%}; the schedule's sparsity after its step (all 20 layers) "
              f"{pruning[0]['sparsity_start']:.0%} to {pruning[-1]['sparsity_start']:.0%}")
    else:
        print(f" - zero={zero}: one pruning step, the mask held at once: no weight regrows in this run")
'''))
setsrc(find("**Answer (e).**"), r'''
**Why (e).** Between pruning steps the float weights that a step zeroed are free to regrow, and
what the model computes with them depends on the quantizer. The course's quantizer
(`zero="float"`) keeps at zero only the weights that are exactly 0 in float, so every regrown
weight is quantized to the level nearest zero, which is not 0: the model computes with those
weights un-pruned, the same un-pruning as the naive quantizer of (d), until the mask is held.
With the schedule's mask (`zero="schedule"`) the pruned positions are exactly 0 in every forward
pass, whatever their float weights do, so the exact zeros stay at what the last step removed from
the 18 quantized layers (the schedule's `sparsity_start` counts all 20 prunable layers, the float
first convolution and classifier included, so the two columns differ by those two layers). The
zero-point grid rounds every weight within half a step of zero to exactly 0, so its quantized
layers can be sparser than the schedule. (All this needs more than one pruning step: the CI
profile prunes once, with the mask held at once, so there the course's and the schedule's
quantizer coincide.) The lines above give the gap per quantizer, and the comparison lines, over
the seeds, whether protecting the zeros changes the accuracy reached at the target and how each
variant compares with Lab 2 (e), which ran the same schedule in float.

A reference solution of the same assignment reported 74.8 % here against 88.7 % for its float
Lab 2 (e). Besides the zeros, two details matter in an implementation: the pruning threshold is
computed on the float weights and not on the quantized ones (which take only a few distinct
values, so that a quantile of them prunes whole levels at once), and the straight-through
estimator trains the float weights, so a weight below the threshold can still grow back before
the mask is held.
''')
# (f)
i = find("ptq_on = lambda **kw:")
cells.insert(i + 1, code('''
print("Answer (f), from the runs above:")
for b in ptq_bits:
    print(" -", stats.compare(f"symmetric PTQ {b} bits", sym_ptq[b], "asymmetric", ptq[b], images=n_test))
for b, h in hist_f.items():
    print(" -", stats.compare(f"symmetric QAT {b} bits, {sym_epochs} epochs", h.best_acc,
                             f"asymmetric, first {sym_epochs} epochs", same_epochs[b].best_acc, images=n_rep))
'''))
replace('''After fine-tuning, compared at the same number of epochs, the difference is what the
table above prints. On a pruned model''', '''The lines above say, width by width, which one this run
favours, before and after fine-tuning at the same number of epochs. On a pruned model''')
replace("**Answer (f).** Read the `sym - asym` columns against the standard error. The two quantizers",
        "**Why (f).** The two quantizers")
replace('''Which effect wins
depends on the width: with many bits both are within noise of the float model; with few, the
asymmetric quantizer's extra level and tighter range against the symmetric one's exact zero
decide,''', '''Which effect wins
depends on the width: with many bits both steps are small against the weights; with few, the
asymmetric quantizer's extra level and tighter range against the symmetric one's exact zero
decide,''')
for c in cells:
    src = "".join(c["source"])
    if "twice its standard error" in src or "two standard errors" in src or "one in (e)" in src:
        print("NOTE: check the wording in cell", cells.index(c))
open(p, "w").write(json.dumps(d, indent=1, ensure_ascii=False, sort_keys=True) + "\n")
print("ok")
