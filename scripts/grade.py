"""Grade a folder of submitted lab notebooks by the assignment's points.

    python scripts/grade.py SUBMISSIONS [--out grades.csv] [--jobs 2] [--timeout 30]

SUBMISSIONS holds the students' notebooks, flat (``alice_lab2.ipynb``) or one folder per student
(``alice/lab2_pruning.ipynb``, nbgrader's layout); each is matched to its lab by the exercise ids
(nbgrader ``grade_id``) it carries, so a renamed file still grades.

Student code is untrusted, and this process never imports or runs it. Each submission is graded in
a sandbox of its own (scripts/sandbox.py: bubblewrap; no network, its own PID namespace, a read-only
system, an empty private home, an unprivileged user, limits on memory, CPU time, processes and file
size) that sees only a job folder: the lab's import cell, this student's exercise cells, and a copy
of labkit in which the lab's references, what they are built from and the exercises' wrong versions
raise "labkit's <name> is not available while grading <part>". Inside, each exercise runs in a
process of its own (scripts/sandbox_runner.py): the cells it needs (its own, and the student's cells
that define the global names it reads), then
``labkit.exercises.observe`` calls the student's function on the check's visible and hidden inputs
and returns plain data (arrays, dtypes, whether an input changed, an exception's type and message).
Here, ``labkit.exercises.judge`` compares those data with labkit's reference on the same inputs and
names the mistake; nbgrader's ``determine_grade`` scores each check cell (a mistake: 0 points,
otherwise its points). So nothing a student's code does in its process (patching numpy, torch,
labkit or the checker, exiting, printing) can change a verdict, and a hang, a crash or an exit in one
exercise cell costs that cell's parts and those that use what it defines, no others.

Where no sandbox can be had (no bubblewrap, not Linux) the grader refuses, saying why, unless the
instructor passes ``--trust-submissions`` (the same processes and judge, without the isolation).

The ten concepts (student/concepts.ipynb) are a submission like a lab, of answer cells only.
Written answers (markdown answer cells, and code answer cells without a check) are not scored here:
they are listed, with each student's text quoted, in ``<out>.answers.md`` for the instructor to grade
by hand, with the message of every check that lost points. The points live in the
solved notebooks' cell metadata (``nbgrader.points``); change them there. Both files are written
once, at the end, atomically; the CSV is safe to open in a spreadsheet (OWASP's CSV-injection rule).

A submission that is not a notebook, carries none of a lab's exercises, has malformed metadata, or
whose sandbox fails gets a line saying so (zero points for what was not graded), and grading goes on.
"""
from __future__ import annotations

import argparse
import ast
import csv
import functools
import io
import json
import os
import re
import shutil
import symtable
import sys
import tempfile
import threading
import time
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sandbox  # noqa: E402  (scripts/sandbox.py, beside this file)

REPO = Path(__file__).resolve().parents[1]
LABS = REPO / "labs"
RUNNER = Path(__file__).resolve().parent / "sandbox_runner.py"
MAX_NOTEBOOK = 20 << 20                            # bytes: a larger file is not read
MAX_ANSWER = 20_000                                # characters of one written answer kept for the instructor


@dataclass
class Lab:
    """What grading needs of one solved notebook."""
    name: str
    imports: str                                  # the first code cell
    solutions: dict[str, str]                     # exercise id -> solution cell source, in order
    checks: dict[str, tuple[str, str, float]]     # check id -> (exercise id, check source, points)
    answers: dict[str, float]                     # written-answer id -> points (0: not graded)
    code_answers: set[str] = field(default_factory=set)   # the answers that are code cells (read by hand)

    @property
    def points(self) -> float:
        return sum(p for _, _, p in self.checks.values())


def _meta(cell) -> dict:
    meta = cell.get("metadata", {}) if isinstance(cell, dict) else {}
    found = meta.get("nbgrader", {}) if isinstance(meta, dict) else {}
    return found if isinstance(found, dict) else {}


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
    for grade_id in [k for k in lab.solutions if k not in checked]:   # a written-code answer: to read by hand
        del lab.solutions[grade_id]
        lab.answers[grade_id] = 0.0
        lab.code_answers.add(grade_id)
    return lab


def part_of(grade_id: str) -> str:
    """'lab2_c_mask_check' -> '(c)'."""
    found = re.match(r"lab\d+_([a-z])_", grade_id)
    return f"({found.group(1)})" if found else grade_id


