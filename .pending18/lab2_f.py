"""Issue 18, Lab 2 (f): sensitivity scan and per-layer sparsity. Run once before Lab 2's reference run."""
from cells import code, edit, find, md, replace_in

INTRO = """## (f) Sensitivity and per-layer sparsity

Which layers can lose weights cheaply? A sensitivity scan (Li et al., 2017) prunes one layer at a
time to each of `scan_sparsities` (the per-layer rule of (b)), every other layer dense, and measures
the accuracy without fine-tuning. The scan chooses the allocation below, so it runs on the
validation images; the reported images choose nothing. The rule and why it is one
([theory](../book/lab2_theory.md)): the least summed drop at a fixed number of pruned weights."""

SCAN = """pretrained = models.resnet20(pretrained=True).to(device)
scan = sensitivity.prune_scan(pretrained, tuned.val, scan_sparsities)
print(scan.table())"""

PLOT = """sensitivity.plot_scan(scan, title="One layer pruned at a time, no fine-tuning");"""

ALLOC_MD = """The allocation prunes exactly as many weights as one global threshold at the target does (the
total of (e)), layer by layer where the scan says the drop per pruned weight is smallest, and
`prune.prune_by_counts` prunes each layer's count of smallest weights. Beside it, the per-layer
rule of (c), and the summed drop the scan predicts for each (what the rule minimises; it assumes
that the layers' drops add up, which the fine-tuned runs below test):"""

ALLOC = """n_all = sum(scan.sizes.values())
counts = sensitivity.allocate_sparsity(scan, prune.pruned_count(n_all, target))
uniform = prune.sparsity(nets_c[0])            # (c): every layer at the target
rows = [[name, n, f"{uniform[name]:.1%}", f"{by_global[name]:.1%}", f"{counts[name] / n:.1%}"] for name, n in scan.sizes.items()]
print(tables.table(rows, ["layer", "weights", "per layer (c)", "global (e)", "allocated (f)"]))
print(f"pruned weights: (f) {sum(counts.values())}, (c) {sum(uniform.zeros.values())}, (e) {sum(by_global.zeros.values())} "
      f"of {n_all}")
per_layer = {name: uniform.zeros[name] for name in scan.sizes}
print(f"summed drop the scan predicts: per layer {sensitivity.predicted_drop(scan, per_layer):.2%}, "
      f"allocated {sensitivity.predicted_drop(scan, counts):.2%}")"""

TUNE_MD = """Fine-tuning the allocated model as (c) fine-tunes the per-layer one: pruned in one shot, the masks
held, the course's setup and seeds:"""

TUNE = """hist_f, nets_f = [], []
for seed in seeds:
    net = models.resnet20(pretrained=True).to(device)
    prune.prune_by_counts(net, counts)
    if seed == seeds[0]:
        start = models.resnet20(pretrained=True).to(device)
        prune.prune_by_percentage(start, target)
        print(f"before fine-tuning (reported images): allocated {train.evaluate(net, tuned.test):.2%}, "
              f"per layer {train.evaluate(start, tuned.test):.2%}")
    callbacks = [prune.RecordSparsity(), train.SaveBest(ckpt_dir / f"lab2_f_seed{seed}.pt")]
    hist_f.append(train.train(net, tuned, config, seed=seed, callbacks=callbacks, desc=f"(f) seed {seed}"))
    nets_f.append(net)
    print(f"seed {seed}: {hist_f[-1].summary()}; sparsity {prune.sparsity(net).total:.2%}")"""

SPARSITY_PLOT = """plots.plot_sparsity({"per layer (c)": uniform, "global (e)": by_global, "allocated (f)": prune.sparsity(nets_f[0])});"""

ANSWER = """runs_f = {"(f) allocated from the scan": hist_f, "(c) one-shot, fine-tuned": hist_c, "(e) iterative, global": hist_e}
print(report.seeds_table(runs_f))
print("Answer (f), from the runs above (over the seeds, on the reported images):")
for other in ("(c) one-shot, fine-tuned", "(e) iterative, global"):
    print(" -", stats.compare("(f) allocated", [h.best_acc for h in hist_f], other, [h.best_acc for h in runs[other]]))
mean, std = stats.mean_std([h.best_acc for h in hist_f])
results.add("allocated_f", mean, std=std, n=len(hist_f), part="(f)", label="per-layer sparsity from the scan, validation-selected")"""

WHY = """**Why (f).** The scan measures each layer alone, and the curves show what the rule exploits: at
the same sparsity the layers cost very different amounts, and a large layer gives many weights for
one step of its sparsity, a small one few. The rule prunes where a weight costs least; like the
global threshold of (e) it leaves the small, sensitive layers denser than the target, but it
decides from measured accuracy rather than from the size of the weights. Its prediction rests on
two assumptions the runs test: that the drops of the layers add up when several are pruned at
once, and that what costs least before fine-tuning also costs least after it. Fine-tuning recovers
much of any allocation's drop, so the allocations differ less after it than the predicted drops
do; the lines above say whether the difference that remains is beyond the noise over the seeds."""


def apply(nb):
    replace_in(nb, "import math", "report, settings, stats, tables, train", "report, sensitivity, settings, stats, tables, train")
    replace_in(nb, "run = settings.profile()", "seeds = list(term.seeds)",
               "scan_sparsities = list(term.scan_sparsities)   # (f) the sparsities of the sensitivity scan\n"
               "seeds = list(term.seeds)")
    at = find(nb, "## The best sparse model")
    nb.cells[at:at] = [md(INTRO), code(SCAN), code(PLOT), md(ALLOC_MD), code(ALLOC), md(TUNE_MD), code(TUNE),
                       code(SPARSITY_PLOT), code(ANSWER), md(WHY, grade_id="lab2_f_answer")]


edit("labs/lab2_pruning.ipynb", "## (f) Sensitivity and per-layer sparsity", apply)
