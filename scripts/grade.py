"""Grade a folder of submitted lab notebooks by the assignment's points.

    python scripts/grade.py SUBMISSIONS [--out grades.csv] [--jobs 2] [--timeout 60]

SUBMISSIONS holds the students' notebooks, flat (``alice_lab2.ipynb``) or one folder per student
(``alice/lab2_pruning.ipynb``, nbgrader's layout); each is matched to its lab by the exercise ids
(nbgrader ``grade_id``) it carries, so a renamed file still grades. For every exercise the grader
runs, in a fresh process forked from this one, the lab's import cell, the reference solutions of
the lab's other exercises, the student's own solution cell and the lab's check cell *as the solved
notebook has it*, hidden tests included (a student who edits or deletes a check changes nothing).
So each part is graded on its own code only, no training runs, and a notebook grades in seconds.
nbgrader's ``determine_grade`` scores each check cell (an error: 0 points, otherwise its points).

The ten concepts (student/concepts.ipynb) are a submission like a lab, of answer cells only.
Written answers (markdown answer cells) are not scored here: they are listed, with each student's
text, in ``<out>.answers.md`` for the instructor to grade by hand. The points live in the solved
notebooks' cell metadata (``nbgrader.points``); change them there.

A submission that is not a notebook, carries none of a lab's exercises, or runs past ``--timeout``
seconds gets a line saying so (zero points for what was not graded), and grading goes on.
"""
from __future__ import annotations

import argparse
import csv
import multiprocessing as mp
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
LABS = REPO / "labs"


@dataclass
class Lab:
    """What grading needs of one solved notebook."""
    name: str
    imports: str                                  # the first code cell
    solutions: dict[str, str]                     # exercise id -> solution cell source, in order
    checks: dict[str, tuple[str, str, float]]     # check id -> (exercise id, check source, points)
    answers: dict[str, float]                     # written-answer id -> points (0: not graded)

    @property
    def points(self) -> float:
        return sum(p for _, _, p in self.checks.values())


def _meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def load_lab(path: Path) -> Lab:
    """The exercises of a solved notebook: each solution cell and the check cells after it."""
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    lab = Lab(path.stem, code[0].source if code else "", {}, {}, {})
    current = None
    for cell in nb.cells:
        m = _meta(cell)
        if not m:
            continue
        if cell.cell_type == "markdown" and m.get("solution"):
            lab.answers[m["grade_id"]] = float(m.get("points", 0)) if m.get("grade") else 0.0
        elif m.get("solution"):
            current = m["grade_id"]
            lab.solutions[current] = cell.source
        elif m.get("grade"):
            if current is None:
                raise ValueError(f"{path.name}: check cell {m['grade_id']!r} comes before any exercise")
            lab.checks[m["grade_id"]] = (current, cell.source, float(m.get("points", 0)))
    checked = {exercise for exercise, _, _ in lab.checks.values()}
    lab.solutions = {k: v for k, v in lab.solutions.items() if k in checked}   # a written-code answer is not graded
    return lab


def part_of(grade_id: str) -> str:
    """'lab2_c_mask_check' -> '(c)'."""
    found = re.match(r"lab\d+_([a-z])_", grade_id)
    return f"({found.group(1)})" if found else grade_id


# --- grading one exercise, in a forked child ------------------------------------------------------------

# labkit's references (and what they are built from), by the module of the exercise's reference: a
# student's cell that reads one of these names off a module is refused (`_uses_reference`)
REFERENCES = {
    "labkit.sparse_linear": {"gradient", "project_top_k", "l1_subgradient", "soft_threshold", "trimmed_l1_step", "_top_k"},
    "labkit.prune": {"keep_mask", "global_threshold", "apply_mask", "linear_schedule", "total_sparsity",
                     "magnitude_threshold", "sparsity", "Mask"},
    "labkit.quant": {"ste_quantize", "masked_quantize", "symmetric_quantize", "QuantizeSTE", "encode", "quantize",
                     "_encode", "Quantize"},
}


