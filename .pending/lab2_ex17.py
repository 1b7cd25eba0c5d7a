"""Issue 17 for Lab 2: the exercises (b) keep mask, (c) sparsity and held masks, (d) schedule, (e) global threshold."""
import sys
sys.path.insert(0, ".pending")
from nbedit import NB, code, md

nb = NB(sys.argv[1])
nb.replace("from labkit import checkpoints, course, data, devices, layers,",
           "from labkit import checkpoints, course, data, devices, exercises, layers,")

def check(key, gid, points):
    return code(f'''
exercises.check("{key}", {gid.split("_check")[0]})
### BEGIN HIDDEN TESTS
exercises.check("{key}", {gid.split("_check")[0]}, hidden=True)
### END HIDDEN TESTS
''', grade_id=f"lab2_{gid}", grade=True, points=points)

# (b)
i = nb.find("## (b) Pruning by percentage, per layer", start=True)
nb.insert(i + 1, md("""
**Exercise (b).** Write `keep_mask(w, q)`: the bool mask of one layer's weight `w`, True where a
weight is kept, for a fraction `q` in [0, 1] (0.8 prunes 80 %): every weight with |w| ≤ the
q-quantile of |w| is pruned, ties at the threshold included. (`torch.quantile` interpolates
linearly, as the rule says; compute in float64.) Every pruning below calls it
(`prune.prune_by_percentage(net, q, rule=keep_mask)`); labkit's reference is `prune.keep_mask`."""),
    code('''
def keep_mask(w, q):
    """True where |w| > the q-quantile of |w| (every |w| <= the threshold is pruned)."""
    ### BEGIN SOLUTION
    a = w.detach().abs().double()
    return a > torch.quantile(a.flatten(), q)
    ### END SOLUTION
''', grade_id="lab2_b_solution", solution=True),
    code('''
exercises.check("lab2 (b)", keep_mask)
### BEGIN HIDDEN TESTS
exercises.check("lab2 (b)", keep_mask, hidden=True)
### END HIDDEN TESTS
''', grade_id="lab2_b_check", grade=True, points=6))
nb.replace("    net = models.resnet20(pretrained=True).to(device)\n    prune.prune_by_percentage(net, q)\n",
           "    net = models.resnet20(pretrained=True).to(device)\n    prune.prune_by_percentage(net, q, rule=keep_mask)\n")

# (c)
i = nb.find("## (c) Fine-tuning the pruned model with the masks held", start=True)
nb.insert(i + 1, md("""
**Exercise (c).** Write `sparsity_of(weights)`, the fraction of exact zeros over a list of weight
tensors taken together (every weight counts once, so a large layer weighs more than a small one),
and `apply_mask(w, mask)`, the weight a held mask lets through: pruned positions exactly zero in
the forward pass and zero gradient there, the kept weights' gradient unchanged. Pruning below
holds its masks with your function (`mask_fn=apply_mask`), and the runs report your sparsity
beside labkit's (`prune.total_sparsity`, `prune.apply_mask`)."""),
    code('''
def sparsity_of(weights):
    """The fraction of zeros over all the tensors of `weights` together."""
    ### BEGIN SOLUTION
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    ### END SOLUTION


def apply_mask(w, mask):
    """w with the pruned positions (mask False) zero, differentiably."""
    ### BEGIN SOLUTION
    return w * mask
    ### END SOLUTION
''', grade_id="lab2_c_solution", solution=True),
    code('''
exercises.check("lab2 (c) sparsity", sparsity_of)
### BEGIN HIDDEN TESTS
exercises.check("lab2 (c) sparsity", sparsity_of, hidden=True)
### END HIDDEN TESTS
''', grade_id="lab2_c_sparsity_check", grade=True, points=2),
    code('''
exercises.check("lab2 (c) mask", apply_mask)
### BEGIN HIDDEN TESTS
exercises.check("lab2 (c) mask", apply_mask, hidden=True)
### END HIDDEN TESTS
''', grade_id="lab2_c_mask_check", grade=True, points=2))
nb.replace("""net = models.resnet20(pretrained=True).to(device)
prune.prune_by_percentage(net, target)
print(f"q = {target:g} before fine-tuning: test accuracy {train.evaluate(net, cifar.test):.2%}")""",
"""net = models.resnet20(pretrained=True).to(device)
prune.prune_by_percentage(net, target, rule=keep_mask, mask_fn=apply_mask)
weights = lambda net: [m.weight for _, m in layers.prunable_layers(net)]   # the effective weights
print(f"q = {target:g} before fine-tuning: test accuracy {train.evaluate(net, cifar.test):.2%}, "
      f"sparsity {sparsity_of(weights(net)):.2%} (yours), {prune.sparsity(net).total:.2%} (labkit's)")""")
