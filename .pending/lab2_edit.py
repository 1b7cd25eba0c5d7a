"""Issue 16 for Lab 2: parameters from labkit.course, answers computed by the run. Run once on a notebook."""
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
    assert len(hits) == 1, (old, len(hits))
    hits[0]["source"] = "".join(hits[0]["source"]).replace(old, new).splitlines(keepends=True)

# imports
replace("from labkit import checkpoints, data, devices, layers, models, plots, prune, report, settings, stats, tables, train",
        "from labkit import checkpoints, course, data, devices, layers, models, plots, prune, report, settings, stats, tables, train")
# parameters
setsrc(find("run = settings.profile()"), '''
run = settings.profile()            # LABKIT_PROFILE: 'full' (the reference run) or 'ci' (quick)
term = course.current()             # LABKIT_COURSE: the course's edition of the values (labkit/course.py)
qs, target = list(term.qs), term.target   # (b) fractions pruned one-shot; (c)-(e) final sparsity
config = train.TrainConfig(epochs=run.epochs(term.epochs))  # (c) the course's fine-tuning setup
prune_steps = run.epochs(term.prune_steps)    # (d), (e) prune before each of these first epochs ...
extra_epochs = run.epochs(term.extra_epochs)  # ... then train this many more at the final sparsity
seeds = list(term.seeds)            # every fine-tuning run is repeated with these seeds
val_fraction = term.val_fraction    # of the test images: they choose epochs and models; the rest report
ckpt_dir = Path("../checkpoints", run.name)  # best models, for Labs 3 and 4
''')
replace("Everything an instructor may change for a new term is in the next cell.",
        "The course's shared values (sparsities, epochs, seeds) come from `labkit/course.py`, one edition per\n"
        "term: `LABKIT_COURSE=2024` picks the 2024 edition for every lab at once, and a value changed in the\n"
        "next cell holds for this lab only.")
replace("print(report.run_header(tuned, device, config, profile=run))",
        "print(report.run_header(tuned, device, config, profile=run))\nprint(term.describe())")
# (a') the two halves
replace('''se = (stats.binomial_se(acc_val, len(tuned.val)) ** 2 + stats.binomial_se(acc_rep, len(tuned.test)) ** 2) ** 0.5
print(f"pretrained: {acc_val:.2%} on the {len(tuned.val)} validation images, {acc_rep:.2%} on the {len(tuned.test)} "
      f"reported ones; difference {acc_val - acc_rep:+.2%} ± {se:.2%}: {stats.verdict(acc_val - acc_rep, se)}")''',
        '''print(stats.compare("The pretrained model on the validation images", acc_val, "on the reported ones", acc_rep,
                    images=(len(tuned.val), len(tuned.test))))''')