def _python(src: str) -> str:
    """A cell's source as plain Python (IPython's own transformer: magics become get_ipython() calls)."""
    from IPython.core.inputtransformer2 import TransformerManager
    return TransformerManager().transform_cell(src)


class _Shell:
    """What a cell's magics call in the grader: %time, %timeit and %%capture run their code, others nothing."""

    def __init__(self, ns):
        self.ns = ns

    def run_line_magic(self, name, line, *args, **kwargs):
        if name in ("time", "timeit"):
            exec(compile(_python(line), "<magic>", "exec"), self.ns)

    def run_cell_magic(self, name, line, cell, *args, **kwargs):
        if name in ("time", "timeit", "capture"):
            exec(compile(_python(cell), "<magic>", "exec"), self.ns)

    def system(self, *args, **kwargs):
        pass


def _uses_reference(src: str, key: str) -> str | None:
    """The labkit reference a student's cell reads (``quant.ste_quantize``, ``from labkit.prune import
    keep_mask``), or None."""
    import ast
    from labkit import exercises
    names = REFERENCES.get(exercises.EXERCISES[key].reference.__module__, set())
    try:
        tree = ast.parse(_python(src))
    except SyntaxError:
        return None                                    # the run reports it
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in names:
            return node.attr
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("labkit"):
            for alias in node.names:
                if alias.name in names:
                    return alias.name
    return None


def _key_of(check_src: str) -> str | None:
    found = re.search(r'exercises\.check\("([^"]+)"', check_src)
    return found.group(1) if found else None


def _run_exercise(lab: Lab, exercise: str, student: dict[str, str], check_src: str) -> str | None:
    """Run one exercise's check on the student's code; None if it passed, else the error line.

    The namespace: the lab's imports, the student's other exercise cells (their helpers; errors
    ignored), the references of the other exercises (the assignment's names are the course's), the
    student's cell of this exercise, then the check as the solved notebook has it, with labkit's
    checker restored whatever the student's cells did to it."""
    import contextlib
    import io
    import traceback

    from labkit import exercises
    real_check, registry, entries = exercises.check, exercises.EXERCISES, dict(exercises.EXERCISES)
    ns: dict = {"__name__": "__grading__"}
    ns["get_ipython"] = lambda: _Shell(ns)
    run = lambda src, name: exec(compile(_python(src), name, "exec"), ns)
    mine = student.get(exercise, "raise NotImplementedError()")
    key = _key_of(check_src)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            run(lab.imports, "<imports>")
            for other, src in student.items():
                if other != exercise:
                    with contextlib.suppress(BaseException):
                        run(src, f"<your {other}>")
            for other, src in lab.solutions.items():
                if other != exercise:
                    run(src, f"<reference {other}>")
            if key and (name := _uses_reference(mine, key)):
                raise exercises.Mistake(f"{key}: the exercise cell uses labkit's {name}; the exercise is to "
                                        f"write it yourself")
            run(mine, f"<your {exercise}>")
            exercises.check, exercises.EXERCISES = real_check, registry
            registry.clear()
            registry.update(entries)
            ns["exercises"] = exercises
            run(check_src, "<check>")
        except BaseException as e:                       # noqa: BLE001 - any failure scores 0
            line = traceback.format_exception_only(type(e), e)[-1].strip()
            return line[:400]
    return None


def _child(lab: Lab, student: dict[str, str], check_id: str, conn) -> None:
    import torch
    torch.set_num_threads(1)
    exercise, check_src, _ = lab.checks[check_id]
    conn.send(_run_exercise(lab, exercise, student, check_src))
    conn.close()


@dataclass
class Graded:
    submission: str
    lab: str = ""
    status: str = "graded"
    checks: dict[str, float] = field(default_factory=dict)     # check id -> points scored
    errors: dict[str, str] = field(default_factory=dict)
    answers: dict[str, str] = field(default_factory=dict)      # answer id -> the student's text


def _score(points: float, error: str | None) -> float:
    from nbgrader.utils import determine_grade
    cell = nbformat.v4.new_code_cell("")
    cell.metadata["nbgrader"] = {"grade": True, "solution": False, "points": points, "grade_id": "x",
                                 "locked": True, "schema_version": 3}
    if error is not None:
        cell.outputs = [nbformat.v4.new_output("error", ename="Error", evalue=error, traceback=[error])]
    return float(determine_grade(cell)[0])