def checked(check_src: str) -> tuple[str, str] | None:
    """The (exercise key, function name) a check cell checks: ``exercises.check("lab2 (b)", keep_mask)``."""
    found = re.search(r'exercises\.check\("([^"]+)",\s*([A-Za-z_]\w*)', check_src)
    return (found.group(1), found.group(2)) if found else None


# --- what the sandbox gets: the cells a part needs, and labkit without its references --------------------

MAX_CELL = 64_000                                  # characters of an exercise cell the grader reads for names
_MAGIC = re.compile(r"^([ \t]*)(?:[%!?].*|\w[\w.,\s]*=\s*[%!].*|.*\?)$", re.M)


def _plain_python(src: str) -> str:
    """A cell's source with IPython's magic and shell lines (``%time``, ``!ls``, ``x = !ls``, ``f?``) made
    ``pass`` at their indentation: plain Python for finding names, without running IPython's
    transformer on a student's text here (its cost grows with the lines times the magics)."""
    return _MAGIC.sub(lambda m: m.group(1) + "pass", src)


@functools.lru_cache(maxsize=4096)
def _names(src: str) -> tuple[frozenset[str], frozenset[str]]:
    """(names a cell defines at its top level, global names it reads: at its top level or from inside
    its functions and classes, not their parameters or locals). A cell too long, or that does not
    parse, defines and reads nothing (running it reports the error)."""
    if len(src) > MAX_CELL:
        return frozenset(), frozenset()
    try:
        top = symtable.symtable(_plain_python(src), "<cell>", "exec")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return frozenset(), frozenset()
    defined = {s.get_name() for s in top.get_symbols() if s.is_assigned() or s.is_imported() or s.is_namespace()}
    used = {s.get_name() for s in top.get_symbols() if s.is_referenced()}
    tables = list(top.get_children())
    while tables:
        table = tables.pop()
        used |= {s.get_name() for s in table.get_symbols() if s.is_global() and s.is_referenced()}
        tables += table.get_children()
    return frozenset(defined), frozenset(used)


def needed(cells: list[tuple[str, str]], own: int) -> list[int]:
    """The indices of the cells part ``own`` runs, in notebook order: its own, and every other cell that
    defines a name it (or a cell it needs) reads. So a hang or an exit in a cell costs the parts that
    use what that cell defines, and no others."""
    names = [_names(src) for _, src in cells]
    want, keep, changed = set(names[own][1]), {own}, True
    while changed:
        changed = False
        for i, (defined, used) in enumerate(names):
            if i not in keep and defined & want:
                keep.add(i)
                want |= used
                changed = True
    return sorted(keep)


def labkit_without(keys: list[str], dest: Path) -> Path:
    """A copy of labkit under ``dest`` in which every name `labkit.exercises.forbidden` lists for the
    exercises ``keys`` (the references of their labs, what those are built from, the exercises' wrong
    versions) raises RuntimeError("labkit's <name> is not available while grading <part>"), and the
    exercises carry no wrong versions: rewritten in the source, so no copy of that code is in the
    sandbox. The part named is the one being graded (``LABKIT_GRADING``, set by the runner). Returns ``dest``."""
    from labkit import exercises
    where: dict[str, dict[str, str]] = {}
    for key in keys:
        for module, names in exercises.forbidden(key).items():
            for name in names:
                where.setdefault(module, {}).setdefault(name, key)
    src = REPO / "labkit"
    (dest / "labkit").mkdir(parents=True)
    for path in sorted(src.glob("*.py")):
        module = f"labkit.{path.stem}"
        text = path.read_text(encoding="utf-8")
        if module in where or module == "labkit.exercises":
            text = _stubbed(text, where.get(module, {}), exercises.UNAVAILABLE,
                            no_mistakes=module == "labkit.exercises")
        (dest / "labkit" / path.name).write_text(text, encoding="utf-8")
    return dest