# (b)
i = find("print(f\"q = {qs[-1]:g}, per layer:\")")
cells.insert(i + 1, code('''
print("Answer (b), from the runs above:")
for q, (s, a) in one_shot.items():
    print(" -", stats.compare(f"q = {q:g}", a, "the dense model", dense_acc, images=n_test))
''', check=True))
setsrc(find("**Answer (b).**"), r'''
**Why (b).** The smallest weights contribute little to each output, so removing a small fraction
of every layer changes the outputs, and the accuracy, by little. The larger $q$, the larger the
weights removed; beyond some fraction they are no longer negligible, and the remaining ones,
trained to work together with them, no longer compensate. Fine-tuning (c) is what repairs that
damage. (Both accuracies of a line are measured on the same test images, so the noise of their
difference is smaller than the root of the sum of squares used above: what the lines call beyond
the noise is beyond it, and a small difference they call within it may still be real.)
''')
# (c)
i = find("print(hist_c[0].table(")
cells.insert(i + 1, code('''
pruned = models.resnet20(pretrained=True).to(device)
prune.prune_by_percentage(pruned, target)
before, dense_rep = train.evaluate(pruned, tuned.test), train.evaluate(models.resnet20(pretrained=True).to(device), tuned.test)
after = [h.best_acc for h in hist_c]
print("Answer (c), from the runs above (all on the reported test images):")
print(" -", stats.compare("(c) fine-tuned", after, "the pruned model before fine-tuning", before, images=len(tuned.test)))
print(" -", stats.compare("(c) fine-tuned", after, "the dense model", dense_rep, images=len(tuned.test)))
if dense_rep - before > 0.01:   # a share of what pruning took, when it took anything
    print(f" - fine-tuning recovers {(stats.mean_std(after)[0] - before) / (dense_rep - before):.0%} of the accuracy pruning took")
ends = {f"{r['sparsity']:.4%}" for h in hist_c for r in h.records}
print(f" - sparsity at the end of every epoch of every seed: {', '.join(sorted(ends))}"
      + (" (held: no pruned weight came back)" if len(ends) == 1 else " (it changed: the masks did not hold)"))
'''))
setsrc(find("**Answer (c).**"), r'''
**Why (c).** Fine-tuning lets the weights that remain take over what the pruned ones did; the epoch
table shows how fast: most of the gain comes in the first epochs. The masks are held by a
parametrization (`prune.Mask`): the forward pass multiplies each weight by its mask, so a pruned
weight gets exactly zero gradient through the product and stays zero without any code re-zeroing
it, which the sparsity line above checks in every epoch of every seed. How close to the dense
model the recovery comes depends on how much training the schedule allows (the step count above).
''')
# (d)
i = find("dead = prune.zero_gradient_weights(")
cells.insert(i + 1, code('''
rec = hist_d[0].records
print(f"Answer (d), from the runs above (seed {seeds[0]} epoch by epoch, then every seed):")
if prune_steps > 1:
    early = rec[:prune_steps - 1]
    print(f" - after the pruning steps before epochs 1 to {prune_steps - 1} (scheduled {early[0]['sparsity_start']:.0%} to "
          f"{early[-1]['sparsity_start']:.0%}), the exact zeros at the end of the epoch are "
          f"{min(r['sparsity'] for r in early):.2%} to {max(r['sparsity'] for r in early):.2%}"
          + (": most pruned weights grow back" if max(r["sparsity"] for r in early) < early[-1]["sparsity_start"] / 2
             else ""))
held = rec[prune_steps - 1:]
print(f" - from the last pruning step on (mask held): sparsity {min(r['sparsity'] for r in held):.2%} to "
      f"{max(r['sparsity'] for r in held):.2%} at the end of every epoch")
low = min(rec, key=lambda r: r["test_acc"])
print(f" - lowest test accuracy {low['test_acc']:.2%} (epoch {low['epoch']}, scheduled sparsity {low['sparsity_start']:.0%}); "
      f"reported {hist_d[0].best_acc:.2%} (epoch {hist_d[0].best_epoch})")
print(" -", stats.compare("(d) iterative", [h.best_acc for h in hist_d], "(c) one-shot", [h.best_acc for h in hist_c]))
'''))
setsrc(find("**Answer (d).**"), r'''
**Why (d).** Between pruning steps the weights are zeroed, not frozen: until the mask is held, a
pruned weight with a non-zero gradient moves off zero at the next optimizer step, and the next
step prunes whatever is smallest then. So the schedule removes weights gradually but the model
computes with most of them until the last step, and the accuracy falls mostly when the scheduled
sparsity gets high and recovers once the mask is held. Whether that beats pruning at once (c)
with the same number of epochs is the last line above.
''')
# (e)
i = find("pretrained = models.resnet20(pretrained=True)\nrows = [[name, layer.weight[0].numel()")
cells.insert(i + 1, code('''
names = list(by_global.sizes)
mean_w = torch.tensor([layer.weight.abs().mean().item() for _, layer in layers.prunable_layers(pretrained)])
ranks = lambda v: torch.argsort(torch.argsort(torch.as_tensor(v, dtype=torch.float64))).double()
rho = torch.corrcoef(torch.stack([ranks(mean_w), ranks([by_global[n] for n in names])]))[0, 1].item()
less = [n for n in names if by_global[n] < target - 0.005]
stage3 = [n for n in names if n.startswith("stage3")]
s3 = sum(by_global.zeros[n] for n in stage3) / sum(by_global.sizes[n] for n in stage3)
print(f"Answer (e), from the runs above (seed {seeds[0]}):")
print(f" - the same total sparsity: {by_layer.total:.2%} per layer (d), {by_global.total:.2%} global (e)")
print(f" - global pruning leaves {len(less)} of {len(names)} layers below the target {target:.0%}: {', '.join(less)}")
print(f" - {names[0]} keeps {1 - by_global[names[0]]:.0%} of its weights, {names[-1]} {1 - by_global[names[-1]]:.0%}; "
      f"stage 3 ends at {s3:.2%}")
print(f" - rank correlation of a layer's mean |w| with its global sparsity: {rho:+.2f}")
'''))
replace("import math\nimport shutil", "import math\nimport shutil\n\nimport torch")
setsrc(find("**Answer (e).**"), r'''
**Why (e).** A global threshold compares magnitudes across layers, and the table above shows that
the mean |w| of a layer falls as its number of inputs per output grows. Weights start that way (He
initialisation draws them with standard deviation $\sqrt{2/\text{fan-in}}$) and the pretrained
model kept the ordering: the first convolution (3·3·3 = 27 inputs per output) and the linear layer
(64) have by far the largest weights, the stage-3 convolutions (3·3·64 = 576) the smallest. One
threshold therefore removes few weights from the layers with large weights and many from those with
small ones (the rank correlation above measures it). The large-weight layers are also small, with
little redundancy: the first convolution sees the raw image, the last layer makes the decision.
Stage 3 holds most of the weights, many of them small and redundant, so the global budget is met
mostly there. Whether that buys accuracy at the same total sparsity is in the summary below.
''')
# summary
replace('''for a, b in pairs:
    diff, se = stats.difference([h.best_acc for h in runs[a]], [h.best_acc for h in runs[b]])
    print(f"{a[:3]} - {b[:3]}: {diff:+.2%} ± {se:.2%} (standard error over seeds): {stats.verdict(diff, se)}")''',
        '''for a, b in pairs:
    print(stats.compare(a, [h.best_acc for h in runs[a]], b, [h.best_acc for h in runs[b]]))
for a in runs:
    print(stats.compare(a, [h.best_acc for h in runs[a]], "the dense model", dense_rep, images=len(tuned.test)))''')