nb.replace("""    net = models.resnet20(pretrained=True).to(device)
    prune.prune_by_percentage(net, target)
    callbacks = [prune.RecordSparsity(), train.SaveBest(ckpt_dir / f"lab2_c_seed{seed}.pt")]""",
"""    net = models.resnet20(pretrained=True).to(device)
    prune.prune_by_percentage(net, target, rule=keep_mask, mask_fn=apply_mask)
    callbacks = [prune.RecordSparsity(), train.SaveBest(ckpt_dir / f"lab2_c_seed{seed}.pt")]""")
nb.replace("""    nets_c.append(net)
    print(f"seed {seed}: {hist_c[-1].summary()}")""",
"""    nets_c.append(net)
    print(f"seed {seed}: {hist_c[-1].summary()}; sparsity after fine-tuning {sparsity_of(weights(net)):.2%}")""")
nb.replace("pruned = models.resnet20(pretrained=True).to(device)\nprune.prune_by_percentage(pruned, target)\n",
           "pruned = models.resnet20(pretrained=True).to(device)\nprune.prune_by_percentage(pruned, target, rule=keep_mask)\n")

# (d)
i = nb.find("## (d) Iterative pruning, per layer", start=True)
nb.insert(i + 1, md("""
**Exercise (d).** Write `schedule(e, steps, target)`: the fraction of each layer's weights pruned at
step e = 1, ..., `steps`, rising linearly so that the last step reaches the target. The runs below
prune on your schedule with your `keep_mask` and hold the masks with your `apply_mask`
(`prune.IterativePruning(..., schedule=schedule, rule=keep_mask, mask_fn=apply_mask)`)."""),
    code('''
def schedule(e, steps, target):
    """The fraction pruned at step e of steps (e = 1 .. steps)."""
    ### BEGIN SOLUTION
    return target * e / steps
    ### END SOLUTION
''', grade_id="lab2_d_solution", solution=True),
    code('''
exercises.check("lab2 (d)", schedule)
### BEGIN HIDDEN TESTS
exercises.check("lab2 (d)", schedule, hidden=True)
### END HIDDEN TESTS
''', grade_id="lab2_d_check", grade=True, points=4))
nb.replace("""    callbacks = [prune.IterativePruning(target, prune_steps, scope="layer"),""",
           """    callbacks = [prune.IterativePruning(target, prune_steps, scope="layer", schedule=schedule, rule=keep_mask,
                                        mask_fn=apply_mask),""")

# (e)
i = nb.find("## (e) Global iterative pruning", start=True)
nb.insert(i + 1, md("""
**Exercise (e).** Write `global_threshold(weights, q)`: one threshold for all layers together, the
q-quantile of |w| over every weight of the list `weights`. The runs below prune with it
(`scope="global", threshold=global_threshold`) on your schedule; labkit's reference is
`prune.global_threshold`."""),
    code('''
def global_threshold(weights, q):
    """The q-quantile of |w| over all the tensors of `weights` together."""
    ### BEGIN SOLUTION
    return torch.quantile(torch.cat([w.detach().abs().flatten().double() for w in weights]), q)
    ### END SOLUTION
''', grade_id="lab2_e_solution", solution=True),
    code('''
exercises.check("lab2 (e)", global_threshold)
### BEGIN HIDDEN TESTS
exercises.check("lab2 (e)", global_threshold, hidden=True)
### END HIDDEN TESTS
''', grade_id="lab2_e_check", grade=True, points=6))
nb.replace("""    callbacks = [prune.IterativePruning(target, prune_steps, scope="global"),""",
           """    callbacks = [prune.IterativePruning(target, prune_steps, scope="global", schedule=schedule,
                                        threshold=global_threshold, mask_fn=apply_mask),""")
nb.save()
print("ok")