def _stubbed(text: str, names: dict[str, str], message: str, *, no_mistakes: bool = False) -> str:
    """Module source with the functions (and every method of the classes) named in ``names`` raising;
    with ``no_mistakes``, every ``Exercise(...)`` built with an empty tuple of wrong versions."""
    tree = ast.parse(text)

    def stub(fn, name, key):
        head, _, tail = message.format(name=name, key="\0").partition("\0")
        error = ast.parse(f"raise RuntimeError({head!r} + __import__('os').environ.get('LABKIT_GRADING', {key!r})"
                          f" + {tail!r})").body[0]
        fn.body = [error]
        fn.decorator_list = [d for d in fn.decorator_list
                             if isinstance(d, ast.Name) and d.id in ("staticmethod", "classmethod", "property")]

    found = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in names:
            stub(node, node.name, names[node.name])
            found.add(node.name)
        elif isinstance(node, ast.ClassDef) and node.name in names:
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    stub(item, node.name, names[node.name])
            found.add(node.name)
    missing = set(names) - found
    if missing:
        raise ValueError(f"labkit.exercises.forbidden names {sorted(missing)}, which the module does not define")
    if no_mistakes:
        emptied = 0
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Exercise":
                if len(node.args) > 5:
                    node.args[5] = ast.Tuple(elts=[], ctx=ast.Load())
                    emptied += 1
                for kw in node.keywords:
                    if kw.arg == "mistakes":
                        kw.value = ast.Tuple(elts=[], ctx=ast.Load())
                        emptied += 1
        if emptied == 0:
            raise ValueError("labkit.exercises builds no Exercise(...) with its wrong versions where the grader looks")
    return ast.unparse(tree) + "\n"


# --- reading submissions ------------------------------------------------------------------------------------

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


def _cells(nb) -> list[tuple[str, str, str]]:
    """(cell type, grade id, source) of every cell that carries a usable nbgrader grade id; cells whose
    metadata are not what nbgrader writes are skipped."""
    out = []
    cells = nb.get("cells") if isinstance(nb, dict) else None
    if not isinstance(cells, list):
        raise ValueError("it has no list of cells")
    for cell in cells:
        m = _meta(cell)
        grade_id, source, kind = m.get("grade_id"), cell.get("source", ""), cell.get("cell_type")
        if isinstance(source, list) and all(isinstance(s, str) for s in source):
            source = "".join(source)
        if isinstance(grade_id, str) and isinstance(source, str) and kind in ("code", "markdown") \
                and m.get("solution") is True:
            out.append((kind, grade_id, source))
    return out


def _match(ids: set[str], labs: dict[str, Lab]) -> Lab | None:
    known = lambda lab: set(lab.solutions) | set(lab.checks) | set(lab.answers)
    best = max(labs.values(), key=lambda lab: len(ids & known(lab)))
    return best if ids & known(best) else None


def _read(path: Path, labs: dict[str, Lab], root: Path | None):
    """The Graded record of a submission and its exercise cells: (graded, lab, [(grade id, source)])."""
    g = Graded(str(path.relative_to(root)) if root else path.name)
    if path.is_symlink():
        g.status = "not graded: a symbolic link (links are not followed; submit the notebook itself)"
        return g, None, []
    try:
        if path.stat().st_size > MAX_NOTEBOOK:
            raise ValueError(f"it is larger than {MAX_NOTEBOOK >> 20} MB")
        nb = json.loads(path.read_bytes().decode("utf-8"))
        cells = _cells(nb)
    except Exception as e:                              # noqa: BLE001 - reported, not raised
        g.status = f"not a notebook ({type(e).__name__}: {str(e)[:120]})"
        return g, None, []
    lab = _match({grade_id for _, grade_id, _ in cells}, labs)
    if lab is None:
        g.status = "no exercise of any lab found (is it a lab notebook?)"
        return g, None, []
    g.lab = lab.name
    code, seen = [], set()
    for kind, grade_id, source in cells:
        if grade_id in seen:
            continue                                    # a duplicated cell: the first one counts
        seen.add(grade_id)
        if kind == "code" and grade_id in lab.solutions:
            code.append((grade_id, source))
        elif grade_id in lab.answers and (kind == "code") == (grade_id in lab.code_answers):
            g.answers[grade_id] = source[:MAX_ANSWER]
    return g, lab, code


def submissions(folder: Path) -> list[Path]:
    """The notebooks of a submissions folder: every ``*.ipynb`` below it, none in a hidden folder
    (``.ipynb_checkpoints``); nbgrader's other files (``timestamp.txt``) are not submissions. Linked
    folders are not entered; a linked notebook is listed, and graded as a line saying it is a link
    (a link could make one student's notebook another's, or reach outside the folder)."""
    root = Path(folder)
    found = []
    for top, dirs, files in os.walk(root):              # os.walk does not descend into linked folders
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(top) / name
            if name.endswith(".ipynb") and not name.startswith(".") and (path.is_symlink() or path.is_file()):
                found.append(path)
    return sorted(found)


# --- grading: one sandbox per submission, the verdicts here ---------------------------------------------------

