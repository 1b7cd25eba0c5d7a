"""How fast scripts/grade.py grades a class: N submissions of Lab 2, on this machine's cores.

    python benchmarks/bench_grade.py                  # 200 submissions, 2 processes
    python benchmarks/bench_grade.py --n 50 --jobs 1
    python benchmarks/bench_grade.py --trust-submissions   # without the sandbox, for comparison

The submissions are made here from the solved notebook: a third solved, a third blank (the
student edition), a third with one planted mistake each (a different part each time), so that
passing and failing checks, and the error paths, are all timed. It prints the wall time, the
submissions per second and the time per submission, and checks every grade (a solved one scores
full marks, a blank one zero, a planted one loses that part's points). Goal: 200 submissions of
Lab 2 in under 10 minutes on the 2-core machine, each graded in its own sandbox (bubblewrap).
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
MISTAKES = [("return a > torch.quantile(a.flatten(), q)", "return a >= torch.quantile(a.flatten(), q)", "lab2_b_check"),
            ("    return w * mask", "    return (w * mask).detach()", "lab2_c_mask_check"),
            ("return target * e / steps", "return target * (e - 1) / steps", "lab2_d_check"),
            ("for w in weights]), q)", "for w in weights]), q / 100)", "lab2_e_check")]


def _grade_module():
    spec = importlib.util.spec_from_file_location("grade", REPO / "scripts" / "grade.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["grade"] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--trust-submissions", action="store_true", help="grade without the sandbox")
    args = parser.parse_args()
    grade = _grade_module()
    solved = nbformat.read(REPO / "labs" / "lab2_pruning.ipynb", as_version=4)
    blank = nbformat.read(REPO / "student" / "lab2_pruning.ipynb", as_version=4)
    with tempfile.TemporaryDirectory() as tmp:
        folder, expected = Path(tmp), {}
        for i in range(args.n):
            name = f"student{i:03d}.ipynb"
            if i % 3 == 0:
                nb, wrong = solved, None
            elif i % 3 == 1:
                nb, wrong = blank, "all"
            else:
                old, new, wrong = MISTAKES[(i // 3) % len(MISTAKES)]
                nb = nbformat.from_dict(solved)
                cell = next(c for c in nb.cells if c.get("metadata", {}).get("nbgrader", {}).get("solution") and old in c.source)
                cell.source = cell.source.replace(old, new)
            nbformat.write(nb, folder / name)
            expected[name] = wrong
        labs = grade.course_labs()
        start = time.monotonic()
        grade.warm_up(labs)
        graded = grade.grade_all(sorted(folder.iterdir()), labs, jobs=args.jobs, timeout=60, root=folder,
                                 sandboxed=not args.trust_submissions)
        seconds = time.monotonic() - start
    full = {c: p for c, (_, _, p) in labs["lab2_pruning"].checks.items()}
    for g in graded:
        wrong = expected[g.submission]
        want = full if wrong is None else {c: 0.0 for c in full} if wrong == "all" else dict(full, **{wrong: 0.0})
        assert g.checks == want, (g.submission, g.checks, want)
    where = "without a sandbox" if args.trust_submissions else "each in its own sandbox"
    print(f"{args.n} Lab 2 submissions graded {where} in {seconds:.1f} s, {args.jobs} at a time "
          f"({args.n / seconds:.1f} per second, {seconds / args.n * 1000:.0f} ms each, start-up included); "
          f"every grade as expected; goal: 200 in under 600 s")


if __name__ == "__main__":
    main()