def _match(nb, labs: dict[str, Lab]) -> Lab | None:
    ids = {_meta(c).get("grade_id") for c in nb.cells} - {None}
    known = lambda lab: set(lab.solutions) | set(lab.checks) | set(lab.answers)
    best = max(labs.values(), key=lambda lab: len(ids & known(lab)))
    return best if ids & known(best) else None


def _read(path: Path, labs: dict[str, Lab], root: Path | None):
    """The Graded record of a submission and what its exercises need: (graded, lab, student cells)."""
    g = Graded(str(path.relative_to(root)) if root else path.name)
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as e:                              # noqa: BLE001 - reported, not raised
        g.status = f"not a notebook ({type(e).__name__}: {str(e)[:120]})"
        return g, None, {}
    lab = _match(nb, labs)
    if lab is None:
        g.status = "no exercise of any lab found (is it a lab notebook?)"
        return g, None, {}
    g.lab = lab.name
    student = {_meta(c)["grade_id"]: c.source for c in nb.cells
               if c.cell_type == "code" and _meta(c).get("solution") and _meta(c).get("grade_id") in lab.solutions}
    g.answers = {_meta(c)["grade_id"]: c.source for c in nb.cells
                 if c.cell_type == "markdown" and _meta(c).get("grade_id") in lab.answers}
    return g, lab, student


def course_labs() -> dict[str, Lab]:
    """What a submission can be: a lab with exercises, or the concepts (answer cells only)."""
    labs = {p.stem: load_lab(p) for p in sorted(LABS.glob("lab*.ipynb"))}
    labs["concepts"] = load_lab(REPO / "student" / "concepts.ipynb")
    return {name: lab for name, lab in labs.items() if lab.checks or lab.answers}


def warm_up(labs: dict[str, Lab]) -> None:
    """Import what the labs' import cells import, once, here: every forked child then has it."""
    import contextlib
    import io

    from IPython.core.inputtransformer2 import TransformerManager  # noqa: F401 - used by every child
    from labkit import exercises  # noqa: F401
    for lab in labs.values():
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(lab.imports, f"<{lab.name} imports>", "exec"), {"__name__": "__grading__"})


def grade_all(paths: list[Path], labs: dict[str, Lab], *, jobs: int = 2, timeout: float = 30.0,
              root: Path | None = None) -> list[Graded]:
    """Grade every path: each exercise in its own forked process, at most ``jobs`` at once, each
    within ``timeout`` seconds (a hang costs that part only)."""
    ctx = mp.get_context("fork")
    done, tasks = [], []
    for path in paths:
        g, lab, student = _read(path, labs, root)
        done.append(g)
        if lab is not None:
            tasks += [(g, lab, student, check_id) for check_id in lab.checks]
    running = []
    while tasks or running:
        while tasks and len(running) < jobs:
            g, lab, student, check_id = tasks.pop(0)
            parent, child = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_child, args=(lab, student, check_id, child), daemon=True)
            proc.start()
            child.close()
            running.append((g, lab, check_id, proc, parent, time.monotonic()))
        time.sleep(0.002)
        for item in list(running):
            g, lab, check_id, proc, conn, start = item
            error, finished = None, False
            try:
                if conn.poll():
                    error, finished = conn.recv(), True
            except EOFError:
                error, finished = "the grading process died", True
            if not finished and not proc.is_alive():
                error, finished = "the grading process died", True
            if not finished and time.monotonic() - start > timeout:
                error, finished = f"timed out after {timeout:g} s", True
                g.status = "graded; a part timed out"
            if finished:
                proc.join(timeout=1)
                if proc.is_alive():
                    proc.kill()
                    proc.join()
                conn.close()
                g.checks[check_id] = _score(lab.checks[check_id][2], error)
                if error:
                    g.errors[check_id] = error
                running.remove(item)
    for g in done:                                      # the lab's order of checks
        lab = labs.get(g.lab)
        if lab:
            g.checks = {c: g.checks[c] for c in lab.checks}
            g.errors = {c: g.errors[c] for c in lab.checks if c in g.errors}
    return done