def course_labs() -> dict[str, Lab]:
    """What a submission can be: a lab with exercises, or the concepts (answer cells only)."""
    labs = {p.stem: load_lab(p) for p in sorted(LABS.glob("lab*.ipynb"))}
    labs["concepts"] = load_lab(REPO / "student" / "concepts.ipynb")
    return {name: lab for name, lab in labs.items() if lab.checks or lab.answers}


def warm_up(labs: dict[str, Lab]) -> None:
    """Import here what judging needs (labkit's references), once."""
    from labkit import exercises  # noqa: F401
    from nbgrader.utils import determine_grade  # noqa: F401


def _frames(data: bytes) -> dict[str, tuple[str, str, list[bytes]]]:
    """The runner's answers: per part id, (status, message, [observation bytes]). Anything malformed ends
    the reading there (the parts not read count as not answered)."""
    out, view = {}, memoryview(data)
    at = 0
    while at < len(data):
        end = data.find(b"\n", at, at + 4096)
        if end < 0:
            break
        try:
            head = json.loads(bytes(view[at:end]))
            sizes = [int(n) for n in head["sizes"]]
            part, status, message = str(head["id"]), str(head["status"]), str(head["message"])
        except Exception:                               # noqa: BLE001 - untrusted bytes
            break
        at = end + 1
        if any(n < 0 for n in sizes) or at + sum(sizes) > len(data):
            break
        blobs = []
        for n in sizes:
            blobs.append(bytes(view[at:at + n]))
            at += n
        out.setdefault(part, (status, message, blobs))
    return out


def _verdict(key: str, answer: tuple[str, str, list[bytes]] | None, why_missing: str) -> str | None:
    """None if the part passed, else the line that says why not. Runs no student code: it decodes
    plain arrays and judges them against labkit's reference here."""
    from labkit import exercises
    if answer is None:
        return why_missing
    status, message, blobs = answer
    if status != "ok":
        return message or status
    if len(blobs) != 2:
        return "the part's answer could not be read"
    try:
        exercises.judge(key, exercises.decode(blobs[0]))
        exercises.judge(key, exercises.decode(blobs[1]), hidden=True)
    except exercises.Mistake as e:
        return str(e)
    except Exception as e:                              # noqa: BLE001 - a malformed observation scores 0
        return f"the part's answer could not be judged ({type(e).__name__})"
    return None


