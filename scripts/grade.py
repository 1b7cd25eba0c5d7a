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
    return lab


def part_of(grade_id: str) -> str:
    """'lab2_c_mask_check' -> '(c)'."""
    found = re.match(r"lab\d+_([a-z])_", grade_id)
    return f"({found.group(1)})" if found else grade_id


# --- grading one submission, in a forked child --------------------------------------------------------

def _run_exercise(lab: Lab, exercise: str, student_src: str, check_src: str) -> str | None:
    """Run one exercise's check on the student's code; None if it passed, else the error line."""
    import io
    import contextlib
    import traceback

    ns: dict = {"__name__": "__grading__"}
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            exec(compile(lab.imports, "<imports>", "exec"), ns)
            for other, src in lab.solutions.items():      # the reference for every other exercise
                if other != exercise:
                    exec(compile(src, f"<reference {other}>", "exec"), ns)
            exec(compile(student_src, f"<your {exercise}>", "exec"), ns)
            exec(compile(check_src, "<check>", "exec"), ns)
        except BaseException as e:                       # noqa: BLE001 - any failure scores 0
            line = traceback.format_exception_only(type(e), e)[-1].strip()
            return line[:400]
    return None


def _child(lab: Lab, student: dict[str, str], conn) -> None:
    import torch
    torch.set_num_threads(1)
    results = {}
    for check_id, (exercise, check_src, _) in lab.checks.items():
        results[check_id] = _run_exercise(lab, exercise, student.get(exercise, "raise NotImplementedError()"), check_src)
        conn.send(("one", check_id, results[check_id]))
    conn.send(("done", None, None))
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


def course_labs() -> dict[str, Lab]:
    """What a submission can be: a lab with exercises, or the concepts (answer cells only)."""
    labs = {p.stem: load_lab(p) for p in sorted(LABS.glob("lab*.ipynb"))}
    labs["concepts"] = load_lab(REPO / "student" / "concepts.ipynb")
    return {name: lab for name, lab in labs.items() if lab.checks or lab.answers}


def warm_up(labs: dict[str, Lab]) -> None:
    """Import what the labs' import cells import, once, here: every forked child then has it."""
    import contextlib
    import io
    for lab in labs.values():
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(lab.imports, f"<{lab.name} imports>", "exec"), {"__name__": "__grading__"})


def grade_all(paths: list[Path], labs: dict[str, Lab], *, jobs: int = 2, timeout: float = 60.0,
              root: Path | None = None) -> list[Graded]:
    """Grade every path; at most ``jobs`` submissions at once, each within ``timeout`` seconds."""
    ctx = mp.get_context("fork")
    todo, running, done = list(paths), [], []
    while todo or running:
        while todo and len(running) < jobs:
            path = todo.pop(0)
            g = Graded(str(path.relative_to(root)) if root else path.name)
            try:
                nb = nbformat.read(path, as_version=4)
            except Exception as e:                              # noqa: BLE001 - reported, not raised
                g.status = f"not a notebook ({type(e).__name__}: {str(e)[:120]})"
                done.append(g)
                continue
            lab = _match(nb, labs)
            if lab is None:
                g.status = "no exercise of any lab found (is it a lab notebook?)"
                done.append(g)
                continue
            g.lab = lab.name
            student = {_meta(c)["grade_id"]: c.source for c in nb.cells
                       if c.cell_type == "code" and _meta(c).get("solution") and _meta(c).get("grade_id") in lab.solutions}
            g.answers = {_meta(c)["grade_id"]: c.source for c in nb.cells
                         if c.cell_type == "markdown" and _meta(c).get("grade_id") in lab.answers}
            parent, child = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_child, args=(lab, student, child), daemon=True)
            proc.start()
            child.close()
            running.append((g, lab, proc, parent, time.monotonic()))
        time.sleep(0.005)
        for item in list(running):
            g, lab, proc, conn, start = item
            finished = False
            try:
                while conn.poll():
                    kind, check_id, error = conn.recv()
                    if kind == "done":
                        finished = True
                    else:
                        points = lab.checks[check_id][2]
                        g.checks[check_id] = _score(points, error)
                        if error:
                            g.errors[check_id] = error
            except EOFError:
                finished = True
            if not finished and time.monotonic() - start > timeout:
                proc.kill()
                g.status = f"timed out after {timeout:g} s (graded what had finished)"
                finished = True
            elif finished and len(g.checks) < len(lab.checks):
                g.status = "the grading process died (graded what had finished)"
            if finished:
                proc.join()
                conn.close()
                for check_id in lab.checks:
                    g.checks.setdefault(check_id, 0.0)
                running.remove(item)
                done.append(g)
    order = {str(p.relative_to(root)) if root else p.name: i for i, p in enumerate(paths)}
    return sorted(done, key=lambda g: order[g.submission])


def table(graded: list[Graded], labs: dict[str, Lab]) -> tuple[list[str], list[list]]:
    """CSV header and rows: one row per submission, the points per part beside the part's maximum."""
    parts = []
    for lab in labs.values():
        for check_id in lab.checks:
            key = (lab.name, part_of(check_id))
            if key not in parts:
                parts.append(key)
    header = ["submission", "lab", "status"] + [f"{lab} {part}" for lab, part in parts] + ["total", "max", "to grade by hand"]
    rows = []
    for g in graded:
        lab = labs.get(g.lab)
        per = {}
        if lab:
            for check_id, (_, _, pts) in lab.checks.items():
                got, mx = per.get(part_of(check_id), (0.0, 0.0))
                per[part_of(check_id)] = (got + g.checks.get(check_id, 0.0), mx + pts)
        cells = [f"{per[p][0]:g}/{per[p][1]:g}" if lab and name == lab.name and p in per else ""
                 for name, p in parts]
        total = sum(g.checks.values())
        by_hand = sum(p for p in lab.answers.values()) if lab else 0
        rows.append([g.submission, g.lab, g.status] + cells +
                    [f"{total:g}", f"{lab.points:g}" if lab else "0", f"{by_hand:g} points" if by_hand else ""])
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("submissions", type=Path)
    parser.add_argument("--out", type=Path, default=Path("grades.csv"))
    parser.add_argument("--jobs", type=int, default=max(1, min(mp.cpu_count(), 8)))
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per notebook")
    args = parser.parse_args(argv)
    if not args.submissions.is_dir():
        parser.error(f"{args.submissions} is not a folder of submitted notebooks")
    labs = course_labs()
    warm_up(labs)
    paths = sorted(p for p in args.submissions.rglob("*") if p.is_file() and not p.name.startswith("."))
    start = time.monotonic()
    graded = grade_all(paths, labs, jobs=args.jobs, timeout=args.timeout, root=args.submissions)
    header, rows = table(graded, labs)
    with args.out.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header] + rows)
    answers = args.out.with_suffix(".answers.md")
    write_answers(answers, graded, labs)
    for g, row in zip(graded, rows):
        print(f"{g.submission}: {row[-3]}/{row[-2]} points" + (f" ({g.status})" if g.status != "graded" else "")
              + "".join(f"\n    {part_of(c)} {e}" for c, e in g.errors.items()))
    print(f"{len(graded)} submissions graded in {time.monotonic() - start:.1f} s with {args.jobs} processes: "
          f"{args.out} (points per part), {answers} (written answers to grade by hand)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
