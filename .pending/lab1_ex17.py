"""Issue 17 for Lab 1: the exercises (b) gradient, (c) projection, (d) L1 subgradient, (e) soft threshold, (f) trimmed L1."""
import sys
sys.path.insert(0, ".pending")
from nbedit import NB, code, md

nb = NB(sys.argv[1])
nb.replace("import numpy as np\nfrom labkit import report, sparse_linear as sl",
           "import numpy as np\nfrom labkit import exercises, report, sparse_linear as sl")

def exercise(heading, text, solution, key, name, gid, points):
    i = nb.find(heading, start=True)
    nb.insert(i + 1, md(text), code(solution, grade_id=f"lab1_{gid}_solution", solution=True),
              code(f'''
exercises.check("{key}", {name})
### BEGIN HIDDEN TESTS
exercises.check("{key}", {name}, hidden=True)
### END HIDDEN TESTS
''', grade_id=f"lab1_{gid}_check", grade=True, points=points))

exercise("## (b) Plain gradient descent", """
**Exercise (b).** Write `gradient(W, X, y)`, the full-batch gradient $\\nabla L(W) = 2 X^\\top (X W - y)$
of the summed loss (numpy arrays: `W` of shape (d,), `X` (n, d), `y` (n,)). Every run of this lab
steps with it (`sl.optimize(..., gradient=gradient)`); labkit's reference is `sl.gradient`.""", '''
def gradient(W, X, y):
    """grad L(W) for L(W) = sum_i (x_i W - y_i)^2."""
    ### BEGIN SOLUTION
    return 2.0 * X.T @ (X @ W - y)
    ### END SOLUTION
''', "lab1 (b)", "gradient", "b", 3)
nb.replace('runs_b = {"GD": sl.optimize("gd", lr=lr, steps=num_steps)}',
           'runs_b = {"GD": sl.optimize("gd", lr=lr, steps=num_steps, gradient=gradient)}')

exercise("## (c) Projected gradient descent", """
**Exercise (c).** Write `project_top_k(v, k)`, the projection onto $\\{W : \\|W\\|_0 \\le k\\}$: keep the
`k` elements of largest |v|, zero the others; on a tie of |v| keep the lower index (a stable sort),
so that every run is the same. Return a new array.""", '''
def project_top_k(v, k):
    """v with all but its k largest-magnitude elements set to 0."""
    ### BEGIN SOLUTION
    keep = np.argsort(-np.abs(v), kind="stable")[:k]
    out = np.zeros_like(v)
    out[keep] = v[keep]
    return out
    ### END SOLUTION
''', "lab1 (c)", "project_top_k", "c", 4)
nb.replace('runs_c = {f"projected GD, k={k}": sl.optimize("projected", lr=lr, steps=num_steps, k=k)}',
           'runs_c = {f"projected GD, k={k}": sl.optimize("projected", lr=lr, steps=num_steps, k=k, gradient=gradient,\n                                               project=project_top_k)}')

exercise("## (d) Subgradient descent on", """
**Exercise (d).** Write `l1_subgradient(W, lam)`, a subgradient of $\\lambda \\|W\\|_1$:
$\\lambda\\,\\mathrm{sign}(w)$ element by element, 0 where $w = 0$.""", '''
def l1_subgradient(W, lam):
    """lam * sign(W), with sign(0) = 0."""
    ### BEGIN SOLUTION
    return lam * np.sign(W)
    ### END SOLUTION
''', "lab1 (d)", "l1_subgradient", "d", 3)
nb.replace('runs_d = {f"L1 subgradient, λ={lam}": sl.optimize("l1", lam=lam, lr=lr, steps=num_steps)',
           'runs_d = {f"L1 subgradient, λ={lam}": sl.optimize("l1", lam=lam, lr=lr, steps=num_steps, gradient=gradient,\n                                                  subgradient=l1_subgradient)')

exercise("## (e) Proximal gradient: soft thresholding", """
**Exercise (e).** Write `soft_threshold(v, t)`, $S_t(v) = \\mathrm{sign}(v)\\max(|v| - t, 0)$ element
by element ($t \\ge 0$): every |v| ≤ t becomes exactly 0, the others move towards 0 by t.""", '''
def soft_threshold(v, t):
    """The proximal operator of t ||.||_1."""
    ### BEGIN SOLUTION
    return np.sign(v) * np.maximum(np.abs(v) - t, 0.0)
    ### END SOLUTION
''', "lab1 (e)", "soft_threshold", "e", 4)
nb.replace('runs_e = {f"proximal, λ={lam}": sl.optimize("proximal", lam=lam, lr=lr, steps=num_steps)',
           'runs_e = {f"proximal, λ={lam}": sl.optimize("proximal", lam=lam, lr=lr, steps=num_steps, gradient=gradient,\n                                             threshold=soft_threshold)')

exercise("## (f) Trimmed L1", """
**Exercise (f).** Write `trimmed_l1_step(W, g, lr, lam, k)`, one whole step of trimmed L1 from the
weights `W` and their gradient `g`: the gradient step $v = W - \\mu g$, then soft thresholding by
$\\mu\\lambda$ (your `soft_threshold`) of the $d - k$ elements of smallest |v| (chosen after the
gradient step; ties to the lower index); the $k$ largest stay as they are.""", '''
def trimmed_l1_step(W, g, lr, lam, k):
    """W - lr g, with its d - k smallest-magnitude elements soft-thresholded by lr * lam."""
    ### BEGIN SOLUTION
    v = W - lr * g
    small = np.argsort(np.abs(v), kind="stable")[: v.size - k]
    v[small] = soft_threshold(v[small], lr * lam)
    return v
    ### END SOLUTION
''', "lab1 (f)", "trimmed_l1_step", "f", 4)
nb.replace('runs_f = {f"trimmed L1, λ={lam}": sl.optimize("trimmed_l1", lam=lam, lr=lr, steps=num_steps, k=k)',
           'runs_f = {f"trimmed L1, λ={lam}": sl.optimize("trimmed_l1", lam=lam, lr=lr, steps=num_steps, k=k, gradient=gradient,\n                                               trimmed_step=trimmed_l1_step)')
nb.save()
print("ok")
