"""Issue 17 review: what the handouts must not give away (markdown/metadata only, and Lab 1's formula cell)."""
import sys
sys.path.insert(0, ".pending")
from nbedit import NB, md, nbmeta

path = sys.argv[1]
name = path.rsplit("/", 1)[-1].removesuffix(".ipynb")
nb = NB(path)

def answer(start, gid, points=0):
    i = nb.find(start, start=True)
    nb.cells[i]["metadata"]["nbgrader"] = nbmeta(gid, solution=True, grade=True, points=points, locked=False)

if name == "lab1_sparse_optimization":
    i = nb.find("The table columns: `final L`", start=True)
    text = nb.src(nb.cells[i])
    if "**Why (b).**" in text:
        head, rest = text.split("**Why (b).**", 1)
        why, tail = rest.split("\n\nThe `sign flips` column", 1)
        nb.cells[i]["source"] = (head.rstrip() + "\n\nThe `sign flips` column" + tail).splitlines(True)
        nb.insert(i + 1, md("**Why (b).**" + why))
    answer("**Why (b).**", "lab1_b_answer")
    answer("## Summary", "lab1_summary")
    j = nb.find("W1 = W0 - 2 * lr * sum(")
    nb.cells[j]["metadata"]["nbgrader"] = nbmeta("lab1_a_formula", solution=True)   # the student's own formula
    nb.replace("**Exercise (b).** Write `gradient(W, X, y)`, the full-batch gradient $\\nabla L(W) = 2 X^\\top (X W - y)$\nof the summed loss",
               "**Exercise (b).** Write `gradient(W, X, y)`, the full-batch gradient $\\nabla L(W)$ of the summed loss\n(your derivation of (a))")
if name == "lab2_pruning":
    answer("Why `sparsity` is the same after every early step", "lab2_d_zeros")
    for c in nb.cells:
        if "(a fraction, not a percentage: 0.25 prunes a quarter)" in nb.src(c):
            c["source"] = nb.src(c).replace("(a fraction, not a percentage: 0.25 prunes a quarter)",
                                            "(a fraction, not a percentage; q = 0 still prunes the smallest |w|)").splitlines(True)
if name == "lab2_pruning":
    for c in nb.cells:
        src = nb.src(c)
        if src.startswith("\n**Exercise (d).**") or src.startswith("**Exercise (d).**"):
            if "QUICK" not in src:
                c["source"] = (src.rstrip() + "\n\nIn the quick run of a handout (`QUICK = True`) the schedule has a single step,\n"
                               "so nothing regrows: run with `QUICK = False` to see what (d) and (e) ask about.").splitlines(True)
if name == "lab4_compression":
    answer("**Concept 3: is pruning alone enough", "lab4_concept3")
    answer("**Concept 2: does unstructured pruning give", "lab4_concept2")
    answer("**Does structured sparsity give real speed-ups?**", "lab4_concept6")
nb.save()
print("ok", name)