replace('''("finetune_c", "one-shot 80 % + fine-tuning", hist_c)''', '''("finetune_c", f"one-shot {target:.0%} + fine-tuning", hist_c)''')
setsrc(find("**Summary.**"), r'''
**Summary.** The table gives each method's mean ± standard deviation over the seeds,
validation-selected and by the course's protocol; the course's numbers are higher or equal by
construction, since each is the maximum of noisy test accuracies. The lines below it compare the
methods pair by pair and each with the dense model, over the seeds (Welch's t-test): only a
difference beyond the noise is read as one method being better.

What can make the methods differ, whichever way those lines fall in a given run: where the weights
are removed (the table of (e)) and how gradually. A per-layer rule forces the small layers with
large weights (the first convolution, the classifier) to the target, a global one does not.
Gradual pruning (d) spends half its epochs below the target sparsity, and its early steps change
little, since the zeroed weights regrow within an epoch (the `sparsity` column of (d)); it pays
off with longer schedules (Zhu & Gupta, 2017, prune over many thousand steps).
''')
for c in cells:
    src = "".join(c["source"])
    if "twice its standard error" in src or "two standard errors" in src:
        print("NOTE: check the noise rule wording in cell", cells.index(c))
open(p, "w").write(json.dumps(d, indent=1, ensure_ascii=False, sort_keys=True) + "\n")
print("ok")