class Grader:
    """Grades submissions of the course's labs: the job folders, the labkit copies, the sandboxes."""

    def __init__(self, labs: dict[str, Lab], *, timeout: float = 30.0, sandboxed: bool = True,
                 limits: sandbox.Limits = sandbox.Limits()):
        if sandboxed and (reason := sandbox.why_unavailable()):
            raise RuntimeError(f"the grader runs students' code only inside a sandbox, and none can be made "
                               f"here: {reason}. Only if you trust every submission, pass --trust-submissions "
                               f"(the same grading without the isolation).")
        self.labs, self.timeout, self.sandboxed, self.limits = labs, timeout, sandboxed, limits
        self.work = Path(tempfile.mkdtemp(prefix="labkit-grading-"))
        self.libs: dict[str, Path] = {}
        self._lock = threading.Lock()
        self._count = 0
        self._uids: dict[int, int] = {}

    def _uid(self, release: bool = False) -> int:
        """A user id for this thread's sandbox, none shared with a sandbox running at the same time."""
        with self._lock:
            mine = threading.get_ident()
            if release:
                return self._uids.pop(mine, 0)
            if mine not in self._uids:
                taken = set(self._uids.values())
                self._uids[mine] = next(u for u in range(sandbox.UID - 1, 1000, -1) if u not in taken)
            return self._uids[mine]

    def close(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)

    def _lib(self, lab: Lab) -> Path:
        with self._lock:
            if lab.name not in self.libs:
                keys = [checked(src)[0] for _, src, _ in lab.checks.values() if checked(src)]
                self.libs[lab.name] = labkit_without(keys, self.work / "labkit" / lab.name)
            return self.libs[lab.name]

    def _parts(self, lab: Lab, cells: list[tuple[str, str]]) -> list[dict]:
        """The parts the runner grades, in the lab's order: check id, exercise key, function, cells."""
        own = {grade_id: i for i, (grade_id, _) in enumerate(cells)}
        parts = []
        for check_id, (exercise, src, _) in lab.checks.items():
            target = checked(src)
            if target is not None and exercise in own:
                parts.append({"id": check_id, "key": target[0], "function": target[1], "own": own[exercise],
                              "cells": needed(cells, own[exercise]), "timeout": self.timeout})
        return parts

    def _job(self, lab: Lab, cells: list[tuple[str, str]], parts: list[dict]) -> Path:
        """A job folder (readable by the sandbox's user) for ``parts`` of one submission."""
        with self._lock:
            self._count += 1
            folder = self.work / f"job{self._count}"
        (folder / "lib").mkdir(parents=True)
        lim = self.limits
        job = {"imports": lab.imports, "cells": [list(c) for c in cells], "parts": parts,
               "limits": {"memory": lim.memory, "cpu_seconds": min(lim.cpu_seconds, int(self.timeout) + 1),
                          "processes": lim.processes, "file_size": lim.file_size}}
        (folder / "job.json").write_text(json.dumps(job), encoding="utf-8")
        shutil.copy(RUNNER, folder / "runner.py")
        for path in (folder, folder / "lib"):
            path.chmod(0o755)
        for path in (folder / "job.json", folder / "runner.py"):
            path.chmod(0o644)
        return folder

    def grade(self, path: Path, root: Path | None = None) -> Graded:
        """One submission, whatever it holds: a Graded record, never an exception."""
        try:
            return self._grade(path, root)
        except Exception as e:                          # noqa: BLE001 - the class survives any notebook
            name = str(path.relative_to(root)) if root else path.name
            return Graded(name, status=f"not graded: {type(e).__name__}: {str(e)[:200]}")

    def _grade(self, path: Path, root: Path | None) -> Graded:
        g, lab, cells = _read(path, self.labs, root)
        if lab is None or not lab.checks:
            return g
        parts = self._parts(lab, cells)
        keys = {part["id"]: part["key"] for part in parts}
        answers, left = {}, parts
        # The runner grades the parts in order. If the whole sandbox dies (a part killed every process,
        # or the sandbox ran out of time), the first part without an answer is the one that was running:
        # it gets the line saying so, and a new sandbox grades the parts after it.
        while left:
            folder = self._job(lab, cells, left)
            budget = 20 + self.timeout * (len(left) + 1)
            try:
                # a part answers within its timeout; startup (imports) gets 30 s more
                result = sandbox.run(folder, [sys.executable, f"{sandbox.JOB}/runner.py"], timeout=budget,
                                     limits=self.limits, lib=self._lib(lab), sandboxed=self.sandboxed,
                                     idle=self.timeout + 30, uid=self._uid())
            finally:
                self._uid(release=True)
                shutil.rmtree(folder, ignore_errors=True)
            got = _frames(result.stdout)
            answers.update({k: v for k, v in got.items() if k in keys and k not in answers})
            left = [part for part in left if part["id"] not in answers]
            if not left:
                break
            if result.timed_out:
                why = "the submission's sandbox stopped answering (or ran out of time) while this part ran"
            elif result.truncated:
                why = "the submission's sandbox wrote more than it may while this part ran"
            elif result.returncode != 0:
                why = f"the submission's sandbox stopped while this part ran (exit status {result.returncode})"
            else:
                why = "the runner finished without answering this part"
            answers[left[0]["id"]] = ("error", why, [])
            g.status = "graded; a sandbox was stopped"
            left = left[1:]
        for check_id, (_, _, points) in lab.checks.items():
            key = keys.get(check_id)
            error = _verdict(key, answers.get(check_id), "not answered") if key else "no exercise cell to check"
            if error == "timeout":                      # the runner stopped this part at its time limit
                error = f"timed out after {self.timeout:g} s"
                g.status = "graded; a part timed out"
            g.checks[check_id] = _score(points, error)
            if error:
                g.errors[check_id] = error[:400]
        return g


def grade_all(paths: list[Path], labs: dict[str, Lab], *, jobs: int = 2, timeout: float = 30.0,
              root: Path | None = None, sandboxed: bool = True, progress=None) -> list[Graded]:
    """Grade every path, ``jobs`` submissions at once, each in its own sandbox; every part within
    ``timeout`` seconds (a hang costs that part only). Results in the order of ``paths``."""
    grader = Grader(labs, timeout=timeout, sandboxed=sandboxed)
    try:
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            futures = [pool.submit(grader.grade, path, root) for path in paths]
            done = []
            for future in futures:
                done.append(future.result())
                if progress:
                    progress(done[-1])
        return done
    finally:
        grader.close()


# --- the grades: CSV, answers, console -------------------------------------------------------------------

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