BONUS = {"lab3_quantization": {"(d)", "(e)"}}     # the assignment's bonus parts


def table(graded: list[Graded], labs: dict[str, Lab]) -> tuple[list[str], list[list]]:
    """CSV header and rows: one row per submission; per part, the points of its checks out of their
    maximum, then the part's points graded by hand (its written answers), e.g. ``3/4 +2 by hand``."""
    parts = []
    for lab in labs.values():
        for grade_id in list(lab.checks) + list(lab.answers):
            key = (lab.name, part_of(grade_id))
            if key not in parts and (grade_id in lab.checks or lab.answers[grade_id] > 0):
                parts.append(key)
    label = lambda lab, part: f"{lab} {part}" + (" bonus" if part in BONUS.get(lab, ()) else "")
    header = (["submission", "lab", "status"] + [label(lab, part) for lab, part in parts] +
              ["total (checks)", "max (checks)", "by hand"])
    rows = []
    for g in graded:
        lab = labs.get(g.lab)
        cells = []
        for name, part in parts:
            if not lab or name != lab.name:
                cells.append("")
                continue
            mine = [c for c in lab.checks if part_of(c) == part]
            hand = sum(p for a, p in lab.answers.items() if part_of(a) == part)
            text = (f"{sum(g.checks.get(c, 0.0) for c in mine):g}/{sum(lab.checks[c][2] for c in mine):g}"
                    if mine else "")
            cells.append((text + (f" +{hand:g} by hand" if hand else "")).strip())
        total = sum(g.checks.values())
        by_hand = sum(lab.answers.values()) if lab else 0
        rows.append([g.submission, g.lab, g.status] + cells +
                    [f"{total:g}", f"{lab.points:g}" if lab else "0", f"{by_hand:g}" if by_hand else ""])
    return header, rows


def write_answers(path: Path, graded: list[Graded], labs: dict[str, Lab]) -> None:
    lines = ["# Written answers, to grade by hand", ""]
    for g in graded:
        if not g.answers:
            continue
        lines += [f"## {g.submission} ({g.lab})", ""]
        for answer_id, text in g.answers.items():
            pts = labs[g.lab].answers.get(answer_id, 0)
            lines += [f"### {answer_id} ({pts:g} points)" if pts else f"### {answer_id} (not graded)", "",
                      text.strip() or "(empty)", ""]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def submissions(folder: Path) -> list[Path]:
    """The notebooks of a submissions folder: every ``*.ipynb`` below it, none in a hidden folder
    (``.ipynb_checkpoints``); nbgrader's other files (``timestamp.txt``) are not submissions."""
    return sorted(p for p in folder.rglob("*.ipynb")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("submissions", type=Path)
    parser.add_argument("--out", type=Path, default=Path("grades.csv"))
    parser.add_argument("--jobs", type=int, default=max(1, min(mp.cpu_count(), 8)))
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per exercise")
    args = parser.parse_args(argv)
    if not args.submissions.is_dir():
        parser.error(f"{args.submissions} is not a folder of submitted notebooks")
    labs = course_labs()
    warm_up(labs)
    paths = submissions(args.submissions)
    start = time.monotonic()
    graded = grade_all(paths, labs, jobs=args.jobs, timeout=args.timeout, root=args.submissions)
    header, rows = table(graded, labs)
    with args.out.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header] + rows)
    answers = args.out.with_suffix(".answers.md")
    write_answers(answers, graded, labs)
    for g, row in zip(graded, rows):
        print(f"{g.submission}: {row[-3]}/{row[-2]} points from the checks" + (f", {row[-1]} by hand" if row[-1] else "")
              + (f" ({g.status})" if g.status != "graded" else "")
              + "".join(f"\n    {part_of(c)} {e}" for c, e in g.errors.items()))
    print(f"{len(graded)} submissions graded in {time.monotonic() - start:.1f} s with {args.jobs} processes: "
          f"{args.out} (points per part), {answers} (written answers to grade by hand)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