def printable(text: str) -> str:
    """Text from a submission as it may reach a terminal: control and format characters (escape
    sequences, carriage returns, bidirectional overrides) escaped, ``\\x1b`` -> ``\\x1b`` literally."""
    out = []
    for ch in str(text):
        if unicodedata.category(ch)[0] in "CZ" and ch != " ":
            out.append(ch.encode("unicode_escape").decode("ascii") if ord(ch) < 0x10000 else f"\\U{ord(ch):08x}")
        else:
            out.append(ch)
    return "".join(out)


def spreadsheet_safe(cell) -> str:
    """A CSV cell that a spreadsheet shows as text: one that begins with =, +, -, @, a tab or a carriage
    return gets a leading ' (OWASP, CSV injection); with every cell quoted, that is the whole rule."""
    text = str(cell)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def csv_text(header: list[str], rows: list[list]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_ALL)
    writer.writerows([[spreadsheet_safe(c) for c in row] for row in [header] + rows])
    return buffer.getvalue()


def _fence(text: str) -> str:
    """``text`` as a fenced block that no line of it can close: Markdown and HTML inside stay text."""
    longest = max((len(m) for m in re.findall(r"`+|~+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def _heading(text: str) -> str:
    """A submission's name as heading text: escaped, so it opens nothing."""
    text = printable(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"([\\`*_{}\[\]#|~])", r"\\\1", text)


def answers_text(graded: list[Graded], labs: dict[str, Lab]) -> str:
    lines = ["# Written answers, to grade by hand, and why checks lost points", "",
             "Each answer and each message is quoted as the student's notebook gave it (a block of text, "
             "not rendered).", ""]
    for g in graded:
        if not g.answers and not g.errors:
            continue
        lines += [f"## {_heading(g.submission)} ({g.lab})", ""]
        for answer_id, text in g.answers.items():
            pts = labs[g.lab].answers.get(answer_id, 0)
            kind = " (code)" if answer_id in labs[g.lab].code_answers else ""
            lines += [f"### {answer_id}{kind} ({pts:g} points)" if pts else f"### {answer_id}{kind} (not graded)", "",
                      _fence(text.strip()) if text.strip() else "(empty)", ""]
        if g.errors:
            lines += ["### Checks that lost points", "",
                      _fence("\n".join(f"{part_of(c)} {printable(e)}" for c, e in g.errors.items())), ""]
    return "\n".join(lines) + "\n"


def write_answers(path: Path, graded: list[Graded], labs: dict[str, Lab]) -> None:
    _atomic(path, answers_text(graded, labs))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("submissions", type=Path)
    parser.add_argument("--out", type=Path, default=Path("grades.csv"))
    parser.add_argument("--jobs", type=int, default=max(1, min(os.cpu_count() or 1, 8)))
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per exercise")
    parser.add_argument("--trust-submissions", action="store_true",
                        help="grade without the sandbox (only where bubblewrap cannot run, and only for code you trust)")
    args = parser.parse_args(argv)
    if not args.submissions.is_dir():
        parser.error(f"{args.submissions} is not a folder of submitted notebooks")
    if not args.trust_submissions and (reason := sandbox.why_unavailable()):
        print(f"grade.py: not grading: the grader runs students' code only inside a sandbox, and none can be "
              f"made here: {reason}. Only if you trust every submission, pass --trust-submissions.", file=sys.stderr)
        return 2
    labs = course_labs()
    warm_up(labs)
    paths = submissions(args.submissions)
    start = time.monotonic()
    graded = grade_all(paths, labs, jobs=args.jobs, timeout=args.timeout, root=args.submissions,
                       sandboxed=not args.trust_submissions)
    header, rows = table(graded, labs)
    answers = args.out.with_suffix(".answers.md")
    _atomic(args.out, csv_text(header, rows))
    write_answers(answers, graded, labs)
    for g, row in zip(graded, rows):
        print(printable(f"{g.submission}: {row[-3]}/{row[-2]} points from the checks")
              + (f", {row[-1]} by hand" if row[-1] else "")
              + (f" ({printable(g.status)})" if g.status != "graded" else "")
              + "".join(f"\n    {part_of(c)} {printable(e)}" for c, e in g.errors.items()))
    print(f"{len(graded)} submissions graded in {time.monotonic() - start:.1f} s, {args.jobs} at a time"
          f"{' in sandboxes' if not args.trust_submissions else ' WITHOUT a sandbox (--trust-submissions)'}: "
          f"{args.out} (points per part), {answers} (written answers to grade by hand, and why checks lost points)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
